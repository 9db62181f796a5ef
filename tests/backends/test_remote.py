"""The remote backend against real servers on loopback: llama-cpp-python's `python -m llama_cpp.server`
with the default pair, compared with the local backend; faults (a server killed mid-run, a slow
server, garbage answers); the tokenizer.json and SentencePiece vocabulary sources.

The servers run with --flash_attn true, as the local backend does (llama.cpp's default): without
it Gemma 3's first-token probability here is 0.514 against 0.570 locally. They take text prompts
only, and tokenize the text again; where the engine's tokens are not the tokenizer's own split of
their text (two "\\n" tokens where it writes one "\\n\\n"), the server sees other tokens and may
continue differently. So the texts must be equal up to the first such point, and are compared
in full where none occurs. `pytest -s` prints the measured figures.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import llama_cpp_server
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends.llama import LoadOptions
from blendin_local.backends.registry import resolve_model
from blendin_local.backends.remote import RemoteModel, RemoteSpec
from blendin_local.backends.vocab_sources import open_vocab
from blendin_local.engine.generation import Finished, GenerationSettings
from blendin_local.errors import BlendinError
from blendin_local.pair import BlendPair, assemble_pair

PROMPTS = (
    "How do I make a cup of tea?",
    "What's the capital of France, and why is it famous?",
    "Write a haiku about the sea.",
    "List three fruits that are red.",
    "What is 17 times 23?",
    "Why is the sky blue?",
)
N_CTX = 512
TOKENS = {"base": 12, "guide": 32, "blendin": 12}  # Gemma's 262k rows cost llama-cpp-python ~0.5 s each


def free_ports(n: int) -> list[int]:
    """n distinct free ports: the sockets stay bound until all are picked, so no port comes twice."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def start_server(model: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        llama_cpp_server.command(
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            "--logits_all",
            "true",
            "--flash_attn",
            "true",
            "--n_ctx",
            str(N_CTX),
            "--verbose",
            "false",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_ready(proc: subprocess.Popen, port: int, model: Path, seconds: float = 90.0) -> None:
    """Until the server on `port` answers and serves `model` (not some other process's model)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            import httpx

            answer = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
            served = [m["id"] for m in answer.json()["data"]] if answer.status_code == 200 else None
        except Exception:  # not listening yet, or not answering yet
            served = None
        if served is not None:
            if served != [str(model)]:
                stop(proc)
                raise RuntimeError(f"port {port} serves {served}, not {model}")
            return
        time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"llama_cpp.server on port {port} not ready after {seconds} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def servers():
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    ports = dict(zip(("base", "guide"), free_ports(2), strict=True))
    models = {"base": resolve_model("gemma3-270m"), "guide": resolve_model("smollm2-135m-instruct")}
    procs = {role: start_server(models[role], ports[role]) for role in ports}
    try:
        for role, proc in procs.items():
            wait_ready(proc, ports[role], models[role])
        yield {role: f"http://127.0.0.1:{port}/v1" for role, port in ports.items()}
    finally:
        for proc in procs.values():
            stop(proc)


@pytest.fixture(scope="module")
def local_pair():
    pair = BlendPair.load(options=LoadOptions(n_ctx=N_CTX, n_threads=1))
    yield pair
    pair.close()


def remote_model(url: str, name: str, **kw) -> RemoteModel:
    return RemoteModel(RemoteSpec(url, n_ctx=N_CTX, **kw), open_vocab(resolve_model(name)))


@pytest.fixture(scope="module")
def remote_pair(servers):
    return assemble_pair(
        remote_model(servers["base"], "gemma3-270m"), remote_model(servers["guide"], "smollm2-135m-instruct")
    )


def canonical(model, tokens) -> bool:
    """Whether a server given these tokens' text would tokenize it back to the same tokens."""
    ids = tokens[1:] if model.adds_bos and tokens and tokens[0] == model.bos_id else tokens
    data = b"".join(model.token_bytes(t, special=True) if t in model.control_ids else model.pieces[t] for t in ids)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return model.tokenize(data, add_bos=model.adds_bos, special=True) == list(tokens)


