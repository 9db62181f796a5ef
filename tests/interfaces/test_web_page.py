"""`blendin serve`'s web page (interfaces/server/web/): served at /, in a real browser.

The browser tests drive headless Chromium from Debian's packages (`apt-get install chromium`;
.ci/run installs it where it can) with Playwright's Python API, against the real server
(uvicorn in a thread, as `blendin serve` runs it) over the session's real default pair. They
skip, saying why, where Playwright or Chromium is missing or Chromium cannot start.

`BLENDIN_WEB_SCREENSHOT=docs/web_page.png pytest tests/interfaces/test_web_page.py` also saves
the screenshot the README shows. `pytest -s` prints what provenance costs the server per token.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from scripted_model import EOS, ScriptedModel, ScriptedPair
from sse_starlette.sse import AppStatus
from starlette.testclient import TestClient

from blendin_local.engine.generation import TraceEntry
from blendin_local.engine.settings import GenerationSettings
from blendin_local.interfaces.cli import main
from blendin_local.interfaces.cli.serve import stopping_server
from blendin_local.interfaces.server.app import WEB_FILES, create_app
from blendin_local.interfaces.server.responses import Exchange, sse

WEB = Path(__file__).parents[2] / "blendin_local" / "interfaces" / "server" / "web"
QUESTION = "How do I make a cup of tea?"
SHORT = 16  # max tokens of the browser tests' answers: a few seconds each on 2 cores
API_KEY = "s3cret-key"
PLAIN = GenerationSettings(base_prompt="plain", guide_prompt="plain")  # the scripted models have no chat template
HOSTILE = [
    '<img src=x onerror="window.pwned=1">',
    "<script>window.pwned=2</script>",
    "</span><b onmouseover=window.pwned=3>bold</b>",
    "a &amp; b &lt;i&gt; \u202eevil\u202c \U0001f375 \\u0000",
    "\"quoted\" 'single' `back` ${window.pwned=4}",
]


# -- the server ------------------------------------------------------------------------------------


@contextmanager
def serving(app):
    """`app` on a free loopback port by `blendin serve`'s uvicorn server, in a thread; yields its URL."""
    # sse-starlette ends every stream in the process once any uvicorn server in it has been told to
    # exit (a process-wide flag, AppStatus.should_exit, that nothing resets): one server per process
    # for `blendin serve`, but tests before these (and the ones here) stop servers in-process.
    AppStatus.should_exit = False
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = stopping_server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2), app.state.worker)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.handle_exit(signal.SIGTERM, None)
        thread.join(timeout=15)
        sock.close()
        AppStatus.should_exit = False


@pytest.fixture(scope="module")
def server(default_pair):
    # The defaults a page starts from: BlendIn at the paper's gamma, short answers.
    with serving(create_app(default_pair, defaults=GenerationSettings(max_tokens=SHORT))) as url:
        yield url


def scripted_pair() -> ScriptedPair:
    pieces = [EOS, b" word", b"word", b" ", b"\n", b"Q", b"a"]

    def rule(seen):
        return {b" word": 5.0}

    return ScriptedPair(ScriptedModel("base", pieces, rule), ScriptedModel("guide", pieces, rule))


def stream(url: str, body: dict, headers: dict | None = None) -> list[dict]:
    """A streamed chat answer's chunks, parsed."""
    chunks = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


# -- without a browser -------------------------------------------------------------------------------


def test_the_page_is_served_with_a_strict_content_security_policy():
    with TestClient(create_app(scripted_pair()), base_url="http://127.0.0.1") as c:
        for path, (name, media_type) in WEB_FILES.items():
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == media_type
            assert r.content == (WEB / name).read_bytes()
            policy = r.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "script-src 'self'" in policy
            assert "connect-src 'self'" in policy and "unsafe" not in policy
            assert r.headers["x-content-type-options"] == "nosniff"
        # The page is open; the API behind it keeps its key.
    with TestClient(create_app(scripted_pair(), api_key=API_KEY), base_url="http://127.0.0.1") as c:
        assert c.get("/").status_code == 200
        assert c.get("/v1/models").status_code == 401


