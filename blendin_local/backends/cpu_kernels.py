"""Whether this llama.cpp build's extra CPU weight buffers (AMX, repacked weights) run on this CPU.

llama-cpp-python compiles llama.cpp for the CPU it is built on (GGML_NATIVE). A virtual
machine may advertise CPU features its hypervisor does not let a process use (Intel AMX:
`ldtilecfg` faults), and llama.cpp then dies by a signal at the first matrix multiplication,
which no Python code can catch. So, before the first model load of a process, a child process
loads a real model with those buffers and decodes a few tokens. If the child dies by a crash
signal, every model of this process is loaded with `use_extra_bufts = False` (llama.cpp's
`--no-repack`): slower, but it runs. The verdict is cached next to the models, keyed by the
llama.cpp build and the CPU, so the probe runs once per installation and machine, and the
process that finds a failure says so once, on stderr (`blendin doctor` shows it any time).

The setting (`--repack`, `BLENDIN_REPACK`): `auto` probes, `on` trusts the kernels, `off`
never uses them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from blendin_local.backends.registry import models_dir
from blendin_local.errors import BlendinError
from blendin_local.json_files import dataclass_from_json, read_json_object, write_json_cache

RepackSetting = Literal["auto", "on", "off"]
REPACK_SETTINGS: tuple[RepackSetting, ...] = ("auto", "on", "off")
REPACK_ENV = "BLENDIN_REPACK"
# Signals that say the native code faulted. SIGINT/SIGTERM/SIGKILL say someone stopped the child
# (Ctrl-C, the OOM killer), which is no verdict on the kernels.
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT, signal.SIGSYS})
PROBE_TIMEOUT_S = 300.0
CHILD_LOAD_FAILED = 3  # the child could not load the model at all: a verdict on the file, not the kernels
SAFE_BUILD_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
    " -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)


@dataclass(frozen=True)
class ProbeVerdict:
    """What the probe child did: `runs` is whether the extra buffers may be used."""

    runs: bool
    outcome: str  # "ok", "crash", "load-failed", "timeout", "interrupted", "forced"
    detail: str
    seconds: float
    model: str


def repack_setting(option: str | None) -> RepackSetting:
    """The option if given, else the environment variable, else auto."""
    value = option if option is not None else os.environ.get(REPACK_ENV, "auto")
    value = value.strip().lower()
    if value not in REPACK_SETTINGS:
        raise BlendinError(f"{REPACK_ENV}={value!r}: must be one of {', '.join(REPACK_SETTINGS)}")
    return value  # type: ignore[return-value]


def build_fingerprint() -> str:
    """The llama.cpp build: llama-cpp-python's version, the features it was compiled for, and its
    library file (a rebuild with other CMAKE_ARGS changes the last two)."""
    import llama_cpp
    import llama_cpp.llama_cpp as llama

    library = Path(llama.__file__).parent / "lib"
    files = sorted(library.glob("*")) if library.is_dir() else []
    stamps = [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    system_info = llama.llama_print_system_info().decode("utf-8", "replace")
    return f"llama-cpp-python {llama_cpp.__version__} | {system_info} | {' '.join(stamps)}"


def cpu_fingerprint() -> str:
    """The CPU as a program sees it: its model and the feature flags the kernel reports."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:
        pass  # not Linux: the platform module's description is all there is
    return f"{platform.system()} {platform.machine()} | {model or platform.processor() or platform.machine()} | {flags}"


def cpu_model_name() -> str:
    return cpu_fingerprint().split(" | ")[1]


def verdict_key() -> str:
    return hashlib.sha256(f"{build_fingerprint()}\n{cpu_fingerprint()}".encode()).hexdigest()[:32]


def _cache_file(cache_dir: Path) -> Path:
    return cache_dir / "cpu_probe.json"


def read_cached(cache_dir: Path, key: str) -> ProbeVerdict | None:
    # typed: a damaged entry's "runs": "no" must not turn on the kernels the probe saw crash
    return dataclass_from_json(ProbeVerdict, read_json_object(_cache_file(cache_dir)).get(key))