def local_run(pair, prompt: str, settings: GenerationSettings) -> tuple[str, int | None]:
    """(the text, and how many bytes were committed before the first step at which a model was
    asked about a token sequence that its tokenizer would not produce from the text; None: never)."""
    generation = pair.start(prompt, settings)
    committed, safe = 0, None
    for event in generation.steps():
        ctx = generation.ctx
        committed += len(event.entry.piece.encode("utf-8"))
        if safe is None:
            views = []
            if settings.method != "guide":
                views.append((ctx.base.model, ctx.base.tokens))
            if settings.method != "base":
                views.append((ctx.guide.model, ctx.guide._resolve()[0]))  # what the guide is asked about next
            if not all(canonical(model, tokens) for model, tokens in views):
                safe = committed
    return generation.finish().result.text, safe


def divergence(pair, prompt: str, settings: GenerationSettings, remote_trace) -> tuple[int, float, float]:
    """(step, local probability of the local choice, local probability of the remote choice) at
    the first step where the remote run chose another piece, under the method's own distribution."""
    from blendin_local.engine.methods import GuideOnly

    generation = pair.start(prompt, settings)
    events = iter(generation)
    for k, theirs in enumerate(remote_trace):
        ctx = generation.ctx
        if isinstance(generation.method, GuideOnly):
            probs, index = ctx.guide.propose().native, pair.bridge.guide_index
        else:
            probs, index = generation.method.next_token_distribution(ctx).probs, pair.bridge.base_index
        event = next(events)
        if isinstance(event, Finished) or event.entry.piece != theirs.piece:
            ours = float(probs.max())
            token = index.get(theirs.piece.encode("utf-8"))
            return k, ours, float(probs[token]) if token is not None else 0.0
    raise AssertionError("no divergence")


@pytest.mark.models
@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", ["base", "guide", "blendin"])
def test_remote_matches_local(method, local_pair, remote_pair, capsys):
    settings = GenerationSettings(method=method, max_tokens=TOKENS[method])
    equal, explained = 0, []
    started = time.perf_counter()
    for prompt in PROMPTS:
        local, safe = local_run(local_pair, prompt, settings)
        result = remote_pair.generate(prompt, settings)
        if result.text == local:
            equal += 1
            continue
        common = len(os.path.commonprefix([result.text.encode(), local.encode()]))
        if safe is not None and common >= safe:
            explained.append(f"{prompt!r}: re-tokenized text at byte {safe}, differs from byte {common}")
            continue
        # Otherwise only a near tie may differ: the server evaluated another batch schedule (its
        # prompt cache keeps the prefix shared with the previous request), and llama.cpp's CPU
        # kernels round a token in a batch slightly differently from the same token alone.
        step, ours, theirs = divergence(local_pair, prompt, settings, result.trace)
        assert ours - theirs < 0.05, f"{method}: {prompt!r}: step {step}: {ours:.4f} vs {theirs:.4f}, not a near tie"
        explained.append(f"{prompt!r}: near tie at step {step} ({ours:.4f} vs {theirs:.4f})")
    with capsys.disabled():
        print(
            f"\n[remote vs local] {method}: {equal}/{len(PROMPTS)} equal, {TOKENS[method]} tokens, "
            f"{time.perf_counter() - started:.0f} s; explained differences: {explained}"
        )
    assert equal >= len(PROMPTS) // 2