def test_the_page_loads_nothing_from_elsewhere_and_writes_no_markup():
    page = (WEB / "index.html").read_text()
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith("/") and not url.startswith("//"), url
    for name in ("index.html", "app.js", "style.css"):
        text = (WEB / name).read_text()
        assert not re.search(r"https?://|@import|url\(", text), name
    script = (WEB / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_no_web_serves_no_page():
    with TestClient(create_app(scripted_pair(), web=False), base_url="http://127.0.0.1") as c:
        for path in WEB_FILES:
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert c.get("/health").status_code == 200


def test_serve_has_a_no_web_option(capsys):
    main(["serve", "--help"])
    assert "--no-web" in capsys.readouterr().out


@pytest.mark.models
def test_a_traced_stream_says_who_decided_each_piece(server):
    body = {
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": QUESTION}],
        "gamma": 1.01,
        "alpha": 0.5,
    }
    traced = stream(server, {**body, "trace": True})
    plain = stream(server, body)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in traced if c["choices"])
    assert text == "".join(c["choices"][0]["delta"].get("content", "") for c in plain if c["choices"])
    pieces = [p for c in traced for p in c.get("blendin", {}).get("pieces", [])]
    assert len(pieces) == traced[-1]["usage"]["completion_tokens"] == 8
    for p in pieces:  # gamma 1.01: the guide is blended in at every token
        assert p["source"] == "blend" and p["alpha"] == 0.5 and 0 <= p["base_top_p"] <= 1
        assert isinstance(p["guide_top"], str) and p["guide_rank"] >= 0
    assert [c for c in plain if "blendin" in c] == [plain[-1]]  # untraced: the stats only, at the end


@pytest.mark.models
def test_what_provenance_costs_the_server_per_token(server):
    """Bytes: the same greedy answer streamed with and without "trace". Time: the server's own
    work per token (chunk, JSON, the extra event), on a scripted pair whose models cost nothing,
    so that the server's part is not lost in the models' noise; the median of 5 runs of 400 tokens."""
    body = {"stream": True, "max_tokens": 16, "messages": [{"role": "user", "content": QUESTION}]}
    sizes, tokens = {}, {}
    for trace in (False, True):
        with httpx.stream("POST", f"{server}/v1/chat/completions", json={**body, "trace": trace}, timeout=300) as r:
            raw = r.read()
        sizes[trace] = len(raw)
        last = [line for line in raw.decode().splitlines() if line.startswith("data: {")][-1]
        tokens[trace] = json.loads(last[6:])["usage"]["completion_tokens"]
    assert tokens[False] == tokens[True]  # greedy: the same answer
    per_token = {trace: size / tokens[trace] for trace, size in sizes.items()}

    app = create_app(scripted_pair(), defaults=PLAIN, max_tokens_limit=None)
    scripted = {
        "stream": True,
        "max_tokens": 400,
        "gamma": 1.01,
        "messages": [{"role": "user", "content": "Q"}],
    }
    seconds = {False: [], True: []}
    with serving(app) as url:
        for _ in range(5):
            for trace in (False, True):
                start = time.perf_counter()
                chunks = stream(url, {**scripted, "trace": trace})
                seconds[trace].append((time.perf_counter() - start) / 400)
                assert chunks[-1]["usage"]["completion_tokens"] == 400
    median = {trace: statistics.median(s) for trace, s in seconds.items()}

    # The chunk alone, as the stream builds it for one blended token.
    entry = TraceEntry(" tea", "blend", 0.3125, 0.5, 2, " tea")
    exchange = Exchange("chat", "blendin:x->y", GenerationSettings(), False)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        sse(exchange.chunk(" tea", pieces=[entry]))
    traced_chunk = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        sse(exchange.chunk(" tea"))
    plain_chunk = (time.perf_counter() - start) / n
    print(
        f"\nprovenance per token: {per_token[False]:.0f} -> {per_token[True]:.0f} bytes"
        f" (default pair, blendin gamma 0.4, {tokens[True]} tokens: {sizes[False]} -> {sizes[True]} bytes);"
        f" server time per token {1e6 * median[False]:.0f} -> {1e6 * median[True]:.0f} us (scripted pair, 400 tokens);"
        f" one chunk {1e6 * plain_chunk:.1f} -> {1e6 * traced_chunk:.1f} us"
    )
    assert per_token[True] > per_token[False]


