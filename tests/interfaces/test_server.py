"""`blendin serve`, end to end: the real command in a subprocess on a free loopback port, the
default pair, and the official `openai` client (plus httpx and a raw http.client SSE reader).

A subprocess rather than uvicorn in a thread: it tests the command users run (option parsing,
binding, startup and shutdown), a server failure cannot take pytest down with it, and the
session's `default_pair` stays free for the in-process tests (a pair is not thread-safe).
"""

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import restore_sigint

pytestmark = pytest.mark.models

HOST = "127.0.0.1"
QUEUE_SIZE = 4
QUESTION = "What is the capital of France?"
CORS_ORIGIN = "http://localhost:3000"
# The base continuing a count, with no stop at new turns: hundreds of tokens if left alone.
LONG = dict(
    prompt="1, 2, 3, 4, 5, 6,",
    max_tokens=900,
    extra_body={"method": "base", "base_prompt": "raw", "stop_at_new_turn": False},
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = tmp / "server.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "blendin_local",
                "serve",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "-c",
                "1024",
                "--queue-size",
                str(QUEUE_SIZE),
                "--log-level",
                "warning",
                "--cors-origin",
                CORS_ORIGIN,
                *args,
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=restore_sigint,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not start within {timeout}s:\n{self.log.read_text()}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
    log = srv.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def client(server):
    # No retries: a 503 must reach the test as it is.
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def chat(client, model_id, content=QUESTION, **kw):
    kw.setdefault("max_tokens", 24)
    return client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}], **kw)


def test_models_lists_the_pair_and_accepts_its_aliases(client, model_id):
    models = client.models.list().data
    assert len(models) == 1
    assert model_id == "blendin:Smollm2 135M 8k Lc100K Mix1 Ep2 Q4_1->Gemma 3 270m Q4_K_M"  # general.name and quant
    assert client.models.retrieve(model_id).id == model_id
    assert client.models.retrieve("default").id == model_id
    extra = models[0].model_extra["blendin"]
    assert extra["base"] == "Gemma 3 270m Q4_K_M" and extra["n_ctx"] == 1024


def test_chat_completion_with_usage_and_blending_stats(client, model_id):
    r = chat(client, model_id)
    assert r.object == "chat.completion" and r.model == model_id
    choice = r.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    stats = r.model_extra["blendin"]
    assert stats["method"] == "blendin" and stats["n_interventions"] <= r.usage.completion_tokens
    assert 0 <= stats["intervention_rate"] <= 1 and stats["max_tokens_clamped"] is False


def test_a_multi_turn_chat(client, model_id):
    r = client.chat.completions.create(
        model="default",
        max_tokens=24,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "And of Italy?"}]},
        ],
    )
    assert r.choices[0].message.content.strip()


def test_chat_logprobs_on_the_real_pair(client, model_id):
    r = chat(client, model_id, logprobs=True, top_logprobs=3, max_tokens=16)
    content = r.choices[0].logprobs.content
    assert content and len(content) <= r.usage.completion_tokens
    # The answer's tokens: all of its text, and the last one may hold the start of a stop string
    text = r.choices[0].message.content.encode()
    written = [bytes(e.bytes) for e in content]
    assert b"".join(written).lstrip().startswith(text) and len(b"".join(written[:-1]).lstrip()) < len(text)
    for e in content:  # greedy BlendIn: the piece is the likeliest of the blend it was chosen from
        assert len(e.top_logprobs) == 3 and e.logprob == pytest.approx(e.top_logprobs[0].logprob)
    assert chat(client, model_id, max_tokens=4).choices[0].logprobs is None


def test_completion(client, model_id):
    r = client.completions.create(model=model_id, prompt="Name a colour.", max_tokens=16)
    assert r.object == "text_completion" and r.choices[0].text.strip()
    assert r.usage.completion_tokens <= 16


def test_streamed_chat_equals_the_unstreamed_answer(client, model_id):
    whole = chat(client, model_id).choices[0].message.content
    chunks = list(chat(client, model_id, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 2  # token by token
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].model_extra["blendin"]["method"] == "blendin"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # OpenAI's include_usage chunk


def test_streamed_completion(client, model_id):
    whole = client.completions.create(model=model_id, prompt=QUESTION, max_tokens=16).choices[0].text
    pieces = list(client.completions.create(model=model_id, prompt=QUESTION, max_tokens=16, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_strings(client, model_id):
    whole = chat(client, model_id).choices[0].message.content
    assert "Paris" in whole
    for stop in ("Paris", ["xyz", "Paris"]):
        r = chat(client, model_id, stop=stop)
        assert r.choices[0].message.content == whole[: whole.index("Paris")]
        assert r.choices[0].finish_reason == "stop" and r.model_extra["blendin"]["stop_reason"] == "stop"


def test_seeds_make_sampling_reproducible(client, model_id):
    def sample(seed):
        return (
            chat(
                client,
                model_id,
                "Write a poem about the sea.",
                temperature=1.5,
                seed=seed,
                max_tokens=16,
                extra_body={"method": "base"},
            )
            .choices[0]
            .message.content
        )

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (8, 9, 10))


def test_extra_body_fields_choose_the_method(client, model_id):
    base = chat(client, model_id, extra_body={"method": "base"}).model_extra["blendin"]
    assert base["method"] == "base" and base["n_interventions"] == 0
    guide = chat(client, model_id, max_tokens=8, extra_body={"method": "guide"}).model_extra["blendin"]
    assert guide["method"] == "guide" and guide["intervention_rate"] == 1.0
    always = chat(client, model_id, max_tokens=8, extra_body={"gamma": 1.01, "alpha": 0.5}).model_extra["blendin"]
    assert always["intervention_rate"] == 1.0 and always["alpha"] == 0.5 and always["alpha_mean"] == 0.5
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, model_id, extra_body={"gamma": 3})
    assert "invalid gamma" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, model_id, extra_body={"method": "magic"})
    assert "invalid method" in e.value.message


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, "gpt-4")
    assert "the model 'gpt-4' does not exist" in e.value.message and e.value.code == "model_not_found"


