"""`blendin doctor`: what this installation is, on one screen (and as JSON), for a bug report.

Everything is read, nothing is changed, except that the CPU-kernel probe (cpu_kernels.py) runs
if no verdict is cached yet: that verdict is the first thing a crash report needs.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from blendin_local.backends import cpu_kernels
from blendin_local.backends import registry as model_registry
from blendin_local.errors import BlendinError

ENV_VARS = (model_registry.MODELS_DIR_ENV, cpu_kernels.REPACK_ENV, "BLENDIN_DATA_DIR", "BLENDIN_API_KEY")
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def extras() -> dict[str, dict[str, str | None]]:
    """Each optional extra of the installed project, with the installed version of each of its
    requirements (None where missing), read from the project's own metadata."""
    try:
        requirements = importlib.metadata.requires("blendin-local") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    found: dict[str, dict[str, str | None]] = {}
    for requirement in requirements:
        marker = _EXTRA_MARKER.search(requirement)
        name = _REQUIREMENT_NAME.match(requirement)
        if marker and name:
            found.setdefault(marker.group(1), {})[name.group(0)] = installed_version(name.group(0))
    return found


def llama_cpp_info() -> dict[str, Any]:
    import llama_cpp
    import llama_cpp.llama_cpp as llama

    return {
        "llama_cpp_python": llama_cpp.__version__,
        "library": str(Path(llama.__file__).parent / "lib"),
        "system_info": llama.llama_print_system_info().decode("utf-8", "replace").strip(),
        "gpu_offload": bool(llama.llama_supports_gpu_offload()),
        "mmap": bool(llama.llama_supports_mmap()),
    }


def cpu_info() -> dict[str, Any]:
    from blendin_local.backends.llama import default_threads

    return {
        "model": cpu_kernels.cpu_model_name(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "default_threads": default_threads(),
        "amx": sorted(set(re.findall(r"\bamx_\w+", cpu_kernels.cpu_fingerprint()))),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # not on Windows
    }


def load_line(load: float | None, cores: int) -> str:
    """The CPU load as doctor shows it, and what it means for llama.cpp's spinning threads."""
    if load is None:
        return "not known on this system"
    line = f"1-minute load average {load:.2f} on {cores} available cores"
    if load > cores:
        line += ": other work keeps the cores busy, and llama.cpp slows several times over beside it (README, Troubleshooting)"
    return line


def model_files() -> list[dict[str, Any]]:
    """Registry models (found? verified?) and any other GGUF files in the models folder."""
    registry = model_registry.load_registry()
    rows: list[dict[str, Any]] = []
    listed: set[Path] = set()
    for name, entry in registry.models.items():
        row: dict[str, Any] = {
            "name": name,
            "source": f"registry ({entry.package})",
            "path": None,
            "size": None,
            "verified": None,
            "problem": None,
        }
        try:
            path = model_registry.locate(entry, verify=False, assemble=False)
            row.update(path=str(path), size=path.stat().st_size)
            listed.add(path.resolve())
            model_registry.verify_sha256(path, entry.sha256)
            row["verified"] = True
        except BlendinError as e:
            row["problem"] = str(e)
            row["verified"] = False if row["path"] else None
        rows.append(row)
    folder = model_registry.models_dir()
    for path in sorted(folder.glob("*.gguf")) if folder.is_dir() else []:
        if path.resolve() not in listed:
            rows.append(
                {
                    "name": path.name,
                    "source": "models folder",
                    "path": str(path),
                    "size": path.stat().st_size,
                    "verified": None,
                    "problem": None,
                }
            )
    return rows


def probe_info(run_probe: bool) -> dict[str, Any]:
    setting = cpu_kernels.repack_setting(None)
    key = cpu_kernels.verdict_key()
    cache = model_registry.models_dir()
    verdict = cpu_kernels.read_cached(cache, key)
    info: dict[str, Any] = {"setting": setting, "cache": str(cache / "cpu_probe.json"), "key": key}
    if verdict is None and run_probe:
        candidates = [Path(row["path"]) for row in model_files() if row["path"] and row["verified"] is not False]
        if candidates:
            cpu_kernels.GATE.allows_extra_buffers("auto", candidates, cache)
            verdict = cpu_kernels.GATE.verdict
    info["verdict"] = (
        None
        if verdict is None
        else {
            "extra_buffers_run": verdict.runs,
            "outcome": verdict.outcome,
            "detail": verdict.detail,
            "probe_seconds": round(verdict.seconds, 2),
            "model": verdict.model,
        }
    )
    return info


def collect(run_probe: bool = True) -> dict[str, Any]:
    return {
        "blendin_local": installed_version("blendin-local"),
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "llama_cpp": llama_cpp_info(),
        "cpu": cpu_info(),
        "cpu_kernel_probe": probe_info(run_probe),
        "models_dir": str(model_registry.models_dir()),
        "models": model_files(),
        "extras": extras(),
        "environment": {
            name: ("(set)" if name == "BLENDIN_API_KEY" and os.environ.get(name) else os.environ.get(name))
            for name in ENV_VARS
        },
    }


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def render(report: dict[str, Any]) -> str:
    llama, cpu, probe = report["llama_cpp"], report["cpu"], report["cpu_kernel_probe"]
    verdict = probe["verdict"]
    if verdict is None:
        kernels = "not probed yet (no model file to probe with)"
    elif verdict["extra_buffers_run"]:
        kernels = f"usable ({verdict['outcome']}: {verdict['detail']}, {verdict['probe_seconds']} s)"
    else:
        kernels = f"NOT usable, models load without them ({verdict['detail']})"
    lines = [
        f"blendin-local     {report['blendin_local']}",
        f"python            {report['python']['version']} ({report['python']['executable']})",
        f"platform          {report['platform']}",
        f"llama-cpp-python  {llama['llama_cpp_python']} ({llama['library']})",
        f"llama.cpp build   {llama['system_info']}",
        f"GPU offload       {'supported: all layers by default (-ngl N for fewer)' if llama['gpu_offload'] else 'not in this build (CPU only)'}",
        f"CPU               {cpu['model']} ({cpu['machine']}), {cpu['cores_available']} of {cpu['cores']} cores"
        f" available, default threads {cpu['default_threads']}"
        + (f", AMX: {' '.join(cpu['amx'])}" if cpu["amx"] else ""),
        f"CPU load          {load_line(cpu['load_average_1m'], cpu['cores_available'] or 1)}",
        f"CPU kernels       setting {probe['setting']}; AMX/repacked weights {kernels}",
        f"models folder     {report['models_dir']}",
    ]
    for row in report["models"]:
        state = {True: "verified", False: "FAILED", None: "not verified"}[row["verified"]]
        problem = f"  ({row['problem']})" if row["problem"] else ""
        lines.append(f"  {row['name']:<28} {_size(row['size']):>9}  {state}  {row['path'] or ''}{problem}")
    lines.append("extras")
    for extra, packages in sorted(report["extras"].items()):
        missing = [name for name, version in packages.items() if version is None]
        status = "installed" if not missing else f"missing {', '.join(missing)}"
        lines.append(f"  {extra:<10} {status}")
    lines.append(
        "environment       " + (", ".join(f"{k}={v}" for k, v in report["environment"].items() if v) or "(none set)")
    )
    return "\n".join(lines)
