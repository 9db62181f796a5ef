"""`blendin serve`'s app against hostile requests (issue 12), in-process on scripted models.

Generated JSON bodies (random types, lone surrogates, NULs, huge numbers, prompt formats that
tried to read Python internals) must each get an answer or a 4xx in OpenAI's error shape, never
a 500, within seconds, and leave the worker idle. Then one regression test per reproducer: the
body limit, the token and time limits, the API key, the Host check, the docs switch, a stop
that ends the running generation, and the serve options' checks.
"""

import json
import signal
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scripted_model import EOS, ScriptedModel, ScriptedPair
from starlette.testclient import TestClient

from blendin_local.engine.generation import GenerationSettings
from blendin_local.engine.methods import METHODS
from blendin_local.interfaces.cli import main
from blendin_local.interfaces.cli.serve import (
    MAX_REQUEST_BYTES,
    MAX_TOKENS_LIMIT,
    REQUEST_TIMEOUT_S,
    implied_hosts,
    stopping_server,
)
from blendin_local.interfaces.server.app import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TOKENS_LIMIT,
    DEFAULT_REQUEST_TIMEOUT_S,
    LOOPBACK_HOSTS,
    create_app,
    host_name,
)

PIECES = [EOS, b"Q", b" word", b"word", b" ", b".", b"\n", b"a", b"b", b"Question:", b"{", b"}", b"\x00"]
LIMIT = 24  # --max-tokens-limit of the app under test
TIME_LIMIT_S = 3.0  # the longest any one request may take here
# A scripted model's prompt form: it has no chat template.
DEFAULTS = GenerationSettings(base_prompt="plain", guide_prompt="plain")
URL = "http://127.0.0.1"
JSON = {"content-type": "application/json"}
# Were an option's check missing, the command would stop here, before any model loads.
UNSERVABLE = ["--host", "256.256.256.256"]
ISSUE_FORMATS = [
    "{prompt:{prompt.__class__.__mro__}}",
    "{prompt:{system.__class__.__base__.__subclasses__}}",
    "{prompt:{prompt.__class__}}",
    "{prompt!x}",
    "{prompt:d}",
    "{prompt:>10000000}",
    "{prompt",
    "{prompt}}x}",
    "}{prompt}",
    "}{",
    "{0}",
    "{}",
    "{prompt[0]}",
    "{prompt.upper}",
]


def writes_words(seen):
    return {b" word": 5.0}


def scripted_pair(rule=writes_words) -> ScriptedPair:
    return ScriptedPair(ScriptedModel("base", PIECES, rule), ScriptedModel("guide", PIECES, rule))


def slow_pair(seconds_per_token: float) -> ScriptedPair:
    def slowly(seen):
        time.sleep(seconds_per_token)
        return {b" word": 5.0}

    return scripted_pair(slowly)


def served(pair=None, **options) -> TestClient:
    options = {"defaults": DEFAULTS, "max_tokens_limit": LIMIT, "request_timeout": TIME_LIMIT_S, **options}
    return TestClient(create_app(pair or scripted_pair(), **options), base_url=URL)


@pytest.fixture(scope="module")
def client():
    with served() as c:
        yield c


def post(client, path: str, body, headers=None):
    """`body` as JSON with \\u escapes (lone surrogates included) and NaN/Infinity as Python writes them."""
    return client.post(path, content=json.dumps(body).encode(), headers={**JSON, **(headers or {})})