@pytest.mark.models
def test_trigger_probability_is_exact(local_pair, remote_pair):
    """The top-1 probability (BlendIn's trigger) of a remote row is the server's own, exactly, and the
    local model's up to llama.cpp's batch-dependent rounding: the server evaluates the prompt in
    its own batch split (its prompt cache keeps what earlier requests share), and the CPU kernels
    are not batch-invariant. With the repacked kernels that moves the top-1 by under 1e-3; without
    them (cpu_kernels.py's fallback) by up to 0.07 on Gemma 3, measured."""
    import numpy as np

    from blendin_local.engine.blending import softmax
    from blendin_local.engine.prompts import Message, prompt_tokens

    for model_local, model_remote, style in (
        (local_pair.base, remote_pair.base, "plain"),
        (local_pair.guide, remote_pair.guide, "chat"),
    ):
        tokens = prompt_tokens(model_local, [Message("user", "Why is the sky blue?")], style)
        model_local.begin_request(tokens)
        p_local = softmax(model_local.logits(tokens)[0])
        p_remote = softmax(model_remote.logits(tokens)[0])
        reported = model_remote._top_k(tuple(tokens)).known
        ids = np.fromiter(reported, dtype=np.int64)
        assert np.allclose(p_remote[ids], np.exp(np.fromiter(reported.values(), dtype=np.float64)), atol=1e-6)
        assert int(p_remote.argmax()) == max(reported, key=reported.get)
        assert abs(float(p_remote.sum()) - 1.0) < 1e-4
        assert int(p_remote.argmax()) == int(p_local.argmax())
        assert abs(float(p_remote.max()) - float(p_local.max())) < 0.1


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.models
def test_unreachable_server_is_one_clear_error():
    port = free_port()  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(BlendinError, match=rf"127\.0\.0\.1:{port}/v1/models: cannot reach the server.*2 attempts"):
        RemoteModel(
            RemoteSpec(f"http://127.0.0.1:{port}/v1", retries=1, backoff=0.05),
            open_vocab(resolve_model("smollm2-135m-instruct")),
        )
    assert time.perf_counter() - started < 5


@pytest.mark.models
def test_slow_server_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts connections (the kernel does) and never answers
    port = listener.getsockname()[1]
    try:
        model = RemoteModel(
            RemoteSpec(f"http://127.0.0.1:{port}/v1", model="m", timeout=1.0, retries=2),
            open_vocab(resolve_model("smollm2-135m-instruct")),
        )
        started = time.perf_counter()
        with pytest.raises(BlendinError, match=r"no answer within 1 s"):
            model.logits([1, 2, 3])
        assert time.perf_counter() - started < 3
    finally:
        listener.close()


class Canned(http.server.BaseHTTPRequestHandler):
    status, body = 200, b"<html>not json</html>"
    seen: list = []

    def do_POST(self):
        self.seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def canned():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Canned.seen = []
    yield server
    server.shutdown()
    server.server_close()


def answer(canned, status: int, body) -> RemoteModel:
    Canned.status = status
    Canned.body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RemoteModel(
        RemoteSpec(f"http://127.0.0.1:{canned.server_address[1]}/v1", model="m", retries=1, backoff=0.01),
        open_vocab(resolve_model("smollm2-135m-instruct")),
    )


@pytest.mark.models
def test_garbage_answer_is_a_clear_error(canned):
    with pytest.raises(
        BlendinError, match=r"/v1/completions: the server's answer is not JSON \('<html>not json</html>'\)"
    ):
        answer(canned, 200, b"<html>not json</html>").logits([1, 2])


GOOD_ANSWER = {
    "choices": [
        {
            "text": "a",
            "finish_reason": "length",
            "logprobs": {
                "content": [{"id": 1, "logprob": -0.1, "top_logprobs": [{"id": 1, "token": "a", "logprob": -0.1}]}]
            },
        }
    ]
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def _replaced(value, path, new):
    """`value` with the part at `path` (keys and indexes, as far as they go) replaced by `new`."""
    if not path or not isinstance(value, (dict, list)) or not value:
        return new
    key = path[0] % len(value) if isinstance(value, list) else sorted(value)[path[0] % len(value)]
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[key] = _replaced(value[key], path[1:], new)
    return copy


@pytest.mark.models
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.lists(st.integers(0, 5), max_size=7),
    new=JSON,
    raw=st.sampled_from([None, b"[" * 100_000, b'{"choices": "abc"}']),
)
def test_any_answer_of_a_server_gives_logits_or_one_error(canned, path, new, raw):
    """A server's answer, however wrong (a part of a good one replaced by any JSON, nesting deeper
    than the parser recurses), is read or refused in one BlendinError, never a traceback."""
    model = answer(canned, 200, raw if raw is not None else _replaced(GOOD_ANSWER, path, new))
    try:
        model.logits([1, 2])
    except BlendinError as e:
        assert "\n" not in str(e)