# -- in a browser ----------------------------------------------------------------------------------


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[test]'")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium (.ci/run does it where it can)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        except Exception as e:
            pytest.skip(f"Chromium ({path}) does not start here: {str(e).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, server):
    """One tab, shared by the tests below in order (a conversation that goes on)."""
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    page = context.new_page()
    page.goto(server + "/")
    page.evaluate("localStorage.clear()")
    page.reload()
    ready(page)
    yield page
    context.close()


def ready(page) -> None:
    """The page has read the model card (its defaults are in the controls)."""
    # Selectors rather than wait_for_function: the page's Content-Security-Policy forbids the eval it uses.
    page.wait_for_selector("#model:not(:empty)", timeout=20_000)


def set_control(page, selector: str, value) -> None:
    if isinstance(value, bool):
        page.set_checked(selector, value)
    elif page.get_attribute(selector, "type") == "range":
        page.eval_on_selector(
            selector,
            "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); }",
            str(value),
        )
    elif page.eval_on_selector(selector, "e => e.tagName") == "SELECT":
        page.select_option(selector, value)
    else:
        page.fill(selector, str(value))


def ask(page, question: str, wait: bool = True, **controls) -> None:
    for name, value in controls.items():
        set_control(page, "#" + name.replace("_", "-"), value)
    page.fill("#question", question)
    page.press("#question", "Enter")
    if wait:
        answered(page)


def answered(page, timeout: float = 180_000) -> None:
    page.wait_for_selector("#send:enabled", timeout=timeout)


def last_answer_sources(page) -> list[str]:
    return page.eval_on_selector_all(
        ".message.assistant:last-child .piece", "spans => spans.map(s => s.className.replace('piece src-', ''))"
    )


@pytest.mark.models
def test_a_blended_conversation_shows_each_source(page):
    # BlendIn at gamma 1.01 consults the guide at every token: every piece is a blend. The guide's
    # own words come from Nudging (at gamma 1.01 every piece would be the guide's): together,
    # the conversation shows all three sources.
    ask(page, QUESTION, method="nudging", gamma=0.4, alpha_auto=True, max_tokens=SHORT)
    nudged = last_answer_sources(page)
    assert "guide" in nudged and "base" in nudged, (nudged, page.inner_text("#chat"), page.text_content("#live"))
    ask(page, "And how do I make coffee?", method="blendin", gamma=1.01, alpha_auto=False, alpha=0.5)
    blended = last_answer_sources(page)
    assert blended and set(blended) == {"blend"}, blended
    # Hovering a piece shows its probability, the base's top-1 probability, alpha, the guide's top
    # choice and the likeliest tokens of the blend it was chosen from.
    piece = page.locator(".message.assistant:last-child .piece").first
    piece.hover()
    info = page.text_content("#piece-info")
    assert "base top-1 p 0." in info and "alpha 0.50" in info and "guide's top choice" in info, info
    assert re.search(r": blend, p [01]\.\d{3}, ", info) and ', likeliest "' in info, info
    live = page.text_content("#live")
    assert re.search(r"\d+ tokens · [\d.]+ tokens/s · intervention rate 100\.0%", live), live
    assert page.is_visible("#warning") and "20%" in page.text_content("#warning")
    shot = os.environ.get("BLENDIN_WEB_SCREENSHOT")
    if shot:  # the README's picture: a piece of the blended answer hovered
        page.locator(".message.assistant:last-child .piece").nth(4).hover()
        page.screenshot(path=shot)
    # Keyboard: the answer takes focus, and arrow keys walk its pieces.
    page.focus(".message.assistant:last-child .body")
    page.keyboard.press("End")
    current = page.locator(".message.assistant:last-child .piece.current")
    assert page.text_content("#piece-info").startswith(json.dumps(current.text_content(), ensure_ascii=False))


@pytest.mark.models
def test_the_base_method_blends_nothing(page):
    ask(page, "What is the capital of France?", method="base", max_tokens=12)
    sources = last_answer_sources(page)
    assert sources and set(sources) == {"base"}, sources
    assert page.is_hidden("#warning") and "intervention rate" not in page.text_content("#live")


@pytest.mark.models
def test_the_conversation_survives_a_reload(page):
    if page.locator(".message").count() < 2:
        ask(page, "Hi!", method="base", max_tokens=4)
    before = page.eval_on_selector_all(".message", "ms => ms.map(m => [m.className, m.innerText])")
    classes = page.eval_on_selector_all(".piece", "ps => ps.map(p => p.className)")
    page.reload()
    ready(page)
    assert page.eval_on_selector_all(".message", "ms => ms.map(m => [m.className, m.innerText])") == before
    assert page.eval_on_selector_all(".piece", "ps => ps.map(p => p.className)") == classes
    # The export is the shape of chat's /save.
    with page.expect_download() as download:
        page.click("#export")
    saved = json.loads(Path(download.value.path()).read_text())
    assert set(saved) == {"base", "guide", "settings", "messages", "turns"}
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"] * (len(before) // 2)
    assert saved["turns"][0]["question"] == saved["messages"][0]["content"] and saved["turns"][0]["n_tokens"] > 0
    assert saved["settings"]["method"] == page.input_value("#method") and "gamma" in saved["settings"]


def test_stop_ends_the_stream_and_the_generation(browser):
    """Stop ends the answer on the page and the generation on the server. The pair writes a word
    every 50 ms and never ends by itself: a real model's greedy answer can end before the click
    (where it ends depends on the kernels' rounding, docs/design.md), and the test with it."""

    def slowly(seen):
        time.sleep(0.05)
        return {b" word": 5.0}

    pair = ScriptedPair(
        ScriptedModel("base", [EOS, b" word", b"word"], slowly),
        ScriptedModel("guide", [EOS, b" word", b"word"], slowly),
    )
    with serving(create_app(pair, defaults=PLAIN, max_tokens_limit=None)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        ready(page)
        ask(page, "Write a long story about a dragon.", wait=False, method="blendin", gamma=1.01, max_tokens=400)
        page.wait_for_selector(".message.assistant:last-child .piece", timeout=30_000)
        page.click("#stop")
        answered(page, timeout=10_000)
        assert page.text_content(".message.assistant:last-child .note") == "stopped"
        n = page.locator(".message.assistant:last-child .piece").count()
        deadline = time.monotonic() + 10
        while True:
            health = httpx.get(f"{url}/health").json()
            if not health["running"] and health["cancelled"] == 1:
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert 0 < health["last_cancelled_tokens"] < 400
        time.sleep(0.5)
        assert page.locator(".message.assistant:last-child .piece").count() == n  # nothing more arrived
        context.close()


@pytest.mark.models
def test_new_chat_starts_over(page):
    page.click("#new-chat")
    assert page.locator(".message").count() == 0
    page.reload()
    ready(page)
    assert page.locator(".message").count() == 0


def answering(body: str):
    def fulfil(route, request=None):
        route.fulfill(status=200, body=body, headers={"content-type": "text/event-stream"})

    return fulfil


def test_hostile_text_is_shown_as_text(browser):
    """Model and user text reach the page only as text: a response crafted to carry markup (in the
    answer and in the provenance) and a question that is markup both show literally, and nothing
    runs. The API is replaced by the browser here, so any bytes can be sent."""
    with serving(create_app(scripted_pair())) as url:
        context = browser.new_context()
        page = context.new_page()
        for text in HOSTILE:
            chunks = [
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": text},
                            "logprobs": {
                                "content": [
                                    {
                                        "token": text,
                                        "logprob": -0.5,
                                        "top_logprobs": [
                                            {"token": text, "logprob": -0.5},
                                            {"token": {"x": text}, "logprob": "-1"},
                                        ],
                                    }
                                ]
                            },
                        }
                    ],
                    "blendin": {"pieces": [{"source": "blend", "base_top_p": 0.1, "alpha": 0.5, "guide_top": text}]},
                },
                {"choices": [{"index": 0, "delta": {"content": text}}], "blendin": {"pieces": [{"source": text}]}},
                {
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "blendin": {"stop_reason": text, "method": text},
                },
            ]
            body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            page.unroute("**/v1/chat/completions")
            page.route("**/v1/chat/completions", answering(body))
            page.goto(url + "/")
            ready(page)
            page.click("#new-chat")
            ask(page, text)
            assert page.text_content(".message.user .body") == text
            assert page.text_content(".message.assistant .body") == text + text
            title = page.get_attribute(".message.assistant .piece", "title")
            assert title.startswith("blend, p 0.607, ") and title.endswith(
                json.dumps(text, ensure_ascii=False) + ", likeliest " + json.dumps(text, ensure_ascii=False) + " 0.607"
            )
            assert page.locator("#chat img, #chat script, #chat b").count() == 0
            assert page.evaluate("window.pwned") is None
        context.close()