def wait_idle(client, timeout: float = 2.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = client.get("/health").json()
        if (not health["running"] and health["waiting"] == 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.01)


def assert_error(r, status: int, param: str | None = None, needle: str = "") -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert error["param"] == param and needle in error["message"], error
    return error


# -- generated bodies -----------------------------------------------------------------------

SURROGATE = st.characters(categories=["Cs"])
HOSTILE_CHARS = st.one_of(st.characters(), SURROGATE, st.sampled_from(["\x00", "{", "}", ":", "!", ".", " "]))
STRINGS = st.text(alphabet=HOSTILE_CHARS, max_size=24)
NUMBERS = st.one_of(
    st.sampled_from(
        [
            1e30,
            -1e30,
            1e308,
            float("inf"),
            float("-inf"),
            float("nan"),
            10**30,
            -(10**30),
            2**63,
            2**64,
            5e-324,
            -0.0,
            0,
            -1,
            1,
            0.5,
            1.01,
            256,
            257,
        ]
    ),
    st.builds(pow, st.just(10), st.just(4000)),  # 4001 digits: Python's int parsing stops at 4300
    st.integers(),
    st.floats(),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
ANY_JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4), max_leaves=12
)
FRAGMENTS = [
    "{",
    "}",
    "{{",
    "}}",
    "prompt",
    "system",
    ":",
    "!r",
    "!x",
    ".__class__",
    "[0]",
    ">10000000",
    "{prompt}",
    "{system}",
    " ",
    "Q: ",
    "\x00",
    "\ud800",
]
FORMATS = st.one_of(
    st.sampled_from([*ISSUE_FORMATS, "plain", "raw", "chat", "{system}\nQ: {prompt}\nA:"]),
    st.lists(st.sampled_from(FRAGMENTS), max_size=10).map("".join),
    STRINGS,
)
SAMPLING_FIELDS = {
    "model": st.one_of(st.sampled_from(["default", "blendin", "gpt-4"]), ANY_JSON),
    "stream": st.one_of(st.booleans(), ANY_JSON),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), ANY_JSON),
    "max_tokens": st.one_of(NUMBERS, ANY_JSON),
    "max_completion_tokens": NUMBERS,
    "temperature": NUMBERS,
    "top_p": NUMBERS,
    "stop": st.one_of(STRINGS, st.lists(STRINGS, max_size=20), ANY_JSON),
    "seed": NUMBERS,
    "n": NUMBERS,
    "method": st.one_of(st.sampled_from(METHODS), ANY_JSON),
    "gamma": NUMBERS,
    "alpha": st.one_of(st.just("auto"), NUMBERS, ANY_JSON),
    "base_prompt": st.one_of(FORMATS, ANY_JSON),
    "guide_prompt": st.one_of(FORMATS, ANY_JSON),
    "top_k": NUMBERS,
    "min_p": NUMBERS,
    "nudging_chunk": NUMBERS,
    "stop_at_new_turn": st.one_of(st.booleans(), ANY_JSON),
    "user": STRINGS,
    "logprobs": st.one_of(st.booleans(), NUMBERS, ANY_JSON),
    "top_logprobs": st.one_of(NUMBERS, ANY_JSON),
}
CONTENT = st.one_of(
    STRINGS,
    st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.one_of(STRINGS, ANY_JSON)}),
        max_size=3,
    ),
    ANY_JSON,
)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.one_of(st.sampled_from(["user", "system", "assistant", "developer", "tool"]), STRINGS),
            "content": CONTENT,
        }
    ),
    ANY_JSON,
)
CHAT_BODIES = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(MESSAGE, min_size=1, max_size=4), ANY_JSON)}, optional=SAMPLING_FIELDS
)
COMPLETION_BODIES = st.fixed_dictionaries(
    {"prompt": st.one_of(STRINGS, st.lists(STRINGS, max_size=3), ANY_JSON)},
    optional={**SAMPLING_FIELDS, "echo": ANY_JSON, "suffix": ANY_JSON, "best_of": NUMBERS},
)
ENDPOINTS = st.sampled_from(["/v1/chat/completions", "/v1/completions"])
# Bodies that pass validation, so that generation itself meets odd text (NULs, braces, control
# characters), odd but valid formats and settings at their bounds.
TEXT = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(["\x00", "{", "}", " ", "\n"])), max_size=40)
VALID_FORMATS = st.one_of(
    st.sampled_from(["plain", "raw"]),
    st.builds(
        lambda before, after: before + "{prompt}" + after,
        *[
            st.lists(
                st.sampled_from(["{system}", "{prompt}", "{{", "}}", "Q: ", "\x00", " ", "\n", "x"]), max_size=4
            ).map("".join)
        ]
        * 2,
    ),
)
VALID_FIELDS = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "max_tokens": st.one_of(st.integers(1, 64), st.sampled_from([1e30, 10**30, 2**63, float(LIMIT)])),
    "temperature": st.floats(0, 100),
    "top_p": st.floats(0, 1, exclude_min=True),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=16)),
    "seed": st.integers(0, 2**63 - 1),
    "method": st.sampled_from([m for m in METHODS if m != "proxy"]),
    "gamma": st.floats(0, 1.01),
    "alpha": st.one_of(st.just("auto"), st.floats(0, 1)),
    "base_prompt": VALID_FORMATS,
    "guide_prompt": VALID_FORMATS,
    "top_k": st.one_of(st.integers(0, 20), st.just(10**30)),
    "min_p": st.floats(0, 1),
    "nudging_chunk": st.integers(1, 256),
    "stop_at_new_turn": st.booleans(),
    "logprobs": st.one_of(st.booleans(), st.integers(0, 20)),
    "top_logprobs": st.integers(0, 20),
}
TURNS = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": TEXT}), max_size=3)
VALID_CHAT_BODIES = st.fixed_dictionaries(
    {
        "messages": st.builds(
            lambda system, turns, last: system + turns + [{"role": "user", "content": last}],
            st.lists(st.fixed_dictionaries({"role": st.just("system"), "content": TEXT}), max_size=1),
            TURNS,
            TEXT,
        )
    },
    optional=VALID_FIELDS,
)
VALID_COMPLETION_BODIES = st.fixed_dictionaries({"prompt": TEXT}, optional=VALID_FIELDS)
HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_answer(client, path: str, data: bytes) -> None:
    start = time.monotonic()
    r = client.post(path, content=data, headers=JSON)
    took = time.monotonic() - start
    assert r.status_code < 500, (r.status_code, r.text[:500])
    event(f"status {r.status_code}")
    assert took < TIME_LIMIT_S + 1, took
    if r.status_code != 200:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"], error
        assert "Traceback" not in error["message"] and "object at 0x" not in error["message"], error
    health = wait_idle(client)
    assert not health["running"] and health["waiting"] == 0, health
    assert health["failed"] == 0, health  # no engine fault either (those are 500s in a stream)