@pytest.mark.models
def test_answer_without_logprobs_says_what_the_server_needs(canned):
    body = {"choices": [{"text": " Paris", "finish_reason": "length", "logprobs": None}]}
    with pytest.raises(BlendinError, match=r"--logits_all true.*--max-logprobs"):
        answer(canned, 200, body).logits([1, 2])


@pytest.mark.models
def test_server_errors_are_retried_then_reported(canned):
    with pytest.raises(BlendinError, match=r"HTTP 500: 'boom'"):
        answer(canned, 500, {"error": {"message": "boom"}}).logits([1, 2])
    assert len(Canned.seen) == 2  # the first attempt and one retry


@pytest.mark.models
def test_llama_server_and_vllm_answers_map_to_ids(canned):
    """llama-server's ids and vLLM's token_id:N keys; the unknown mass is spread evenly."""
    import numpy as np

    from blendin_local.engine.blending import softmax

    content = {
        "choices": [
            {
                "finish_reason": "length",
                "logprobs": {
                    "content": [
                        {
                            "id": 5,
                            "token": "x",
                            "logprob": -0.5,
                            "top_logprobs": [
                                {"id": 5, "token": "x", "logprob": -0.5},
                                {"id": 7, "token": "y", "logprob": -1.5},
                            ],
                        }
                    ]
                },
            }
        ]
    }
    model = answer(canned, 200, content)
    p = softmax(model.logits([1, 2], n_last=1)[0])
    assert abs(p[5] - np.exp(-0.5)) < 1e-6 and abs(p[7] - np.exp(-1.5)) < 1e-6
    rest = 1 - np.exp(-0.5) - np.exp(-1.5)
    assert abs(p[9] - rest / (model.n_vocab - 2)) < 1e-9 and abs(p.sum() - 1) < 1e-5
    legacy = {
        "choices": [
            {
                "finish_reason": "length",
                "logprobs": {
                    "tokens": ["token_id:11"],
                    "token_logprobs": [-0.1],
                    "top_logprobs": [{"token_id:11": -0.1, " the": -3.0}],
                },
            }
        ]
    }
    model = answer(canned, 200, legacy)
    row = model.logits([3, 4])[0]
    assert row.argmax() == 11 and abs(row[model.tokenize(b" the")[0]] + 3.0) < 1e-6
    assert Canned.seen[-1]["prompt"] and Canned.seen[-1]["logprobs"] == 20 and Canned.seen[-1]["max_tokens"] == 1


@pytest.mark.models
def test_token_prompts_are_sent_as_ids(canned):
    body = {
        "choices": [
            {
                "finish_reason": "length",
                "logprobs": {
                    "content": [
                        {
                            "id": 5,
                            "token": "x",
                            "logprob": -0.1,
                            "top_logprobs": [{"id": 5, "token": "x", "logprob": -0.1}],
                        }
                    ]
                },
            }
        ]
    }
    model = answer(canned, 200, body)
    model = RemoteModel(RemoteSpec(model.spec.url, model="m", prompt_format="tokens"), model.vocab)
    model.logits([1, 2, 3], n_last=2)
    assert [r["prompt"] for r in Canned.seen[-2:]] == [[1, 2], [1, 2, 3]]


# -- an evaluation against a server that dies ---------------------------------------------------