def test_huge_max_tokens_is_clamped_to_the_context_and_says_so(client, model_id):
    r = chat(client, model_id, max_tokens=10**9)
    stats = r.model_extra["blendin"]
    assert stats["max_tokens_clamped"] is True
    assert stats["max_tokens"] == 1024 - max(stats["prompt_tokens_base"], stats["prompt_tokens_guide"])
    assert r.choices[0].message.content


def test_bad_requests_get_400_with_a_message(server):
    url = f"{server.url}/v1/chat/completions"
    cases = [
        (dict(content=b"{not json", headers={"content-type": "application/json"}), "not valid JSON"),
        (dict(content=b"[1, 2]", headers={"content-type": "application/json"}), "must be a JSON object"),
        (dict(json={"model": "default"}), "invalid messages: Field required"),
        (dict(json={"messages": "hi"}), "invalid messages"),
        (dict(json={"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}), "invalid temperature"),
        (dict(json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}), "invalid max_tokens"),
        (dict(json={"messages": [{"role": "user", "content": "hi"}], "n": 3}), "n=3 is not supported"),
        (dict(json={"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}), "needs logprobs: true"),
        (dict(json={"messages": [{"role": "tool", "content": "hi"}]}), "role 'tool' is not supported"),
        (dict(json={"messages": [{"role": "user", "content": "word " * 1500}]}), "context holds 1024"),
    ]
    for request, needle in cases:
        r = httpx.post(url, timeout=60, **request)
        assert r.status_code in (400, 422), (request, r.text)
        assert needle in r.json()["error"]["message"], (request, r.text)
    r = httpx.get(f"{server.url}/v1/nothing-here", timeout=10)
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]["message"]


def read_sse(response: http.client.HTTPResponse, limit: int = 2000) -> list[str]:
    """The data fields of a server-sent event stream, read line by line (bounded)."""
    events = []
    for _ in range(limit):
        line = response.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\r\n")
        if line.startswith("data:"):
            events.append(line[5:].strip())
            if events[-1] == "[DONE]":
                break
    return events


def test_raw_http_client_reads_the_sse_stream(server):
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        body = json.dumps(
            {"model": "default", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24, "stream": True}
        )
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type").startswith("text/event-stream")
        events = read_sse(response)
    finally:
        conn.close()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "Paris" in text
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["usage"]["completion_tokens"] > 0 and "intervention_rate" in last["blendin"]


def wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server, client, model_id):
    before = server.health()["cancelled"]
    stream = client.completions.create(model=model_id, stream=True, **LONG)
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].text)
        if received >= 3:
            break
    stream.close()
    health = wait_for(lambda: (h := server.health())["cancelled"] > before and not h["running"] and h, timeout=60)
    assert health, server.health()
    assert 3 <= health["last_cancelled_tokens"] < 900
    # The server is free again at once.
    assert chat(client, model_id, max_tokens=4).choices[0].message.content is not None


def test_twenty_concurrent_requests_are_answered_or_cleanly_refused(server, client, model_id):
    n = 20
    barrier = threading.Barrier(n, timeout=60)
    outcomes: list = [None] * n

    def one(i):
        barrier.wait()
        try:
            r = chat(client, model_id, f"Name a fruit, number {i}.", max_tokens=12, extra_body={"method": "base"})
            outcomes[i] = ("ok", r.choices[0].message.content)
        except openai.APIStatusError as e:
            outcomes[i] = (e.status_code, e.message, e.response.headers.get("retry-after"))
        except Exception as e:  # anything else is a failure of the test
            outcomes[i] = ("error", repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    answered = [o for o in outcomes if o[0] == "ok"]
    refused = [o for o in outcomes if o[0] == 503]
    assert len(answered) + len(refused) == n, outcomes
    assert 1 <= len(answered) <= n and all(isinstance(text, str) for _, text in answered)
    assert refused, "with 20 requests at once and a queue of 4, some must be refused"
    assert all("the server is busy" in message and "retry later" in message for _, message, _ in refused)
    assert all(retry_after == "1" for _, _, retry_after in refused)
    # Still alive and idle afterwards.
    health = wait_for(lambda: (h := server.health())["waiting"] == 0 and not h["running"] and h, timeout=60)
    assert health and health["rejected"] >= len(refused)
    assert chat(client, model_id, max_tokens=4).choices[0].message.content is not None


def test_a_client_that_gives_up_on_a_whole_answer_stops_its_generation(server, client, model_id):
    before = server.health()["cancelled"]
    impatient = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model=model_id, **LONG)
    health = wait_for(lambda: (h := server.health())["cancelled"] > before and not h["running"] and h, timeout=60)
    assert health and health["last_cancelled_tokens"] < 900, server.health()


def test_browsers_may_call_from_the_allowed_origin_only(server):
    preflight = httpx.options(
        f"{server.url}/v1/chat/completions",
        timeout=10,
        headers={
            "Origin": CORS_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == CORS_ORIGIN
    other = httpx.get(f"{server.url}/v1/models", timeout=10, headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_a_port_in_use_is_one_error_line(server):
    proc = subprocess.run(
        [sys.executable, "-m", "blendin_local", "serve", "--port", str(server.port)], capture_output=True, timeout=120
    )
    err = proc.stderr.decode().strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1, err
    assert f"cannot listen on 127.0.0.1:{server.port}" in err