@HYPOTHESIS
@given(body=CHAT_BODIES)
def test_generated_chat_bodies_get_an_answer_or_a_4xx(client, body):
    check_answer(client, "/v1/chat/completions", json.dumps(body).encode())


@HYPOTHESIS
@given(body=COMPLETION_BODIES)
def test_generated_completion_bodies_get_an_answer_or_a_4xx(client, body):
    check_answer(client, "/v1/completions", json.dumps(body).encode())


@HYPOTHESIS
@given(
    path_and_body=st.one_of(
        st.tuples(st.just("/v1/chat/completions"), VALID_CHAT_BODIES),
        st.tuples(st.just("/v1/completions"), VALID_COMPLETION_BODIES),
    )
)
def test_generated_valid_bodies_get_an_answer_or_a_4xx(client, path_and_body):
    path, body = path_and_body
    check_answer(client, path, json.dumps(body).encode())


@settings(HYPOTHESIS, max_examples=150)
@given(path=ENDPOINTS, data=st.one_of(ANY_JSON.map(lambda value: json.dumps(value).encode()), st.binary(max_size=64)))
def test_any_json_or_bytes_get_a_4xx(client, path, data):
    check_answer(client, path, data)


# -- the reproducers ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ISSUE_FORMATS)
@pytest.mark.parametrize("field", ["base_prompt", "guide_prompt"])
def test_prompt_formats_that_read_internals_or_do_not_parse_are_400_naming_the_field(client, fmt, field):
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/completions", {"prompt": "Hi"}),
    ):
        error = assert_error(post(client, path, {**body, field: fmt}), 400, field, f"invalid {field}")
        assert "<class" not in error["message"] and "0x" not in error["message"], error


def test_a_format_that_repeats_the_prompt_is_measured_before_it_is_built(client):
    start = time.monotonic()
    r = post(client, "/v1/completions", {"prompt": "word " * 100, "base_prompt": "{prompt}" * 100_000})
    assert_error(r, 400, "prompt", "context holds")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("size", [10_000_000, DEFAULT_MAX_REQUEST_BYTES + 1])
def test_a_body_over_the_limit_is_413_before_it_is_parsed(client, size):
    start = time.monotonic()
    r = client.post("/v1/chat/completions", content=b" " * size, headers=JSON)
    assert_error(r, 413, None, "--max-request-bytes")
    assert r.json()["error"]["code"] == "request_too_large" and time.monotonic() - start < 1


