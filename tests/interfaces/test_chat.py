"""`blendin chat`: the REPL logic fed lines in-process (default pair), and the command in a subprocess."""

import json
import os
import select
import signal
import subprocess
import sys
import time

import llama_cpp.llama_cpp as llama
import pytest
from conftest import restore_sigint

from blendin_local.engine.generation import GenerationSettings
from blendin_local.engine.prompts import prompt_tokens
from blendin_local.interfaces.chat import BufferOutput, ChatSession

pytestmark = pytest.mark.models

SHORT = GenerationSettings(max_tokens=24)


class DecodeCounter:
    """Counts the tokens each model's context evaluates (every llama_decode call, by context)."""

    def __init__(self, monkeypatch, pair):
        self.models = {"base": pair.base, "guide": pair.guide}
        self.counts = {"base": 0, "guide": 0}
        real = llama.llama_decode

        def counting(ctx, batch):
            for name, model in self.models.items():
                if ctx is getattr(model, "_ctx", None):
                    self.counts[name] += batch.n_tokens
            return real(ctx, batch)

        monkeypatch.setattr(llama, "llama_decode", counting)

    def snapshot(self) -> dict:
        return dict(self.counts)


class FirstPieceSnapshot(BufferOutput):
    """Records the decode counts when the first piece of an answer arrives (the prompt is evaluated by then)."""

    def __init__(self, counter: DecodeCounter):
        super().__init__()
        self.counter, self.at_first_piece = counter, None

    def answer(self, text, source):
        if self.at_first_piece is None:
            self.at_first_piece = self.counter.snapshot()
        super().answer(text, source)


def test_a_second_turn_evaluates_only_its_new_tokens(default_pair, monkeypatch):
    counter = DecodeCounter(monkeypatch, default_pair)
    out = FirstPieceSnapshot(counter)
    settings = GenerationSettings(max_tokens=48, system="You are a helpful assistant. Answer in one sentence.")
    session = ChatSession(default_pair, settings, out)
    session.handle("I am planning a trip to Europe next spring and I like museums. What is the capital of France?")
    assert session.history[-1].content, out.text
    turn_1_prompt = len(prompt_tokens(default_pair.base, session._conversation()[:-1], "plain"))

    before = counter.snapshot()
    out.at_first_piece = None
    session.handle("And what is the capital of Italy?")
    assert out.at_first_piece is not None, out.text
    turn = {name: counter.counts[name] - before[name] for name in counter.counts}
    prompt_part = {name: out.at_first_piece[name] - before[name] for name in counter.counts}
    result = session.turns[-1].result

    conversation = session._conversation()[:-1]  # the turn-2 prompt: the whole history and the new question
    history = {
        "base": len(prompt_tokens(default_pair.base, conversation, "plain")),
        "guide": len(prompt_tokens(default_pair.guide, conversation, "chat")),
    }
    print(
        f"\nturn 2: prompt of {history} tokens (turn 1's: {turn_1_prompt} for the base);"
        f" evaluated before the first answer token {prompt_part},"
        f" over the whole turn {turn} ({result.n_tokens} answer tokens)"
    )
    # Without the KV cache the base would evaluate its whole prompt again before answering; with
    # it, at most turn 1's answer and the new question: turn 1's prompt is never evaluated again.
    # (Usually just the new question: turn 1's answer is cached too, unless the blend wrote it in
    # tokens the tokenizer would split differently, say "\n" "\n" for "\n\n"; see the README.)
    assert turn["base"] >= result.n_tokens - 1, "the decode counter saw nothing: has LlamaModel._ctx moved?"
    # The history shows turn 1's answer after the plain prompt's "Answer: " label (prompts.py). When
    # the base wrote that label itself it is in the cache (answer_label.py); when it wrote none, the
    # label's tokens are new to it, and the answer after them is evaluated again: at most that much more.
    label = len(default_pair.base.tokenize(b"Answer:"))
    assert prompt_part["base"] <= history["base"] - turn_1_prompt + label, (prompt_part, history, turn_1_prompt)
    for name in ("base", "guide"):
        assert turn[name] < history[name] + result.n_tokens, (name, turn, history)


def test_turns_stream_and_report_stats(default_pair):
    out = BufferOutput()
    session = ChatSession(default_pair, SHORT, out)
    session.run(["What is the capital of France?", "", "/trace on", "Name a colour.", "/exit", "never asked"])
    assert [t.question for t in session.turns] == ["What is the capital of France?", "Name a colour."]
    assert [m.role for m in session.history] == ["user", "assistant", "user", "assistant"]
    stats = [line for line in out.infos() if line.startswith("[blendin]")]
    assert len(stats) == 2
    for line in stats:
        assert "tokens/s" in line and "intervention rate" in line and "first token" in line
    # Streamed: many answer pieces per turn, not one block; with /trace on, each piece has its source.
    answers = [p for p in out.parts if p[0] == "answer" and p[1].strip()]
    assert len(answers) > 4
    traced = [
        source
        for kind, text, source in out.parts[
            out.parts.index(("info", "trace on: base plain, blend yellow, guide green", None)) :
        ]
        if kind == "answer" and text.strip()
    ]
    assert traced and set(traced) <= {"base", "blend", "guide"}
    assert session.closed


def test_speculative_is_a_chat_command(default_pair):
    out = BufferOutput()
    session = ChatSession(default_pair, GenerationSettings(max_tokens=12), out)
    for line in ["/speculative 4", "/speculative x", "/speculative 999", "/speculative -1", "/method nudging"]:
        assert session.handle(line)
    infos = out.infos()
    assert infos[0] == "speculative 4" and session.settings.speculative == 4
    assert infos[1] == infos[3] == "error: usage: /speculative K, a whole number from 0 to 64"
    assert infos[2] == "error: invalid speculative: Input should be less than or equal to 64 (got 999)"
    assert "works with the methods" in infos[4] and session.settings.method == "blendin"
    session.handle("Say hello.")
    assert session.turns[-1].result.speculation and "speculative:" in out.infos()[-1]
    session.handle("/speculative 0")
    session.handle("/settings")
    assert "speculative off" in out.infos()[-1]