def test_a_wrong_api_key_brings_the_key_prompt(browser):
    with serving(create_app(scripted_pair(), api_key=API_KEY)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-dialog[open]")
        assert "needs an API key" in page.text_content("#key-reason")
        page.fill("#key-input", "wrong-key")
        page.press("#key-input", "Enter")
        page.locator("#key-reason", has_text="refused").wait_for()
        assert page.is_visible("#key-dialog")
        page.fill("#key-input", API_KEY)
        page.click("#key-ok")
        ready(page)
        assert page.is_hidden("#key-dialog")
        assert page.evaluate("sessionStorage.getItem('blendin.apiKey')") == API_KEY
        page.reload()  # kept for the session: no prompt again
        ready(page)
        assert page.is_hidden("#key-dialog")
        # A key that stops working (the server restarted with another) brings the prompt back.
        page.evaluate("sessionStorage.setItem('blendin.apiKey', 'stale')")
        page.reload()
        page.wait_for_selector("#key-dialog[open]")
        assert "refused" in page.text_content("#key-reason")
        context.close()


def test_a_phone_sized_screen_shows_everything(browser):
    with serving(create_app(scripted_pair())) as url:
        context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
        page = context.new_page()
        page.goto(url + "/")
        ready(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width}px wide on a 375px screen"
        for selector in ("#question", "#send", "#stop", "#method", "#new-chat"):
            box = page.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, selector
        context.close()