def test_a_chunked_body_over_the_limit_is_413(client):
    sent = []

    def chunks():
        for _ in range(100):
            sent.append(1)
            yield b" " * 100_000

    r = client.post("/v1/completions", content=chunks(), headers=JSON)
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_error(r, 413, None, "larger than this server takes")


def test_a_body_under_the_limit_is_read_whole():
    with served(max_request_bytes=64) as c:
        body = {"prompt": "Hi", "max_tokens": 2}
        assert len(json.dumps(body)) <= 64
        assert post(c, "/v1/completions", body).status_code == 200
        assert_error(post(c, "/v1/completions", {**body, "user": "x" * 64}), 413)


def test_a_prompt_longer_than_the_context_could_hold_is_refused_before_tokenizing(client):
    start = time.monotonic()
    r = post(client, "/v1/completions", {"prompt": " " * 900_000 + "Hi"})
    assert_error(r, 400, "prompt", "context holds")
    r = post(client, "/v1/chat/completions", {"messages": [{"role": "user", "content": "word" * 200_000}]})
    assert_error(r, 400, "messages", "context holds")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi \ud800"}]}, "messages[0].content"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "system", "content": "Be \udfff"}, {"role": "user", "content": "Hi"}]},
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udc80"}]}]},
            "messages[0].content[0].text",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "us\ud800er", "content": "Hi"}]}, "messages[0].role"),
        ("/v1/completions", {"prompt": "Hi \ud800"}, "prompt"),
        ("/v1/completions", {"prompt": ["Hi \ud800"]}, "prompt[0]"),
        ("/v1/completions", {"prompt": "Hi", "stop": "\ud800"}, "stop"),
        ("/v1/completions", {"prompt": "Hi", "stop": ["ok", "x\udbff"]}, "stop[1]"),
        ("/v1/completions", {"prompt": "Hi", "base_prompt": "{prompt}\ud800"}, "base_prompt"),
        ("/v1/completions", {"prompt": "Hi", "model": "\ud800"}, "model"),
        ("/v1/completions", {"prompt": "Hi", "user": "\ud800"}, "user"),  # a field the server ignores
        ("/v1/completions", {"prompt": "Hi", "stream_options": {"\ud800": True}}, "stream_options.\\ud800"),
    ],
)
def test_a_lone_surrogate_anywhere_is_400_naming_the_field(client, path, body, param):
    assert_error(post(client, path, body), 400, param, "lone surrogate")


def test_max_tokens_beyond_the_limit_is_capped_and_reported(client):
    for max_tokens in (1e30, 10**30, LIMIT + 1):
        r = post(client, "/v1/completions", {"prompt": "Hi", "max_tokens": max_tokens})
        assert r.status_code == 200, r.text
        stats = r.json()["blendin"]
        assert stats["max_tokens"] == LIMIT and stats["max_tokens_limit"] == LIMIT
        assert stats["max_tokens_clamped"] is True and stats["max_tokens_requested"] == int(max_tokens)
        assert r.json()["usage"]["completion_tokens"] == LIMIT and r.json()["choices"][0]["finish_reason"] == "length"
    stats = post(client, "/v1/completions", {"prompt": "Hi", "max_tokens": 4}).json()["blendin"]
    assert stats["max_tokens"] == 4 and stats["max_tokens_clamped"] is False


def test_without_a_limit_max_tokens_is_clamped_to_the_context_only():
    with served(max_tokens_limit=None) as c:
        r = post(c, "/v1/completions", {"prompt": "Hi", "max_tokens": 1e30, "method": "base"})
        stats = r.json()["blendin"]
        assert stats["max_tokens_limit"] is None and stats["max_tokens_clamped"] is True
        assert stats["max_tokens"] == 512 - stats["prompt_tokens_base"]


@pytest.mark.parametrize("stream", [False, True])
def test_the_time_limit_ends_a_generation_at_the_next_token_and_says_so(stream):
    with served(slow_pair(0.02), request_timeout=0.5, max_tokens_limit=None) as c:
        start = time.monotonic()
        r = post(c, "/v1/completions", {"prompt": "Hi", "max_tokens": 10_000, "method": "base", "stream": stream})
        took = time.monotonic() - start
        assert r.status_code == 200 and 0.5 <= took < 1.0, (took, r.text[:300])
        if stream:
            chunks = [
                json.loads(line[5:])
                for line in r.text.splitlines()
                if line.startswith("data:") and line != "data: [DONE]"
            ]
            last = chunks[-1]
        else:
            last = r.json()
        assert last["choices"][0]["finish_reason"] == "length"
        stats = last["blendin"]
        assert (
            stats["stop_reason"] == "time"
            and stats["time_limit_s"] == 0.5
            and 5 < last["usage"]["completion_tokens"] < 30
        )
        health = wait_idle(c)
        assert health["timed_out"] == 1 and health["served"] == 1 and not health["running"]