def write_dataset(folder: Path, n: int) -> None:
    (folder / "gsm8k").mkdir(parents=True)
    with (folder / "gsm8k" / "test.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"What is {i} plus {i + 1}?", "answer": f"#### {2 * i + 1}"}) + "\n")


def blendin_eval(data: Path, out: Path, url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blendin_local",
            "eval",
            "--dataset",
            "gsm8k",
            "--data-dir",
            str(data),
            "--out",
            str(out),
            "--methods",
            "guide",
            "-n",
            "6",
            "--jobs",
            "2",
            "--no-progress",
            "-t",
            "1",
            "-c",
            str(N_CTX),
            "--guide-url",
            url,
            "--remote-retries",
            "1",
            "--remote-timeout",
            "30",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.mark.models
@pytest.mark.timeout(300)
def test_eval_survives_a_killed_server_and_resumes(tmp_path):
    n = 12
    write_dataset(tmp_path / "data", n)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    guide = resolve_model("smollm2-135m-instruct")
    server = start_server(guide, port)
    out = tmp_path / "run"
    try:
        wait_ready(server, port, guide)
        run = blendin_eval(tmp_path / "data", out, url)
        deadline = time.time() + 120
        while time.time() < deadline and len(ids_in(out / "guide.jsonl")) < 2 and run.poll() is None:
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)  # the server dies mid-run
        server.wait(timeout=10)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 1, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("blendin: error: ") and url in lines[0], stderr
        assert "cannot reach the server" in lines[0] or "HTTP 5" in lines[0], lines[0]
        before = ids_in(out / "guide.jsonl")
        assert 2 <= len(before) < n and len(set(before)) == len(before)

        server = start_server(guide, port)  # the server is back: the run resumes
        wait_ready(server, port, guide)
        run = blendin_eval(tmp_path / "data", out, url, "--resume")
        _, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, stderr
        after = ids_in(out / "guide.jsonl")
        assert sorted(after) == sorted(set(after)) and len(after) == n  # every sample exactly once
        assert after[: len(before)] == before
        config = json.loads((out / "config.json").read_text())
        assert config["guide"]["server_model"] and config["guide"]["vocab"]["file"] == guide.name
    finally:
        stop(server)


# -- vocabulary sources -------------------------------------------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today?",
    "Café, naïve, 東京, emoji 🙂 and numbers 12345.",
    "def square(x):\n    return x * x\n",
] * 20


def test_tokenizer_json_byte_level_pieces(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    (tmp_path / "hf").mkdir()
    tok.save(str(tmp_path / "hf" / "tokenizer.json"))
    (tmp_path / "hf" / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})
    )
    vocab = open_vocab(tmp_path / "hf")
    assert open_vocab(tmp_path / "hf" / "tokenizer.json") is vocab  # shared per file
    for text in CORPUS[:4]:
        data = text.encode()
        ids = vocab.tokenize(data)
        assert b"".join(vocab.pieces[t] for t in ids) == data  # pieces are raw bytes (Ġ, Ċ, multi-byte)
    assert vocab.eos_id == tok.token_to_id("<|im_end|>") and vocab.eog_ids == {
        vocab.eos_id,
        tok.token_to_id("<|endoftext|>"),
    }
    assert vocab.pieces[vocab.eos_id] == b"" and vocab.token_bytes(vocab.eos_id, special=True) == b"<|im_end|>"
    assert vocab.metadata("tokenizer.chat_template").startswith("{% for")


def test_sentencepiece_pieces(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.Train(
        input=str(tmp_path / "corpus.txt"),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=315,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=0.99,
        user_defined_symbols=["<end_of_turn>"],
        minloglevel=2,
    )
    vocab = open_vocab(tmp_path / "tokenizer.model")
    for text in ("Hello, world!", "東京 and 🙂 bytes"):
        ids = vocab.tokenize(text.encode())
        assert b"".join(vocab.pieces[t] for t in ids) == b" " + text.encode()  # ▁ is a space, <0xNN> a byte
    assert vocab.adds_bos and vocab.bos_id == 1 and vocab.eos_id == 2
    turn = vocab.tokenize(b"a<end_of_turn>", special=True)
    assert turn[-1] in vocab.eog_ids and vocab.pieces[turn[-1]] == b""
