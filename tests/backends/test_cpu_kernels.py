"""The CPU-kernel probe (cpu_kernels.py): children that really die, the verdict cache, the settings."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from blendin_local.backends import cpu_kernels
from blendin_local.backends.cpu_kernels import KernelGate, ProbeVerdict, read_cached, repack_setting, run_probe
from blendin_local.errors import BlendinError


def python_child(code: str):
    return lambda model: [sys.executable, "-c", code]


DIES_BY_SIGSEGV = python_child("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
PASSES = python_child("pass")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def gate(command, notices, key="build-and-cpu"):
    return KernelGate(command=command, notify=notices.append, key=lambda: key)


def test_a_probe_that_dies_by_sigsegv_turns_the_extra_buffers_off_once_with_one_notice(tmp_path, model_file):
    notices = []
    probe = gate(DIES_BY_SIGSEGV, notices)
    assert probe.allows_extra_buffers("auto", [model_file], tmp_path) is False
    assert probe.allows_extra_buffers("auto", [model_file], tmp_path) is False  # decided once per process
    assert len(notices) == 1
    assert "SIGSEGV" in notices[0] and "CMAKE_ARGS" in notices[0] and "\n" not in notices[0]
    assert probe.verdict.outcome == "crash"
    cached = read_cached(tmp_path, "build-and-cpu")
    assert cached is not None and cached.runs is False


def test_a_cached_verdict_is_used_without_probing_again(tmp_path, model_file):
    gate(DIES_BY_SIGSEGV, []).allows_extra_buffers("auto", [model_file], tmp_path)
    marker = tmp_path / "probed"
    notices = []
    second = gate(python_child(f"open({str(marker)!r}, 'w')"), notices)
    assert second.allows_extra_buffers("auto", [model_file], tmp_path) is False
    assert not marker.exists()
    assert notices == []  # said once, by the process that found it


def test_the_cache_is_keyed_by_build_and_cpu(tmp_path, model_file):
    gate(DIES_BY_SIGSEGV, []).allows_extra_buffers("auto", [model_file], tmp_path)
    other_build = gate(PASSES, [], key="another-build")
    assert other_build.allows_extra_buffers("auto", [model_file], tmp_path) is True
    entries = json.loads((tmp_path / "cpu_probe.json").read_text())
    assert {k: v["outcome"] for k, v in entries.items()} == {"build-and-cpu": "crash", "another-build": "ok"}


def test_a_passing_probe_keeps_the_extra_buffers_and_says_nothing(tmp_path, model_file):
    notices = []
    probe = gate(PASSES, notices)
    assert probe.allows_extra_buffers("auto", [model_file], tmp_path) is True
    assert notices == [] and read_cached(tmp_path, "build-and-cpu").outcome == "ok"


@pytest.mark.parametrize("setting, expected", [("on", True), ("off", False)])
def test_a_forced_setting_never_probes(tmp_path, model_file, setting, expected):
    marker = tmp_path / "probed"
    probe = gate(python_child(f"open({str(marker)!r}, 'w')"), [])
    assert probe.allows_extra_buffers(setting, [model_file], tmp_path) is expected
    assert not marker.exists() and probe.verdict is None


def test_with_no_local_model_nothing_is_probed_until_one_loads(tmp_path, model_file):
    """A pair whose models all run on servers loads nothing here: no probe, no verdict; the first
    local load of the process still probes."""
    notices = []
    probe = gate(DIES_BY_SIGSEGV, notices)
    assert probe.allows_extra_buffers("auto", [], tmp_path) is True
    assert probe.verdict is None and read_cached(tmp_path, "build-and-cpu") is None
    assert probe.allows_extra_buffers("auto", [model_file], tmp_path) is False
    assert probe.verdict.outcome == "crash" and len(notices) == 1


def test_the_probe_uses_the_smallest_model(tmp_path):
    small, large = tmp_path / "small.gguf", tmp_path / "large.gguf"
    small.write_bytes(b"GGUF" + bytes(10))
    large.write_bytes(b"GGUF" + bytes(1000))
    seen = []
    probe = KernelGate(
        command=lambda model: seen.append(model) or [sys.executable, "-c", "pass"],
        notify=lambda line: None,
        key=lambda: "k",
    )
    probe.allows_extra_buffers("auto", [large, small], tmp_path)
    assert seen == [small]


@pytest.mark.parametrize(
    "code, outcome, runs",
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGILL)", "crash", False),
        ("import os, signal; os.kill(os.getpid(), signal.SIGABRT)", "crash", False),
        # Stopped by someone (Ctrl-C, the OOM killer): no verdict on the kernels, nothing cached.
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "interrupted", True),
        ("import sys; print('no such model', file=sys.stderr); sys.exit(3)", "load-failed", True),
        ("import sys; sys.exit(1)", "exit 1", True),
    ],
)
def test_how_a_child_ends_decides_the_verdict(tmp_path, model_file, code, outcome, runs):
    verdict = run_probe([sys.executable, "-c", code], model_file)
    assert (verdict.outcome, verdict.runs) == (outcome, runs)
    probe = gate(python_child(code), [])
    probe.allows_extra_buffers("auto", [model_file], tmp_path)
    assert (read_cached(tmp_path, "build-and-cpu") is not None) == (outcome == "crash")


def test_a_probe_that_hangs_is_stopped_and_the_process_plays_safe(model_file):
    verdict = run_probe([sys.executable, "-c", "import time; time.sleep(60)"], model_file, timeout=1.0)
    assert (verdict.outcome, verdict.runs) == ("timeout", False)
    assert verdict.seconds < 10


def test_a_damaged_cache_file_only_costs_a_probe(tmp_path, model_file):
    (tmp_path / "cpu_probe.json").write_text("{not json")
    assert gate(PASSES, []).allows_extra_buffers("auto", [model_file], tmp_path) is True
    assert read_cached(tmp_path, "build-and-cpu").outcome == "ok"


def test_the_setting_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.delenv(cpu_kernels.REPACK_ENV, raising=False)
    assert repack_setting(None) == "auto"
    monkeypatch.setenv(cpu_kernels.REPACK_ENV, "OFF")
    assert repack_setting(None) == "off"
    assert repack_setting("on") == "on"
    monkeypatch.setenv(cpu_kernels.REPACK_ENV, "sometimes")
    with pytest.raises(BlendinError, match="BLENDIN_REPACK"):
        repack_setting(None)


def test_fingerprints_describe_this_build_and_cpu():
    assert "llama-cpp-python" in cpu_kernels.build_fingerprint()
    assert cpu_kernels.cpu_model_name()
    assert len(cpu_kernels.verdict_key()) == 32


def test_a_bad_repack_setting_is_one_error_line(tmp_path):
    env_bad = subprocess.run(
        [sys.executable, "-m", "blendin_local", "generate", "-n", "1", "hi"],
        capture_output=True,
        text=True,
        env={**_env(tmp_path), "BLENDIN_REPACK": "sometimes"},
    )
    assert env_bad.returncode == 1
    assert env_bad.stderr.count("\n") == 1 and "BLENDIN_REPACK" in env_bad.stderr
    option_bad = subprocess.run(
        [sys.executable, "-m", "blendin_local", "generate", "--repack", "x", "hi"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
    )
    assert option_bad.returncode == 2 and "--repack" in option_bad.stderr


def _env(tmp_path: Path) -> dict:
    import os

    return {**os.environ, "BLENDIN_MODELS_DIR": str(tmp_path)}


@pytest.mark.models
def test_the_real_probe_child_loads_and_decodes_or_dies_by_a_signal(tmp_path):
    """On a CPU whose kernels run, the child passes; on one like issue 11's it dies by a signal.
    Either way the verdict is one of the two that are cached, never an error of the child's."""
    from blendin_local.backends.registry import resolve_model

    guide = resolve_model("smollm2-135m-instruct")
    verdict = run_probe(cpu_kernels.probe_command(guide), guide)
    assert verdict.outcome in ("ok", "crash"), verdict
    assert isinstance(verdict, ProbeVerdict)
    if verdict.outcome == "crash":
        assert signal.Signals[verdict.detail.rsplit(" ", 1)[-1]] in cpu_kernels.CRASH_SIGNALS
