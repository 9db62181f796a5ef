"""`blendin doctor`: one screen (or JSON) that says what this installation is."""

import json
import os
import subprocess
import sys

import llama_cpp
import pytest

from blendin_local.backends.llama import default_threads


def doctor(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "blendin_local", "doctor", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.mark.models
def test_doctor_json_describes_this_installation():
    done = doctor("--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["llama_cpp"]["llama_cpp_python"] == llama_cpp.__version__
    assert "CPU" in report["llama_cpp"]["system_info"] or "AVX" in report["llama_cpp"]["system_info"]
    assert report["cpu"]["default_threads"] == default_threads()
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    models = {row["name"]: row for row in report["models"]}
    assert models["smollm2-135m-instruct"]["verified"] is True
    assert models["gemma3-270m"]["verified"] is True
    # The extras come from the installed metadata: the test extra is installed, or this test would not run.
    assert report["extras"]["test"]["pytest"] is not None
    assert {"models", "eval", "server", "remote", "test"} <= set(report["extras"])
    verdict = report["cpu_kernel_probe"]["verdict"]
    assert verdict is not None and verdict["outcome"] in ("ok", "crash")


@pytest.mark.models
def test_doctor_text_is_one_screen_with_the_probe_verdict():
    done = doctor()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) <= 40
    assert any(line.startswith("CPU kernels") for line in lines)
    assert any(line.startswith("llama-cpp-python") and llama_cpp.__version__ in line for line in lines)


def test_doctor_without_models_or_probe_still_answers(tmp_path):
    done = doctor("--json", "--no-probe", env={"BLENDIN_MODELS_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cpu_kernel_probe"]["verdict"] is None
    assert report["models_dir"] == str(tmp_path)
    text = doctor("--no-probe", env={"BLENDIN_MODELS_DIR": str(tmp_path)}).stdout
    assert "not probed yet" in text
