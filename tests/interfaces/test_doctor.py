"""`blendin doctor`: one screen (or JSON) that says what this installation is."""

import json
import os
import subprocess
import sys

import llama_cpp
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_the_load_line_warns_only_when_the_cores_are_oversubscribed():
    from blendin_local.interfaces.doctor import load_line

    assert load_line(1.99, 2) == "1-minute load average 1.99 on 2 available cores"
    busy = load_line(3.5, 2)
    assert busy.startswith("1-minute load average 3.50 on 2 available cores: other work") and "Troubleshooting" in busy
    assert load_line(None, 2) == "not known on this system"


@given(load=st.floats(0, 1e6, allow_nan=False), cores=st.integers(1, 4096))
def test_any_load_is_one_line(load, cores):
    from blendin_local.interfaces.doctor import load_line

    line = load_line(load, cores)
    assert "\n" not in line and ("other work" in line) == (load > cores)


def test_doctor_reports_the_load_where_the_system_has_one(tmp_path):
    report = json.loads(doctor("--json", "--no-probe", env={"BLENDIN_MODELS_DIR": str(tmp_path)}).stdout)
    load = report["cpu"]["load_average_1m"]
    assert (load is None) == (not hasattr(os, "getloadavg")) and (load is None or load >= 0)
