"""Known models and pairs (models/registry.toml), and finding their GGUF files without a network.

A model name from the registry resolves to a file inside an installed PyPI package (found with
`importlib.util.find_spec`, without importing the package) or to a file assembled once from
chunk packages into the models cache. Every file is checked against its sha256 once; the result
is remembered (keyed by path, size and mtime) so later runs do not hash it again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from types import ModuleType

from blendin_local.errors import BlendinError, install_hint


def _toml_parser() -> ModuleType:
    """tomllib, or on Python 3.10 the same parser as the `tomli` package (a dependency there).
    Chosen by what imports, not by the version, so that a test can hide tomllib and check the
    fallback on any Python."""
    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:
        return importlib.import_module("tomli")


tomllib = _toml_parser()

MODELS_DIR_ENV = "BLENDIN_MODELS_DIR"
DEFAULT_PAIR = "default"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    file: str
    package: str
    module: str
    source: str  # "wheel" or "chunks"
    sha256: str
    role: str
    prompt: str
    license: str


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelEntry]
    pairs: dict[str, dict[str, str]]


def load_registry() -> Registry:
    data = tomllib.loads(files("blendin_local.models").joinpath("registry.toml").read_text())
    models = {name: ModelEntry(name=name, **fields) for name, fields in data.get("models", {}).items()}
    return Registry(models=models, pairs=data.get("pairs", {}))


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV) or Path.home() / ".cache" / "blendin_local" / "models")


def looks_like_path(spec: str) -> bool:
    return spec.endswith(".gguf") or os.sep in spec or Path(spec).exists()


def resolve_model(spec: str, registry: Registry | None = None) -> Path:
    """A GGUF path for a registry name, a file in the models cache, or a path as given."""
    registry = registry or load_registry()
    if spec in registry.models:
        return locate(registry.models[spec])
    cached = models_dir() / spec
    for candidate in (cached, cached.with_name(cached.name + ".gguf")):
        if candidate.is_file():
            return candidate
    if looks_like_path(spec):
        return Path(spec)
    known = ", ".join(sorted(registry.models)) or "none"
    raise BlendinError(f"unknown model '{spec}': not a file and not in the registry (known: {known})")


def resolve_pair(name: str, registry: Registry | None = None) -> tuple[str, str]:
    registry = registry or load_registry()
    if name not in registry.pairs:
        raise BlendinError(f"unknown pair '{name}' (known: {', '.join(sorted(registry.pairs))})")
    pair = registry.pairs[name]
    return pair["base"], pair["guide"]


def package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BlendinError(f"the model package '{package}' is not installed: {install_hint('models')}")
    return Path(next(iter(spec.submodule_search_locations)))


def locate(entry: ModelEntry, verify: bool = True, assemble: bool = True) -> Path:
    """The entry's file; a chunk-packaged one is assembled on first use unless `assemble` is off
    (then its absence is the error: `blendin doctor` reports and changes nothing)."""
    if entry.source == "wheel":
        path = package_dir(entry.module, entry.package) / entry.file
        if not path.is_file():
            raise BlendinError(f"{path}: missing from the installed package '{entry.package}'; reinstall it")
    elif entry.source == "chunks":
        path = models_dir() / entry.file
        if not path.is_file():
            if not assemble:
                package_dir(entry.module, entry.package)  # says so if the package is missing
                raise BlendinError(f"not assembled yet: the first run that uses {entry.name} assembles it")
            path = _assemble(entry, path)
    else:
        raise BlendinError(f"registry entry '{entry.name}' has an unknown source '{entry.source}'")
    if verify:
        verify_sha256(path, entry.sha256)
    return path


def _assemble(entry: ModelEntry, target: Path) -> Path:
    package_dir(entry.module, entry.package)  # a clear message when the package is absent
    assembler = importlib.import_module(entry.module)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        assembler.assemble(partial, overwrite=True)
    except (OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise BlendinError(f"could not assemble {entry.file} from the package '{entry.package}': {e}") from None
    partial.replace(target)
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_file() -> Path:
    return models_dir() / "verified.json"


def _read_stamps() -> dict:
    try:
        return json.loads(_stamp_file().read_text())
    except (OSError, ValueError):
        return {}


def verify_sha256(path: Path, expected: str, force: bool = False) -> None:
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    stamps = _read_stamps()
    if not force and stamps.get(key) == stamp:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise BlendinError(f"{path}: sha256 is {actual}, expected {expected}; the file is damaged, reinstall it")
    stamps[key] = stamp
    try:
        _stamp_file().parent.mkdir(parents=True, exist_ok=True)
        _stamp_file().write_text(json.dumps(stamps, indent=1))
    except OSError:
        pass  # a read-only cache only costs a re-check next time
