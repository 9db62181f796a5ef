"""The command line, end to end in a subprocess: output, and one clear line for each bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import restore_sigint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends.registry import load_registry, locate

GUIDE_FILE = locate(load_registry().models["smollm2-135m-instruct"])


def blendin(*args, stdin: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "blendin_local", *args], input=stdin, capture_output=True, timeout=timeout
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 1) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.models
def test_generate_streams_text_and_reports_stats():
    proc = blendin("generate", "What is the capital of France?", "-n", "24")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip()
    assert "[blendin]" in proc.stderr.decode() and "tokens/s" in proc.stderr.decode()


@pytest.mark.models
def test_json_output_schema():
    proc = blendin("generate", "-p", "Say hello.", "-n", "16", "--json", "--method", "nudging", "--gamma", "0.5")
    assert proc.returncode == 0, proc.stderr.decode()
    data = json.loads(proc.stdout)
    for key in (
        "text",
        "method",
        "base",
        "guide",
        "n_tokens",
        "n_interventions",
        "intervention_rate",
        "alpha_mean",
        "stop_reason",
        "elapsed_s",
        "tokens_per_s",
        "trace",
    ):
        assert key in data
    assert data["method"] == "nudging" and data["n_tokens"] == len(data["trace"])
    assert {"piece", "source", "base_top_p", "alpha"} <= set(data["trace"][0])
    assert {e["source"] for e in data["trace"]} <= {"base", "blend", "guide"}


@pytest.mark.models
def test_prompt_from_stdin_and_sampling_options():
    options = [
        "--method",
        "blendin",
        "--alpha",
        "0.6",
        "--gamma",
        "0.3",
        "--temp",
        "0.7",
        "--seed",
        "1",
        "-n",
        "16",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--min-p",
        "0.05",
    ]
    from_stdin = blendin("generate", *options, "--no-stream", stdin=b"Name a colour.")
    from_argument = blendin("generate", "Name a colour.", *options, "--json")
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()
    assert from_argument.returncode == 0, from_argument.stderr.decode()
    data = json.loads(from_argument.stdout)
    # One seeded sample: the prompt read from stdin is the prompt given as an argument.
    assert data["text"].strip() and from_stdin.stdout.decode().strip() == data["text"].strip()
    assert data["method"] == "blendin" and data["seed"] == 1 and 0 < data["n_tokens"] <= 16
    for entry in data["trace"]:  # gamma 0.3 decides where the guide joins, at alpha 0.6
        assert (entry["source"] == "blend") == (entry["base_top_p"] < 0.3)
        assert entry["alpha"] == (0.6 if entry["source"] == "blend" else None)


@pytest.mark.models
def test_top_logprobs_in_the_json_trace_and_the_trace_table():
    proc = blendin("generate", "Name a colour.", "-n", "8", "--top-logprobs", "2", "--json", "--trace")
    assert proc.returncode == 0, proc.stderr.decode()
    trace = json.loads(proc.stdout)["trace"]
    assert trace and all(len(e["logprob"]["top_logprobs"]) == 2 for e in trace)
    for e in trace:  # greedy: each piece is the likeliest of the distribution it was chosen from
        assert e["logprob"]["token"] == e["piece"] and e["logprob"]["logprob"] <= 0
        assert e["logprob"]["logprob"] == pytest.approx(e["logprob"]["top_logprobs"][0]["logprob"])
    assert f"{trace[0]['logprob']['logprob']:.3f}" in proc.stderr.decode()


@pytest.mark.models
def test_trace_table_on_stderr():
    proc = blendin("generate", "Hi", "-n", "8", "--trace")
    assert proc.returncode == 0
    assert "base top-1" in proc.stderr.decode()


@pytest.mark.models
def test_stop_string_cuts_the_text():
    proc = blendin(
        "generate", "Count from one to ten in words.", "-n", "64", "--method", "guide", "--stop", "five", "--json"
    )
    data = json.loads(proc.stdout)
    assert "five" not in data["text"] and data["stop_reason"] in ("stop", "eos")


def test_models_commands():
    listing = blendin("models", "list")
    assert listing.returncode == 0 and b"gemma3-270m" in listing.stdout and b"pair default" in listing.stdout
    path = blendin("models", "path", "smollm2-135m-instruct")
    assert path.returncode == 0 and Path(path.stdout.decode().strip()) == GUIDE_FILE
    bridge = blendin("models", "bridge", "gemma3-270m", "smollm2-135m-instruct")
    assert bridge.returncode == 0, bridge.stderr.decode()
    assert b"exact" in bridge.stdout and b"93.9" in bridge.stdout
    verify = blendin("models", "verify", "smollm2-135m-instruct")
    assert verify.returncode == 0 and b"ok" in verify.stdout


# -- bad input: one line on stderr, non-zero exit, no traceback --------------------------------


def test_missing_file():
    assert_one_line_error(blendin("generate", "hi", "--base", "/no/such/model.gguf"), "no such file")


@pytest.mark.models
def test_not_a_gguf_file(tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("hello, I am a text file\n")
    assert_one_line_error(blendin("generate", "hi", "--guide", str(fake)), "not a GGUF file")


@pytest.mark.models
def test_truncated_gguf(tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(GUIDE_FILE.read_bytes()[:3_000_000])
    assert_one_line_error(blendin("generate", "hi", "--guide", str(cut)), "truncated GGUF file", "the file has 3000000")


def test_unknown_model_name():
    assert_one_line_error(blendin("generate", "hi", "--base", "llama-9000"), "unknown model 'llama-9000'")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--gamma", "1.5"], "gamma"),
        (["--gamma", "-0.1"], "gamma"),
        (["--alpha", "1.2"], "alpha"),
        (["--alpha", "lots"], "auto"),
        (["-n", "0"], "--max-tokens"),
        (["--temp", "-1"], "--temp"),
        (["--top-p", "0"], "--top-p"),
        (["--base-prompt", "{nope}"], "{prompt}"),
    ],
)
def test_out_of_range_parameters(args, needle):
    proc = blendin("generate", "hi", *args)
    line = assert_one_line_error(proc, needle, code=proc.returncode)
    assert proc.returncode in (1, 2), line


def test_proxy_without_anti():
    assert_one_line_error(blendin("generate", "hi", "--method", "proxy"), "--anti")


def test_empty_prompt():
    assert_one_line_error(blendin("generate", "   "), "empty")
    assert_one_line_error(blendin("generate", stdin=b""), "empty")


@pytest.mark.models
def test_prompt_longer_than_the_context():
    line = assert_one_line_error(
        blendin("generate", "word " * 300, "-c", "64"), "context holds 256"
    )  # llama.cpp rounds up to 256
    assert "tokens for" in line


def test_invalid_utf8_on_stdin():
    assert_one_line_error(blendin("generate", stdin=b"caf\xe9 au lait"), "not valid UTF-8", "0xe9")


@pytest.mark.models
def test_ctrl_c_keeps_what_was_generated():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blendin_local",
            "generate",
            "Write a long story about a dragon.",
            "-n",
            "2000",
            "--method",
            "guide",
            "--no-stop-new-turn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=restore_sigint,
    )
    first = proc.stdout.read(40)  # wait until text is streaming
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert len(first + rest) >= 40
    assert b"Traceback" not in err and b"stop: interrupted" in err


# Run in a child: an import hook stands in for a Ctrl-C that lands while the command line's
# modules load (the first half second of every command), which a real signal can't hit reliably.
_INTERRUPTED_IMPORT = """
import sys

