"""Issue 12's reproducers against the real `blendin serve` and the default pair: the limits,
the API key, the Host check and a SIGTERM during a long generation (test_server.py's Server)."""

import json
import signal
import socket
import threading
import time

import httpx
import openai
import pytest
from test_server import HOST, LONG, Server, wait_for

pytestmark = pytest.mark.models

API_KEY = "k3y-for-tests"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
UI_ORIGIN = "http://ui.example:3000"
TIME_LIMIT_S = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # No token cap beyond the context, so that the time limit is what ends a long answer.
    srv = Server(
        tmp_path_factory.mktemp("limits"),
        args=(
            "-t",
            "1",
            "--api-key",
            API_KEY,
            "--max-tokens-limit",
            "0",
            "--request-timeout",
            str(TIME_LIMIT_S),
            "--cors-origin",
            UI_ORIGIN,
        ),
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
    log = srv.log.read_text()
    assert code == 0 and "Traceback" not in log, log


def post(server, path: str, body: dict, headers=AUTH, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=json.dumps(body).encode(), headers=headers, timeout=timeout)


def raw_request(port: int, head: str, timeout: float = 5) -> bytes:
    """Send a request head (no body) and read what comes back until the server closes."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_a_10_mb_body_is_refused_before_it_is_sent(server):
    start = time.monotonic()
    reply = raw_request(
        server.port,
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        "Content-Length: 10000000\r\n\r\n",
    )
    assert time.monotonic() - start < 2
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower(), reply[:500]
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_10_mb_body_of_spaces_sent_whole_gets_a_fast_413(server):
    start = time.monotonic()
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b" " * 10_000_000, headers=AUTH, timeout=30)
    assert r.status_code == 413 and time.monotonic() - start < 3, r.text
    assert server.health()["running"] is False


@pytest.mark.parametrize(
    "fmt",
    [
        "{prompt:{prompt.__class__.__mro__}}",
        "{prompt:{system.__class__.__base__.__subclasses__}}",
        "{prompt!x}",
        "{prompt:d}",
        "{prompt:>10000000}",
        "{prompt",
        "{prompt}}x}",
        "}{prompt}",
    ],
)
def test_prompt_formats_are_400_naming_the_field(server, fmt):
    for field in ("base_prompt", "guide_prompt"):
        r = post(server, "/v1/completions", {"prompt": "Hi", field: fmt})
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == field, r.text
        assert "<class" not in error["message"] and "0x" not in error["message"], r.text


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi \ud800"}]}, "messages[0].content"),
        ("/v1/completions", {"prompt": "Hi \ud800"}, "prompt"),
        ("/v1/completions", {"prompt": "Hi", "stop": ["\ud800"]}, "stop[0]"),
    ],
)
def test_a_lone_surrogate_is_400_naming_the_field(server, path, body, param):
    r = post(server, path, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_a_prompt_of_spaces_too_long_for_the_context_is_refused_before_tokenizing(server):
    start = time.monotonic()
    r = post(server, "/v1/completions", {"prompt": " " * 1_000_000 + "Hi"})
    assert r.status_code == 400 and "context holds" in r.json()["error"]["message"], r.text
    assert time.monotonic() - start < 2


def test_max_tokens_1e30_is_clamped_and_the_time_limit_ends_the_answer(server):
    start = time.monotonic()
    r = post(server, "/v1/completions", {"prompt": LONG["prompt"], "max_tokens": 1e30, **LONG["extra_body"]})
    took = time.monotonic() - start
    assert r.status_code == 200, r.text
    stats = r.json()["blendin"]
    assert stats["max_tokens_clamped"] is True and stats["max_tokens"] == 1024 - stats["prompt_tokens_base"]
    assert stats["max_tokens_limit"] is None and stats["time_limit_s"] == TIME_LIMIT_S
    assert stats["stop_reason"] == "time" and r.json()["choices"][0]["finish_reason"] == "length"
    assert TIME_LIMIT_S <= took < TIME_LIMIT_S + 2.5 and r.json()["usage"]["completion_tokens"] > 0
    assert wait_for(lambda: not server.health()["running"], timeout=5)


def test_v1_needs_the_api_key(server):
    without = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as e:
        without.models.list()
    assert e.value.code == "invalid_api_key"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    assert client.completions.create(model="default", prompt="Hi", max_tokens=2).usage.completion_tokens <= 2
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_a_rebound_host_name_is_refused_and_a_cors_origins_host_is_not(server):
    r = httpx.get(f"{server.url}/v1/models", headers={**AUTH, "Host": f"evil.example:{server.port}"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed", r.text
    r = httpx.get(f"{server.url}/v1/models", headers={**AUTH, "Host": f"ui.example:{server.port}"}, timeout=10)
    assert r.status_code == 200, r.text


def test_docs_are_off(server):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 404


def test_sigterm_during_a_long_generation_exits_within_5_seconds(tmp_path):
    srv = Server(tmp_path, args=("-t", "1"))
    outcomes: dict[str, object] = {}
    try:
        srv.wait_ready()
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=60)
        streaming = threading.Event()

        def stream_long():
            received = 0
            try:
                for chunk in client.completions.create(model="default", stream=True, **LONG):
                    received += bool(chunk.choices and chunk.choices[0].text)
                    if received == 3:
                        streaming.set()
                outcomes["stream"] = ("ended", received)
            except Exception as e:  # the connection may end without [DONE]: that is an answer too
                outcomes["stream"] = (type(e).__name__, received)

        def wait_in_queue():
            try:
                client.completions.create(model="default", **LONG)
                outcomes["queued"] = "answered"
            except openai.APIStatusError as e:
                outcomes["queued"] = e.status_code
            except Exception as e:
                outcomes["queued"] = type(e).__name__

        threads = [threading.Thread(target=stream_long)]
        threads[0].start()
        assert streaming.wait(60), srv.log.read_text()
        threads.append(threading.Thread(target=wait_in_queue))
        threads[1].start()
        assert wait_for(lambda: srv.health()["waiting"] == 1, timeout=10), srv.health()
        start = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        srv.proc.send_signal(signal.SIGTERM)  # the second SIGTERM, which used to change nothing
        srv.proc.wait(timeout=10)
        took = time.monotonic() - start
        for t in threads:
            t.join(timeout=10)
    finally:
        code = srv.stop()
    log = srv.log.read_text()
    assert took < 5 and code == 0, (took, code, log)
    assert "Traceback" not in log and "did not stop in time" not in log, log
    assert outcomes["stream"][1] < 900 and outcomes["queued"] != "answered", outcomes
