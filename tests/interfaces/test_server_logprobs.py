"""Log-probabilities in `blendin serve`'s answers, in OpenAI's two shapes, in-process on scripted
models (tests/interfaces/test_server.py asks the real pair once)."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_model import EOS, ScriptedModel, ScriptedPair
from sse_starlette.sse import AppStatus
from starlette.testclient import TestClient

from blendin_local.engine.generation import GenerationSettings
from blendin_local.interfaces.server.app import create_app

PIECES = [EOS, b"Q", b" word", b"word", b" ", b".", b"\n", b"a", b"Question:", b"\xc3", b"\xa9"]
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "Say it"}]


def three_words_then_a_new_turn(seen):
    """Three words (each against weaker choices), a character split over two tokens, then a new
    turn after two line ends, each a token: the server's new-turn stop ("\nQuestion:") cuts the
    text after the first, so the second line end is the stop's, not the text's."""
    words = seen.count(b" word")
    if words < 3:
        return {b" word": 2.0, b"a": 1.5, b".": 0.5, EOS: 0.1}
    if b"\xc3" not in seen:
        return {b"\xc3": 3.0}
    if seen[-1] == b"\xc3":
        return {b"\xa9": 3.0}
    if seen[-1] != b"\n" or seen[-2] != b"\n":
        return {b"\n": 3.0, EOS: 1.0}
    return {b"Question:": 5.0}


@pytest.fixture(scope="module")
def client():
    pair = ScriptedPair(
        ScriptedModel("base", PIECES, three_words_then_a_new_turn),
        ScriptedModel("guide", PIECES, three_words_then_a_new_turn),
    )
    defaults = GenerationSettings(base_prompt="plain", guide_prompt="plain", max_tokens=16)
    # sse-starlette ends every stream once any server in the process was told to exit (a process-wide
    # flag that nothing resets); tests before these stop servers in-process.
    AppStatus.should_exit = False
    with TestClient(create_app(pair, defaults=defaults), base_url="http://127.0.0.1") as c:
        yield c


def post(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def stream(client, path, body) -> list[dict]:
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        data = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def check_entry(entry: dict, k: int) -> None:
    assert entry["logprob"] <= 0.0 and bytes(entry["bytes"]).decode("utf-8", "backslashreplace") == entry["token"]
    top = entry["top_logprobs"]
    assert len(top) == k
    assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
    assert sum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-6


@pytest.mark.parametrize("method", ["base", "blendin", "guide", "nudging"])
def test_chat_logprobs_cover_the_answers_text_and_nothing_else(client, method):
    body = post(client, CHAT, {"messages": MESSAGES, "method": method, "logprobs": True, "top_logprobs": 2})
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None
    for entry in content:
        check_entry(entry, 2)
    text = choice["message"]["content"]
    assert text == "word word wordé\n"
    # the answer's tokens, byte for byte (its leading space is not the text's); not the new turn's
    assert b"".join(bytes(e["bytes"]) for e in content).lstrip() == text.encode()
    assert body["blendin"]["stop_reason"] == "stop" and body["usage"]["completion_tokens"] == len(content) + 2
    if method == "base":  # greedy: the chosen word is the likeliest, against "a" and "."
        assert [t["token"] for t in content[0]["top_logprobs"]] == [" word", "a"]
        assert content[0]["logprob"] == content[0]["top_logprobs"][0]["logprob"]


def test_a_character_split_over_two_tokens_is_two_entries_with_exact_bytes(client):
    content = post(client, CHAT, {"messages": MESSAGES, "logprobs": True})["choices"][0]["logprobs"]["content"]
    assert [e["bytes"] for e in content[-3:-1]] == [[0xC3], [0xA9]]
    assert [e["token"] for e in content[-3:-1]] == ["\\xc3", "\\xa9"]
    assert all(e["top_logprobs"] == [] for e in content)  # top_logprobs 0: the chosen token's only


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_a_stream_carries_the_same_logprobs_chunk_by_chunk(client, path):
    body = {"messages": MESSAGES} if path == CHAT else {"prompt": "Say it"}
    ask = {"logprobs": True, "top_logprobs": 3} if path == CHAT else {"logprobs": 3}
    whole = post(client, path, {**body, **ask})["choices"][0]["logprobs"]
    chunks = stream(client, path, {**body, **ask})
    parts = [c["choices"][0]["logprobs"] for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
    assert all("blendin" not in c or "pieces" not in c["blendin"] for c in chunks)  # not traced
    if path == CHAT:
        assert [e for p in parts for e in p["content"]] == whole["content"]
    else:
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            assert [x for p in parts for x in p[key]] == whole[key]


def test_a_traced_stream_with_logprobs_carries_both(client):
    chunks = stream(client, CHAT, {"messages": MESSAGES, "trace": True, "logprobs": True})
    texts = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    for c in texts:
        assert len(c["blendin"]["pieces"]) == len(c["choices"][0]["logprobs"]["content"]) >= 1


def test_completions_logprobs_in_openais_legacy_shape(client):
    prompt = "Say it"
    choice = post(client, COMPLETIONS, {"prompt": prompt, "logprobs": 2})["choices"][0]
    lp = choice["logprobs"]
    n = len(lp["tokens"])
    assert n == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) > 0
    assert "".join(lp["tokens"]).lstrip() == "word word wordé\n".replace("é", "\\xc3\\xa9")
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert top[token] == logprob and len(top) in (2, 3)  # the two likeliest, and the chosen one
    assert lp["text_offset"][0] == len(prompt)  # OpenAI's: counted from the prompt's start
    assert lp["text_offset"][1] == len(prompt) + len(lp["tokens"][0])
    assert lp["text_offset"] == sorted(lp["text_offset"])


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_no_logprobs_unless_asked(client, path):
    body = {"messages": MESSAGES} if path == CHAT else {"prompt": "Say it", "logprobs": False}
    assert post(client, path, body)["choices"][0]["logprobs"] is None
    assert all(c["choices"][0]["logprobs"] is None for c in stream(client, path, body) if c["choices"])


@pytest.mark.parametrize(
    "path, extra, param, needle",
    [
        (CHAT, {"top_logprobs": 2}, "top_logprobs", "needs logprobs: true"),
        (CHAT, {"logprobs": True, "top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
        (CHAT, {"logprobs": True, "top_logprobs": -1}, "top_logprobs", "greater than or equal to 0"),
        (COMPLETIONS, {"logprobs": 21}, "logprobs", "less than or equal to 20"),
        (COMPLETIONS, {"logprobs": 10**30}, "logprobs", "less than or equal to 20"),
        (COMPLETIONS, {"logprobs": "five"}, "logprobs", "invalid logprobs"),
        (CHAT, {"logprobs": [True]}, "logprobs", "invalid logprobs"),
    ],
)
def test_bad_logprobs_requests_are_400_naming_the_field(client, path, extra, param, needle):
    body = {"messages": MESSAGES} if path == CHAT else {"prompt": "Say it"}
    r = client.post(path, json={**body, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and needle in error["message"], error


# -- any answer, any stop strings: a stream's tokens are the whole answer's, and every one of
# them wrote into the text ---------------------------------------------------------------------

SCRIPT_PIECES = [b"a", b"b", b"ab", b" ", b"\n", b"\n\n", b"Question:", b"\xc3", b"\xa9", b"Q"]
# What an answer is made of: pieces, and a character split over two tokens (never cut in two: no
# stop string holds it, and the answers end well before max_tokens).
SCRIPT_PARTS = st.sampled_from([[p] for p in SCRIPT_PIECES if p not in (b"\xc3", b"\xa9")] + [[b"\xc3", b"\xa9"]])


def scripted_app(script: list[bytes]):
    def rule(seen):
        # The prompt is the one token "Q" (raw prompts): the answer so far is the rest.
        i = len(seen) - 1
        return {script[i]: 5.0} if i < len(script) else {EOS: 5.0}

    pieces = [EOS, *SCRIPT_PIECES]
    pair = ScriptedPair(ScriptedModel("base", pieces, rule), ScriptedModel("guide", pieces, rule))
    defaults = GenerationSettings(base_prompt="raw", guide_prompt="raw", max_tokens=32)
    return create_app(pair, defaults=defaults)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(SCRIPT_PARTS, max_size=12),
    stops=st.lists(st.text(alphabet="ab \nQuestion:", min_size=1, max_size=4), max_size=3),
    method=st.sampled_from(["base", "blendin", "guide"]),
)
def test_any_answer_and_stops_give_the_same_tokens_streamed_or_whole(parts, stops, method):
    script = [piece for part in parts for piece in part]
    AppStatus.should_exit = False
    with TestClient(scripted_app(script), base_url="http://127.0.0.1") as c:
        body = {"messages": [{"role": "user", "content": "Q"}], "stop": stops, "method": method, "logprobs": True}
        whole = post(c, CHAT, body)["choices"][0]
        chunks = stream(c, CHAT, body)
    content = whole["logprobs"]["content"]
    streamed = [
        e
        for ch in chunks
        if ch["choices"] and ch["choices"][0]["logprobs"]
        for e in ch["choices"][0]["logprobs"]["content"]
    ]
    assert streamed == content
    assert (
        "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
        == whole["message"]["content"]
    )
    # Each token wrote into the text: the text is a prefix of their bytes, and holds more than all
    # but the last one's (the last may also have started a stop string).
    written = [bytes(e["bytes"]) for e in content]
    text = whole["message"]["content"].encode()
    assert b"".join(written).startswith(text)
    assert not written or len(b"".join(written[:-1])) < len(text)