class CtrlCDuringImport:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlCDuringImport())
from blendin_local.__main__ import main
main()
"""


def test_ctrl_c_while_the_command_line_loads_is_one_line_and_130():
    proc = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_IMPORT, "generate", "hi"], capture_output=True, timeout=120
    )
    assert proc.returncode == 130, proc.stderr.decode()
    assert proc.stderr.decode().strip() == "blendin: interrupted"


def test_remote_options_fill_remote_settings_with_its_own_defaults():
    import click
    from click.testing import CliRunner

    from blendin_local.backends.remote import RemoteSettings
    from blendin_local.interfaces.cli.options import remote_options, remote_settings

    @click.command()
    def show():
        click.echo(repr(remote_settings()))

    for option in reversed(remote_options()):
        show = option(show)
    runner = CliRunner()
    assert runner.invoke(show, []).output.strip() == repr(RemoteSettings())
    given = runner.invoke(
        show, ["--base-url", "http://h/v1", "--logprobs", "5", "--remote-timeout", "3", "--remote-retries", "0"]
    )
    assert given.output.strip() == repr(RemoteSettings(base_url="http://h/v1", top_k=5, timeout=3.0, retries=0))


# -- hostile arguments (issue 12): one line, never a traceback --------------------------------


def test_arguments_that_are_not_utf8_are_one_line_naming_the_option():
    # bytes arguments reach Python through surrogateescape, as from a shell's $'\xff'
    assert_one_line_error(
        blendin("generate", b"Hi \xff"), "'[PROMPT]'", "not valid UTF-8 (byte 0xff at character 3)", code=2
    )
    assert_one_line_error(blendin("generate", "-s", b"\xff", "Hi"), "'--system'", "byte 0xff", code=2)
    assert_one_line_error(blendin("generate", "--stop", b"a\xfe", "Hi"), "'--stop'", "byte 0xfe", code=2)


def as_an_ascii_locale_reads(text: str) -> str:
    """`text` as an argument reaches Python under LC_ALL=C: its non-ASCII bytes surrogate-escaped."""
    return "".join(chr(b) if b < 0x80 else chr(0xDC00 + b) for b in text.encode("utf-8"))


@given(st.text(st.characters(exclude_categories=("Cs",))))
def test_an_ascii_locale_gets_its_utf8_arguments_read_as_utf8(text):
    from blendin_local.interfaces.cli.options import UTF8_TEXT

    assert UTF8_TEXT.convert(as_an_ascii_locale_reads(text), None, None) == text


@pytest.mark.models
@pytest.mark.parametrize("env", [{"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}, {"PYTHONIOENCODING": "ascii"}])
@pytest.mark.parametrize(
    "args, stdin",
    [(["generate", "用中文介绍一下熊猫。"], None), (["chat"], "用中文介绍一下熊猫。\n/exit\n".encode())],
)
def test_a_non_utf8_locale_reads_and_writes_utf8(env, args, stdin):
    # Under LC_ALL=C the prompt (and each chat line) was refused as "not valid UTF-8"; with an
    # ASCII stdout the answer could not be written. Input and output are UTF-8 whatever the locale.
    proc = subprocess.run(
        [sys.executable, "-m", "blendin_local", *args, "--method", "guide", "-n", "6"],
        input=stdin,
        capture_output=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LANG", "PYTHONIOENCODING")} | env,
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "not valid UTF-8" not in err and "Traceback" not in err, err
    assert proc.stdout.decode("utf-8").strip() and "6 tokens" in err


@pytest.mark.parametrize(
    "option, fmt, needle",
    [
        ("--base-prompt", "{prompt", "opens no placeholder"),
        ("--guide-prompt", "}{prompt}", "closes no placeholder"),
        ("--base-prompt", "{prompt}}x}", "closes no placeholder"),
        ("--base-prompt", "{prompt:{prompt.__class__.__mro__}}", "opens no placeholder"),
        ("--guide-prompt", "{prompt:>10000000}", "format spec"),
        ("--base-prompt", "{prompt!x}", "conversion"),
    ],
)
def test_prompt_formats_are_parsed_as_the_option_is_read(option, fmt, needle):
    line = assert_one_line_error(blendin("generate", "Hi", option, fmt), f"'{option}'", needle, code=2)
    assert "class" not in line.replace("__class__", "")


def text_parameters():
    """(command path, command, parameter) for every text parameter of every command, after main()'s check."""
    import click

    from blendin_local.interfaces.cli import cli
    from blendin_local.interfaces.cli.options import Utf8Text, read_text_as_utf8

    read_text_as_utf8(cli)
    found = []

    def walk(command, path):
        for param in command.params:
            assert param.type is not click.STRING, (path, param.name)  # every one goes through Utf8Text
            if isinstance(param.type, Utf8Text):
                found.append((tuple(path), command, param))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(cli, [])
    return found


TEXT_PARAMETERS = text_parameters()


def test_every_command_has_its_text_checked():
    commands = {path[0] for path, _, _ in TEXT_PARAMETERS}
    assert {"generate", "chat", "serve", "eval", "models"} <= commands, commands


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.sampled_from(TEXT_PARAMETERS),
    before=st.text(max_size=8),
    after=st.text(max_size=8),
    byte=st.integers(0x80, 0xFF),
)
def test_a_text_parameter_that_is_not_utf8_is_one_line_and_exit_2(where, before, after, byte, capsys):
    from blendin_local.interfaces.cli import main

    path, command, param = where
    value = f"{before}{bytes([byte]).decode('utf-8', 'surrogateescape')}{after}"
    if param.param_type_name == "option":  # --name=value, so that a value starting with "-" stays a value
        name = max(param.opts, key=len)
        argv = [*path, f"{name}={value}" if name.startswith("--") else f"{name}{value}"]
    else:  # an argument, after "--" for the same reason: the ones before it get ordinary values
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        argv = [*path, "--", *["x"] * arguments.index(param), value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "not valid UTF-8" in err and f"byte 0x{byte:02x}" in err, err