def write_cached(cache_dir: Path, key: str, verdict: ProbeVerdict) -> None:
    entries = read_json_object(_cache_file(cache_dir))
    entries[key] = asdict(verdict)
    write_json_cache(_cache_file(cache_dir), entries)


def probe_command(model: Path) -> list[str]:
    return [sys.executable, "-m", "blendin_local.backends.kernel_probe_child", str(model)]


def run_probe(command: Sequence[str], model: Path, timeout: float = PROBE_TIMEOUT_S) -> ProbeVerdict:
    """Run a probe child and read its end: exit 0 is a pass, death by a crash signal a failure."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeVerdict(
            False, "timeout", f"the probe did not finish in {timeout:.0f} s", time.perf_counter() - start, str(model)
        )
    seconds = time.perf_counter() - start
    code = done.returncode
    if code == 0:
        return ProbeVerdict(True, "ok", "loaded a model and decoded with the extra buffers", seconds, str(model))
    if code < 0 and signal.Signals(-code) in CRASH_SIGNALS:
        name = signal.Signals(-code).name
        return ProbeVerdict(False, "crash", f"a test process died by {name}", seconds, str(model))
    if code < 0:
        name = signal.Signals(-code).name
        return ProbeVerdict(True, "interrupted", f"the probe was stopped by {name}", seconds, str(model))
    last_line = (done.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:200]
    outcome = "load-failed" if code == CHILD_LOAD_FAILED else f"exit {code}"
    return ProbeVerdict(True, outcome, last_line or f"the probe exited with {code}", seconds, str(model))


def fallback_notice(verdict: ProbeVerdict) -> str:
    return (
        f"blendin: llama.cpp's AMX/repacked CPU kernels fail on this CPU ({verdict.detail}); loading models"
        f" without them (small models lose nothing measurable, larger ones may run slower; README,"
        f' Troubleshooting). To keep the other kernels, rebuild: CMAKE_ARGS="{SAFE_BUILD_CMAKE_ARGS}"'
        f" pip install --force-reinstall --no-cache-dir llama-cpp-python (or set {REPACK_ENV}=on to skip this check)"
    )


def _print_notice(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class KernelGate:
    """Decides once per process whether models load with llama.cpp's extra buffer types."""

    def __init__(
        self,
        command: Callable[[Path], Sequence[str]] = probe_command,
        notify: Callable[[str], None] = _print_notice,
        key: Callable[[], str] = verdict_key,
    ):
        self._command, self._notify, self._key = command, notify, key
        self._lock = threading.Lock()
        self._verdict: ProbeVerdict | None = None

    @property
    def verdict(self) -> ProbeVerdict | None:
        return self._verdict

    def allows_extra_buffers(
        self, setting: RepackSetting, models: Sequence[Path], cache_dir: Path | None = None
    ) -> bool:
        """Whether to load with extra buffers; probes with the smallest of `models` if no verdict is known."""
        if setting != "auto":
            return setting == "on"
        with self._lock:
            if self._verdict is None:
                verdict = self._decide(models, cache_dir or models_dir())
                if verdict is None:
                    return True  # no model loads here (a pair on servers): the first local load decides
                self._verdict = verdict
            return self._verdict.runs

    def _decide(self, models: Sequence[Path], cache_dir: Path) -> ProbeVerdict | None:
        key = self._key()
        verdict = read_cached(cache_dir, key)
        if verdict is not None:
            return verdict  # said when it was found; `blendin doctor` says it again
        if not models:
            return None
        model = min(models, key=lambda p: p.stat().st_size)
        verdict = run_probe(self._command(model), model)
        if verdict.outcome in ("ok", "crash"):
            write_cached(cache_dir, key, verdict)
        if not verdict.runs:
            self._notify(fallback_notice(verdict))
        return verdict


GATE = KernelGate()