def test_commands_change_settings_and_report_errors(default_pair, tmp_path):
    out = BufferOutput()
    session = ChatSession(default_pair, GenerationSettings(max_tokens=8), out)
    lines = [
        "/method nudging",
        "/gamma 0.7",
        "/alpha 0.3",
        "/gamma 2",
        "/gamma high",
        "/alpha auto",
        "/method proxy",
        "/method magic",
        "/trace sideways",
        "/bogus",
        "/help",
        "/settings",
    ]
    for line in lines:
        assert session.handle(line)
    infos = out.infos()
    assert session.settings.method == "nudging" and session.settings.gamma == 0.7 and session.settings.alpha is None
    assert "error: invalid gamma: Input should be less than or equal to 1.01 (got 2.0)" in infos
    assert "error: gamma must be a number (got 'high')" in infos
    assert any("proxy needs the guide's untuned counterpart" in line for line in infos)
    assert any("unknown method 'magic'" in line for line in infos)
    assert "error: usage: /trace on|off" in infos
    assert "unknown command /bogus (/help lists them)" in infos
    assert any("/save FILE" in line for line in infos)
    assert infos[-1].startswith("method nudging, gamma 0.7, alpha auto")

    session.handle("Say hello.")
    assert session.turns[-1].result.method == "nudging"
    path = tmp_path / "chat.json"
    session.handle(f"/save {path}")
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["turns"][0]["question"] == "Say hello." and saved["turns"][0]["method"] == "nudging"
    assert "intervention_rate" in saved["turns"][0] and saved["settings"]["gamma"] == 0.7
    session.handle(f"/save {tmp_path / 'missing' / 'dir' / 'chat.json'}")
    assert out.infos()[-1].startswith("error: cannot write")

    session.handle("/reset")
    assert session.history == [] and session.turns == []
    assert not session.handle("/exit")


class InterruptAfter(BufferOutput):
    """A terminal whose user presses Ctrl-C after `n` pieces of the answer."""

    def __init__(self, n: int):
        super().__init__()
        self.left = n

    def answer(self, text, source):
        super().answer(text, source)
        if text.strip():
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


def test_ctrl_c_stops_the_answer_keeps_it_and_the_session_goes_on(default_pair):
    out = InterruptAfter(3)
    session = ChatSession(default_pair, GenerationSettings(max_tokens=64), out)
    session.handle("Write a long story about a dragon.")
    assert session.turns[-1].result.stop_reason == "interrupted"
    partial = session.history[-1].content
    assert partial and session.turns[-1].result.n_tokens < 64
    assert any(line.startswith("interrupted: the partial answer is kept in the history") for line in out.infos())
    # The next question is answered as usual, after the partial answer.
    session.handle("Now name a colour.")
    assert session.turns[-1].result.stop_reason != "interrupted"
    assert [m.content for m in session.history[:2]] == ["Write a long story about a dragon.", partial]


def test_a_conversation_longer_than_the_context_is_one_error_line(default_pair):
    out = BufferOutput()
    session = ChatSession(default_pair, SHORT, out)
    session.handle("word " * 1200)
    assert session.history == [] and session.turns == []
    assert out.infos()[-1].startswith("error: the prompt is ") and "context holds 1024" in out.infos()[-1]


def read_at_least(stream, n: int, timeout: float) -> bytes:
    """Read a pipe until `n` bytes came or `timeout` passes (bounded)."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    return data


def test_chat_command_reads_lines_and_ctrl_c_stops_only_the_answer():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blendin_local",
            "chat",
            "--method",
            "base",
            "-n",
            "400",
            "--no-stop-new-turn",
            "-c",
            "1024",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=restore_sigint,
    )
    try:
        proc.stdin.write(b"Count from 1 to 300.\n/method guide\nSay hello.\n/exit\n")
        proc.stdin.flush()
        seen = read_at_least(proc.stdout, 12, timeout=120)  # the answer has started (400 tokens take seconds)
        assert len(seen) >= 12 and proc.poll() is None, (seen, proc.poll())  # mid-answer: 300 numbers take a while
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode()
    assert proc.returncode == 0, err
    assert "interrupted: the partial answer is kept in the history" in err
    assert "[base]" in err and "stop: interrupted" in err
    assert "method guide" in err and "[guide]" in err  # the lines after the interrupted answer were handled
    assert "Traceback" not in err


def test_chat_command_survives_a_line_that_is_not_utf8(tmp_path):
    """Issue 12, defect 6: `printf 'Hi \\xff there\\n/exit\\n' | blendin chat` ended with a traceback."""
    transcript = tmp_path / "chat.json"
    lines = b"Hi \xff there\n/gamma nan\n/save /proc/no/such.json\nSay hi.\n/save " + bytes(transcript) + b"\n/exit\n"
    proc = subprocess.run(
        [sys.executable, "-m", "blendin_local", "chat", "-n", "8", "-t", "1", "-c", "512"],
        input=lines,
        capture_output=True,
        timeout=300,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "that line is not valid UTF-8 (byte 0xff at character 3): ignored" in err
    assert "error: invalid gamma" in err and "error: cannot write /proc/no/such.json" in err
    saved = json.loads(transcript.read_text(encoding="utf-8"))
    assert [m["content"] for m in saved["messages"] if m["role"] == "user"] == ["Say hi."]