@contextmanager
def uvicorn_serving(app):
    """`app` served over a real socket by `blendin serve`'s uvicorn server, in a thread; yields
    (base URL, stop), where stop() does what SIGTERM does to `blendin serve` and waits for the end.

    A stop with requests in flight is tested here rather than through TestClient: leaving a
    TestClient stops its event loop while other threads' responses are still being read, and the
    client can then wait for ever (seen on CI) - a harness race, not the server's behaviour."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = stopping_server(config, app.state.worker)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def stop() -> None:
        server.handle_exit(signal.SIGTERM, None)
        thread.join(timeout=15)
        assert not thread.is_alive(), "the server did not stop"

    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        yield base, stop
    finally:
        if thread.is_alive():
            stop()
        sock.close()


def test_a_stop_ends_the_running_generation_and_refuses_the_waiting_ones():
    app = create_app(slow_pair(0.05), defaults=DEFAULTS, request_timeout=None, max_tokens_limit=None)
    answers: dict[int, tuple[int, str]] = {}
    with uvicorn_serving(app) as (base, stop):

        def ask(i):
            body = {"prompt": "Hi", "max_tokens": 100_000, "method": "base"}
            r = httpx.post(f"{base}/v1/completions", json=body, timeout=30)
            answers[i] = (r.status_code, r.json()["error"]["message"] if r.status_code != 200 else "")

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while not (httpx.get(f"{base}/health").json()["waiting"] == 2 or time.monotonic() > deadline):
            time.sleep(0.05)
        assert httpx.get(f"{base}/health").json()["running"]
        start = time.monotonic()
        stop()
        took = time.monotonic() - start
        for t in threads:
            t.join(timeout=10)
    assert took < 2
    assert sorted(status for status, _ in answers.values()) == [503, 503, 503], answers
    assert all("stopping" in message for _, message in answers.values())


def test_a_stop_waits_for_a_worker_stuck_in_one_call_only_so_long():
    app = create_app(slow_pair(3.0), defaults=DEFAULTS, request_timeout=None)
    worker = app.state.worker
    with uvicorn_serving(app) as (base, stop):
        threading.Thread(
            target=lambda: httpx.post(f"{base}/v1/completions", json={"prompt": "Hi", "method": "base"}, timeout=30),
            daemon=True,
        ).start()
        deadline = time.monotonic() + 10
        while not (worker.running or time.monotonic() > deadline):
            time.sleep(0.01)
        start = time.monotonic()
        stop()
        took = time.monotonic() - start
    assert took < 5 and worker.alive  # blendin serve then leaves the models open
    deadline = time.monotonic() + 10
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.alive  # the call returned, the worker saw the stop


def test_an_api_key_is_required_on_v1_only():
    with served(api_key="s3cret-key") as c:
        body = {"prompt": "Hi", "max_tokens": 2}
        assert_error(post(c, "/v1/completions", body), 401, None, "no API key")
        assert_error(post(c, "/v1/completions", body, {"Authorization": "Bearer wrong"}), 401, None, "wrong API key")
        assert_error(post(c, "/v1/completions", body, {"Authorization": "Basic s3cret-key"}), 401)
        r = c.get("/v1/models")
        assert_error(r, 401)
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["error"]["code"] == "invalid_api_key"
        assert post(c, "/v1/completions", body, {"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "bearer s3cret-key"}).status_code == 200
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("127.0.0.1:8000", True),
        ("localhost", True),
        ("LOCALHOST:1234", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.", False),
        ("[::1]x", False),
        ("", False),
    ],
)
def test_the_host_header_must_name_loopback(client, host, allowed):
    r = client.get("/v1/models", headers={"Host": host})
    if allowed:
        assert r.status_code == 200, r.text
    else:
        assert_error(r, 403, None, "is not a name of this server")


def test_hosts_implied_by_host_and_cors_origins_are_allowed():
    names = implied_hosts("::1", ["http://ui.example:3000", "*", "https://[fe80::1]"])
    assert names == ["[::1]", "ui.example", "[fe80::1]"]
    assert host_name("UI.Example:8000") == "ui.example"
    with served(allowed_hosts=[*LOOPBACK_HOSTS, *names], cors_origins=["http://ui.example:3000"]) as c:
        assert c.get("/v1/models", headers={"Host": "ui.example:8000"}).status_code == 200
        assert c.get("/v1/models", headers={"Host": "other.example:8000"}).status_code == 403
    with served(allowed_hosts=None) as c:  # bound beyond loopback: names cannot be known
        assert c.get("/v1/models", headers={"Host": "anything.example"}).status_code == 200


def test_docs_are_off_unless_asked_for(client):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert_error(client.get(path), 404, None, "no such endpoint")
    with served(docs=True) as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 200, path


def test_the_description_documents_every_error_and_no_422():
    """A client generated from /openapi.json learns the errors it can get, in OpenAI's shape, and
    not FastAPI's 422, which this server never sends (an invalid request is a 400)."""
    for options, with_key in (({}, False), ({"api_key": "k"}, True)):
        with served(docs=True, **options) as c:
            schema = c.get("/openapi.json").json()
        assert "422" not in json.dumps(schema) and "HTTPValidationError" not in json.dumps(schema)
        errors = {
            path: {method: sorted(int(s) for s in op["responses"] if s != "200") for method, op in ops.items()}
            for path, ops in schema["paths"].items()
        }
        key = [401] if with_key else []
        host = [403]  # the default server checks the Host header
        assert errors["/v1/chat/completions"]["post"] == sorted([400, 404, 413, 500, 503, *key, *host])
        assert errors["/v1/completions"]["post"] == sorted([400, 404, 413, 500, 503, *key, *host])
        assert errors["/v1/models/{name}"]["get"] == sorted([404, *key, *host])
        assert errors["/health"]["get"] == host
        described = schema["paths"]["/v1/completions"]["post"]["responses"]["400"]["content"]["application/json"]
        assert described["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_a_405_says_which_methods_are_allowed(client):
    for method, path, allowed in (("DELETE", "/v1/models", "GET"), ("GET", "/v1/completions", "POST")):
        r = client.request(method, path)
        assert_error(r, 405, None, f"{method} is not allowed")
        assert r.headers["allow"] == allowed


def _request_properties() -> dict:
    with served(docs=True) as c:
        schema = c.get("/openapi.json").json()
    return schema["components"]["schemas"]["CompletionRequest"]["properties"]


BOUNDS = [
    (name, keyword, value)
    for name, field in _request_properties().items()
    for keyword, value in field.items()
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
]


@pytest.mark.parametrize("name,keyword,bound", BOUNDS)
def test_every_documented_bound_is_the_servers(client, name, keyword, bound):
    """Just beyond a bound the description gives is a 400 naming the field; at an inclusive
    bound the request is answered."""
    step = 1 if isinstance(bound, int) and not isinstance(bound, bool) else max(abs(bound) * 1e-9, 1e-12)
    beyond = bound - step if keyword in ("minimum", "exclusiveMinimum") else bound + step
    if keyword.startswith("exclusive"):
        beyond = bound
    body = {"prompt": "Q", "max_tokens": 2, name: beyond}
    assert_error(post(client, "/v1/completions", body), 400, name)
    if not keyword.startswith("exclusive"):
        answered = post(client, "/v1/completions", {"prompt": "Q", "max_tokens": 2, name: bound})
        assert answered.status_code == 200, answered.text
    wait_idle(client)


def test_the_documented_stop_limits_are_the_servers(client):
    stop = _request_properties()["stop"]
    assert (stop["maxItems"], stop["maxLength"]) == (16, 256)
    assert_error(post(client, "/v1/completions", {"prompt": "Q", "stop": ["x"] * 17}), 400, "stop")
    assert_error(post(client, "/v1/completions", {"prompt": "Q", "stop": "x" * 257}), 400, "stop")
    assert post(client, "/v1/completions", {"prompt": "Q", "max_tokens": 2, "stop": ["x"] * 16}).status_code == 200
    wait_idle(client)


def test_the_cli_defaults_are_the_servers():
    assert (MAX_REQUEST_BYTES, MAX_TOKENS_LIMIT, REQUEST_TIMEOUT_S) == (
        DEFAULT_MAX_REQUEST_BYTES,
        DEFAULT_MAX_TOKENS_LIMIT,
        DEFAULT_REQUEST_TIMEOUT_S,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--max-request-bytes", "0"],
        ["--max-request-bytes", "lots"],
        ["--max-tokens-limit", "-1"],
        ["--request-timeout", "-1"],
        ["--request-timeout", "nan"],
        ["--request-timeout", "inf"],
        ["--api-key", ""],
        ["--api-key", "two words"],
        ["--api-key", "ключ"],
    ],
)
def test_bad_serve_options_are_one_line_and_exit_2(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(["serve", *args, *UNSERVABLE])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("blendin: error:"), err


def test_a_bad_api_key_from_the_environment_is_refused_too(capsys, monkeypatch):
    monkeypatch.setenv("BLENDIN_API_KEY", "has space")
    with pytest.raises(SystemExit) as e:
        main(["serve", *UNSERVABLE])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--api-key" in err, err


# -- the penalties: OpenAI's presence_penalty and frequency_penalty, llama.cpp's repeat_* ----------


USER_Q = {"role": "user", "content": "Q"}


def word_or_full_stop(seen):
    """Writes " word" at 0.73 or "." at 0.27: a presence penalty of 2 makes a second " word" less
    likely than a first "."."""
    return {b" word": 1.0, b".": 0.0}


@pytest.mark.parametrize(
    "penalty",
    [{"presence_penalty": 2}, {"frequency_penalty": 2}, {"repeat_penalty": 8, "repeat_last_n": -1}],
    ids=lambda p: next(iter(p)),
)
def test_the_penalty_fields_reach_the_settings(penalty):
    with served(scripted_pair(word_or_full_stop)) as c:
        body = {"prompt": "Q", "max_tokens": 2}
        plain = post(c, "/v1/completions", body)
        penalised = post(c, "/v1/completions", {**body, **penalty})
    assert plain.json()["choices"][0]["text"] == "word word"  # the answer's leading space is left out
    assert penalised.json()["choices"][0]["text"] == "word."


@pytest.mark.parametrize(
    "field, value",
    [
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("repeat_penalty", 0),
        ("repeat_penalty", 1e9),
        ("repeat_last_n", -2),
        ("presence_penalty", float("nan")),
        ("frequency_penalty", float("inf")),
    ],
)
def test_a_penalty_out_of_range_is_a_400_naming_it(client, field, value):
    for path, start in (("/v1/completions", {"prompt": "Q"}), ("/v1/chat/completions", {"messages": [USER_Q]})):
        assert_error(post(client, path, {**start, field: value}), 400, field, field)
    assert wait_idle(client)["running"] is False


# -- speculative decoding: a request field like any other ------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"speculative": -1}, "speculative"),
        ({"speculative": 65}, "speculative"),
        ({"speculative": 1e9}, "speculative"),
        ({"speculative": 4.5}, "speculative"),
        ({"speculative": 4, "method": "nudging"}, "nudging"),
        ({"speculative": 4, "method": "guide"}, "guide"),
    ],
)
def test_a_bad_speculative_value_is_a_400_naming_it(client, extra, needle):
    for path, start in (("/v1/completions", {"prompt": "Q"}), ("/v1/chat/completions", {"messages": [USER_Q]})):
        assert_error(post(client, path, {**start, **extra}), 400, "speculative", needle)
    assert wait_idle(client)["running"] is False


def test_a_speculative_request_writes_the_same_text_and_reports_its_rounds(client):
    body = {"prompt": "Q", "max_tokens": 6}
    plain = post(client, "/v1/completions", body).json()
    speculative = post(client, "/v1/completions", {**body, "speculative": 3}).json()
    assert speculative["choices"][0]["text"] == plain["choices"][0]["text"]
    stats = speculative["blendin"]["speculation"]
    assert stats["rounds"] >= 1 and 0 <= stats["accepted"] <= stats["drafted"]
    assert "speculation" not in plain["blendin"]
