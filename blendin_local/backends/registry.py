"""Known models and pairs (models/registry.toml), and finding their GGUF files without a network.

A model name from the registry resolves to a file inside an installed PyPI package (found with
`importlib.util.find_spec`, without importing the package) or to a file assembled once from
chunk packages into the models cache. Every file is checked against its sha256 once; the result
is remembered (keyed by path, size and mtime) so later runs do not hash it again.

A user registry, $XDG_CONFIG_HOME/blendin/registry.toml (written by `blendin models add` and
`blendin pair add`), is read over the packaged one: its models and pairs replace packaged ones of
the same name. Its models point at a path or a model spec, and its pairs may carry settings.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import importlib.util
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

from filelock import FileLock, Timeout

from blendin_local.backends import model_sources
from blendin_local.engine.settings import ALPHA_AUTO, GenerationSettings, value_type
from blendin_local.errors import BlendinError, install_hint
from blendin_local.file_replace import replace_file
from blendin_local.json_files import read_json_object, write_json_cache
from blendin_local.user_paths import user_path


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
class UserModelEntry:
    """A model of the user registry: a name for a model spec or a GGUF path (which resolve_model
    reads), with what `models list` shows of it."""

    name: str
    spec: str  # a model spec, a registry name, or an absolute path (a relative `path` is the file's folder's)
    is_path: bool = False  # written as `path` rather than `spec`
    role: str | None = None
    prompt: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelEntry]  # the packaged models a user entry does not replace
    pairs: dict[str, dict[str, Any]]  # every pair's checked table: base, guide, and settings (PAIR_SETTINGS)
    user_models: dict[str, UserModelEntry] = field(default_factory=dict)
    user_pairs: frozenset[str] = frozenset()  # the pairs that come from the user registry


@dataclass(frozen=True)
class PairEntry:
    """A named pair: its models (specs) and the defaults it sets for a command that loads it."""

    name: str
    base: str
    guide: str
    settings: Mapping[str, Any] = field(default_factory=dict)  # GenerationSettings values (alpha None = auto)
    ctx_size: int | None = None
    user: bool = False  # from the user registry (so `pair remove` can remove it)


USER_REGISTRY = Path("blendin") / "registry.toml"  # under $XDG_CONFIG_HOME, default ~/.config
MAX_REGISTRY_BYTES = 1 << 20  # a registry is a few kB; anything near this is some other file
STALE_PARTIAL_S = 3600.0  # a model's assembly left this long was killed
EDIT_WAIT_S = 30.0  # another `models add` holds the registry for milliseconds, or a check of its models' files
# Names of models and pairs: safe in a TOML key, a shell and a file name, and never a path or a
# prefixed spec (no "/" and no ":").
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_SPEC_CHARS = 4096  # PATH_MAX
MAX_DESCRIPTION_CHARS = 200
ROLES = ("base", "guide")
USER_PROMPT_STYLES = ("plain", "chat")
USER_MODEL_KEYS = ("spec", "path", "role", "prompt", "description")
# What a pair may set besides its models: GenerationSettings fields, checked by GenerationSettings,
# and the context size each model loads with.
PAIR_SETTINGS = ("gamma", "alpha", "base_prompt", "guide_prompt")
PAIR_KEYS = ("base", "guide", *PAIR_SETTINGS, "ctx_size")
# Context sizes (--ctx-size, a pair's ctx_size): below 16 tokens no prompt fits; llama.cpp counts in int32.
CTX_SIZE_MIN, CTX_SIZE_MAX = 16, 2**31 - 1


def load_registry() -> Registry:
    """The packaged registry with the user's read over it."""
    path = user_registry_path()
    return _merged_registry(read_registry_file(path), path)


def models_dir() -> Path:
    """$BLENDIN_MODELS_DIR (a leading ~ expanded, as a shell would not inside quotes), else the cache."""
    return user_path(os.environ.get(MODELS_DIR_ENV) or Path.home() / ".cache" / "blendin_local" / "models")


def looks_like_path(spec: str) -> bool:
    return spec.endswith(".gguf") or os.sep in spec or Path(spec).exists()


def resolve_model(spec: str, registry: Registry | None = None) -> Path:
    """A GGUF path for a prefixed spec (ollama:, hf:, lmstudio:, llm:, llamacpp:, models:;
    model_sources/), a user model (the spec or path it stands for), a registry name, a file in the
    models cache, or a path as given."""
    if model_sources.source_of(spec) is not None:
        return model_sources.resolve(spec, models_dir())
    registry = registry or load_registry()
    if spec in registry.user_models:  # model_spec ends at a name that is not a user model
        return resolve_model(model_spec(spec, registry), registry)
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
    entry = pair_entry(name, registry)
    return entry.base, entry.guide


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


def _remove_stale_partials(target: Path, now: float | None = None) -> None:
    """Partial files of `target` that an assembly killed mid-way left (each the model's size): an
    assembly takes seconds, so one untouched for an hour is no other process's work in progress."""
    now = time.time() if now is None else now
    for partial in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        try:
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                partial.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to remove: it only costs disk


def _assemble(entry: ModelEntry, target: Path) -> Path:
    package_dir(entry.module, entry.package)  # a clear message when the package is absent
    assembler = importlib.import_module(entry.module)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where the folder goes, no permission, a full disk
        raise BlendinError(
            f"{target.parent}: cannot make the models folder to assemble {entry.file} in"
            f" ({e.strerror or e}); set {MODELS_DIR_ENV} to a folder you can write"
        ) from None
    _remove_stale_partials(target)
    # a name of its own: two first runs at once must not write one partial file between them
    partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.partial")
    try:
        assembler.assemble(partial, overwrite=True)
        partial.replace(target)
    except (OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise BlendinError(f"could not assemble {entry.file} from the package '{entry.package}': {e}") from None
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_file() -> Path:
    return models_dir() / "verified.json"


def verify_sha256(path: Path, expected: str, force: bool = False) -> None:
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    stamps = read_json_object(_stamp_file())
    if not force and stamps.get(key) == stamp:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise BlendinError(f"{path}: sha256 is {actual}, expected {expected}; the file is damaged, reinstall it")
    stamps[key] = stamp
    write_json_cache(_stamp_file(), stamps)


# -- the user registry ---------------------------------------------------------------------------


def user_registry_path() -> Path:
    """$XDG_CONFIG_HOME/blendin/registry.toml; a relative XDG_CONFIG_HOME is ignored, as the XDG
    base directory specification says."""
    config = os.environ.get("XDG_CONFIG_HOME", "")
    return (Path(config) if os.path.isabs(config) else Path.home() / ".config") / USER_REGISTRY


def read_registry_file(path: Path) -> dict[str, Any]:
    """The tables of a registry file, {} if there is none. A file too large, not UTF-8 or not TOML is
    one BlendinError naming it."""
    return _parsed_registry(_registry_text(path), path)


def _parsed_registry(text: str | None, path: Path) -> dict[str, Any]:
    try:
        return {} if text is None else tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # TOMLDecodeError is a ValueError; deep nesting recurses
        raise BlendinError(f"{path}: not valid TOML: {_one_line(str(e) or type(e).__name__)}") from None


def _registry_text(path: Path) -> str | None:
    """A registry file's text, None if there is none; too large, not UTF-8 or not a regular file
    is one BlendinError naming it."""
    try:
        # Non-blocking: a FIFO in the file's place would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BlendinError(f"{path}: cannot read it: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BlendinError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_REGISTRY_BYTES + 1)
        except OSError as e:
            raise BlendinError(f"{path}: cannot read it: {e.strerror or e}") from None
    if len(data) > MAX_REGISTRY_BYTES:
        raise BlendinError(f"{path}: larger than {MAX_REGISTRY_BYTES >> 20} MiB, which no registry is")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BlendinError(f"{path}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def checked_user_registry(
    data: Mapping[str, Any], path: Path
) -> tuple[dict[str, UserModelEntry], dict[str, dict[str, Any]]]:
    """The models and pairs of the user registry `path` holds `data`; the first problem is one
    BlendinError naming the file and the entry."""
    try:
        unknown = [key for key in data if key not in ("models", "pairs")]
        if unknown:
            raise BlendinError(f"unknown table {_quoted(unknown[0])} (a registry has models and pairs)")
        models = {name: user_model(name, table, path.parent) for name, table in _tables(data, "models").items()}
        pairs = {name: checked_pair(name, table) for name, table in _tables(data, "pairs").items()}
    except BlendinError as e:
        raise BlendinError(f"{path}: {e}") from None
    return models, pairs


def user_model(name: str, table: Any, folder: Path) -> UserModelEntry:
    """A user registry's model table, checked; a relative path is taken from `folder`."""
    check_name(name, "model")
    where = f"models.{name}"
    _check_keys(table, USER_MODEL_KEYS, where)
    for key, value in table.items():
        limit = MAX_DESCRIPTION_CHARS if key == "description" else MAX_SPEC_CHARS
        _check_text(value, f"{where}.{key}", limit, may_be_empty=key == "description")
    if ("spec" in table) == ("path" in table):
        raise BlendinError(f"{where}: give either spec or path")
    for key, allowed in (("role", ROLES), ("prompt", USER_PROMPT_STYLES)):
        if table.get(key, allowed[0]) not in allowed:
            raise BlendinError(f"{where}.{key} is {_quoted(table[key])}, not one of {', '.join(allowed)}")
    is_path = "path" in table
    spec = str(folder / user_path(table["path"])) if is_path else table["spec"]
    return UserModelEntry(name, spec, is_path, table.get("role"), table.get("prompt"), table.get("description", ""))


def checked_pair(name: str, table: Any) -> dict[str, Any]:
    """A pair's table, checked: its models' specs, and its settings' types and ranges (those of
    GenerationSettings and of the context size)."""
    check_name(name, "pair")
    where = f"pairs.{name}"
    _check_keys(table, PAIR_KEYS, where)
    for key in ("base", "guide"):
        if key not in table:
            raise BlendinError(f"{where}: no {key}")
        _check_text(table[key], f"{where}.{key}", MAX_SPEC_CHARS)
    _pair_settings(table, where)
    size = table.get("ctx_size", CTX_SIZE_MIN)
    if not (_has_type(size, int) and CTX_SIZE_MIN <= size <= CTX_SIZE_MAX):
        raise BlendinError(
            f"{where}.ctx_size must be a whole number from {CTX_SIZE_MIN} to {CTX_SIZE_MAX} (got {_quoted(size)})"
        )
    return dict(table)


def pair_entry(name: str, registry: Registry | None = None) -> PairEntry:
    """A registry pair by name, its settings as GenerationSettings values; an unknown name is one
    BlendinError listing the known ones."""
    registry = registry or load_registry()
    if name not in registry.pairs:
        raise BlendinError(f"unknown pair {_quoted(name)} (known: {', '.join(sorted(registry.pairs))})")
    table = registry.pairs[name]
    return PairEntry(
        name,
        table["base"],
        table["guide"],
        _pair_settings(table, f"pairs.{name}"),
        table.get("ctx_size"),
        name in registry.user_pairs,
    )


def model_spec(name: str, registry: Registry | None = None) -> str:
    """What resolve_model reads for `name`: a user model's spec or path (following one that names
    another user model), else `name` itself."""
    registry = registry or load_registry()
    chain: list[str] = []
    while name in registry.user_models:
        if name in chain:
            raise BlendinError(f"user model '{chain[0]}' leads back to itself ({' -> '.join([*chain, name])})")
        chain.append(name)
        name = registry.user_models[name].spec
    return name


def add_model(
    name: str,
    spec: str,
    role: str | None = None,
    prompt: str | None = None,
    description: str = "",
    force: bool = False,
    check: bool = True,
) -> Path:
    """Add (with `force`, replace) a model in the user registry, which it returns; with `check`, the
    model must resolve to a file first. `spec` naming an existing file is stored as its absolute path."""
    path = _existing_file(spec)
    table: dict[str, Any] = {"path": path} if path else {"spec": spec}
    table.update({key: value for key, value in (("role", role), ("prompt", prompt)) if value is not None})
    if description:
        table["description"] = description
    user_model(name, table, user_registry_path().parent)  # the caller's values: a problem names no file
    return _update_user_registry("models", name, table, force, [name] if check else [])


def add_pair(
    name: str,
    base: str,
    guide: str,
    settings: Mapping[str, Any] | None = None,
    ctx_size: int | None = None,
    force: bool = False,
    check: bool = True,
) -> Path:
    """Add (with `force`, replace) a pair in the user registry, which it returns. `settings` are
    GenerationSettings values among PAIR_SETTINGS (alpha None is auto); with `check`, both models
    must resolve to files first."""
    table: dict[str, Any] = {"base": _existing_file(base) or base, "guide": _existing_file(guide) or guide}
    for key, value in (settings or {}).items():
        table[key] = ALPHA_AUTO if key == "alpha" and value is None else value
    if ctx_size is not None:
        table["ctx_size"] = ctx_size
    checked_pair(name, table)
    return _update_user_registry("pairs", name, table, force, [base, guide] if check else [])


def remove_pair(name: str) -> Path:
    """Remove a pair from the user registry, which it returns; a packaged pair stays."""

    def remove(data: dict[str, Any], path: Path) -> None:
        if not pair_entry(name, _merged_registry(data, path)).user:
            raise BlendinError(f"pair '{name}' is packaged with blendin: only pairs added to {path} can be removed")
        del data["pairs"][name]
        if not data["pairs"]:
            del data["pairs"]

    return _edit_user_registry(remove)


def remove_model(name: str) -> Path:
    """Remove a model from the user registry, which it returns. Its GGUF file stays where it is; a
    packaged model it replaced comes back. A model that entries still name (a pair's base or
    guide, another model's spec) is refused while nothing of that name would remain."""

    def remove(data: dict[str, Any], path: Path) -> None:
        registry = _merged_registry(data, path)
        if name not in registry.user_models:
            if name in registry.models:
                raise BlendinError(
                    f"model '{name}' is packaged with blendin: only models added to {path} can be removed"
                )
            yours = ", ".join(sorted(registry.user_models)) or "none"
            raise BlendinError(f"{_quoted(name)} is not a model of your registry (yours: {yours})")
        del data["models"][name]
        if not data["models"]:
            del data["models"]
        after = _merged_registry(data, path)
        if name not in after.models:
            users = [
                f"pair {pair}" for pair, table in sorted(after.pairs.items()) if name in (table["base"], table["guide"])
            ]
            users += [f"model {model}" for model, entry in sorted(after.user_models.items()) if entry.spec == name]
            if users:
                raise BlendinError(f"model '{name}' is named by {', '.join(users)}: remove or change those first")

    return _edit_user_registry(remove)


def _merged_registry(user_data: Mapping[str, Any], path: Path) -> Registry:
    """The packaged registry with `user_data` (the tables of the user registry `path`) over it."""
    data = tomllib.loads(files("blendin_local.models").joinpath("registry.toml").read_text())
    models = {name: ModelEntry(name=name, **fields) for name, fields in data.get("models", {}).items()}
    pairs = {name: checked_pair(name, table) for name, table in data.get("pairs", {}).items()}
    user_models, user_pairs = checked_user_registry(user_data, path)
    for name in user_models:
        models.pop(name, None)
    return Registry(models, {**pairs, **user_pairs}, user_models, frozenset(user_pairs))


def _update_user_registry(kind: str, name: str, table: dict[str, Any], force: bool, must_resolve: list[str]) -> Path:
    """Write `table` as the user registry's models.NAME or pairs.NAME, keeping its other entries.
    Each spec of `must_resolve` must lead to a file in the registry as it will be (so that an entry
    that names itself is caught now, not at its first use)."""

    def update(data: dict[str, Any], path: Path) -> None:
        before = _merged_registry(data, path)  # a broken file is reported, never overwritten
        known = before.pairs if kind == "pairs" else {**before.models, **before.user_models}
        if name in known and not force:
            where = path if name in data.get(kind, {}) else "the packaged registry"
            raise BlendinError(f"{kind[:-1]} '{name}' exists in {where}: pass --force to replace it")
        data.setdefault(kind, {})[name] = table
        after = _merged_registry(data, path)
        for spec in must_resolve:
            try:
                found = resolve_model(spec, after)
            except BlendinError as e:
                raise BlendinError(f"{kind[:-1]} '{name}' does not resolve to a model: {e}") from None
            if not found.is_file():
                raise BlendinError(f"{kind[:-1]} '{name}' does not resolve to a model: {found}: no such file")

    if must_resolve:
        # first outside the lock: resolving may assemble or hash a large model, which other
        # edits need not wait for; under the lock it is then quick (sha256 stamps)
        update(read_registry_file(user_registry_path()), user_registry_path())
    return _edit_user_registry(update)


def _edit_user_registry(change: Callable[[dict[str, Any], Path], None]) -> Path:
    """Read the user registry, let `change` edit its tables (or refuse, raising), write them over
    the text it read, and return the registry's path. One blendin at a time: two `models add` run
    at once would each write its own entry over the file the other had not yet changed."""
    path = user_registry_path()
    lock = FileLock(str(path.with_name(f".{path.name}.lock")))  # the kernel frees it on any exit
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=EDIT_WAIT_S)
    except Timeout:
        raise BlendinError(f"{path}: another blendin has been changing it for {EDIT_WAIT_S:.0f} s; try again") from None
    except OSError as e:
        raise BlendinError(f"{path}: cannot lock it to change it: {e.strerror or e}") from None
    try:
        text = _registry_text(path)
        data = _parsed_registry(text, path)
        change(data, path)
        _write_registry_file(path, text, data)
    finally:
        lock.release()
    return path


REGISTRY_HEADER = (
    "# blendin's user registry, written by `blendin models add` and `blendin pair add`.\n"
    "# Its models and pairs replace the packaged ones of the same name.\n\n"
)


def registry_file_text(old_text: str | None, data: Mapping[str, Any]) -> str:
    """The registry file that holds `data`, written over `old_text` (the file as it is): only the
    entries that changed are rewritten, so the user's comments and layout stay. Whatever that
    gives must read back as `data`; if it does not, or the old text defeats the editor, the file
    is written afresh (its comments then lost, its entries never), and that must read back too."""
    import tomlkit  # only writers need it
    from tomlkit.exceptions import TOMLKitError

    if old_text is not None:
        try:
            document = tomlkit.parse(old_text)
            _update_document(document, data)
            text = tomlkit.dumps(document)
            if tomllib.loads(text) == data:
                return text
        except (TOMLKitError, ValueError, TypeError, KeyError):  # TOMLDecodeError is a ValueError
            pass
    text = REGISTRY_HEADER + tomlkit.dumps(dict(data))
    try:
        if tomllib.loads(text) == data:
            return text
    except ValueError:
        pass
    raise BlendinError(f"tomlkit {tomlkit.__version__} wrote a registry that does not read back: upgrade tomlkit")


def _update_document(document: MutableMapping[str, Any], data: Mapping[str, Any]) -> None:
    """Make the tables of a TOML document (tomlkit's, which keeps comments) those of `data`,
    touching only entries that differ."""
    for kind in ("models", "pairs"):
        if kind not in data:
            document.pop(kind, None)
            continue
        wanted = data[kind]
        if kind not in document:
            document[kind] = dict(wanted)
            continue
        tables = document[kind]
        for name in [name for name in tables if name not in wanted]:
            del tables[name]
        for name, table in wanted.items():
            if tables.get(name) != table:
                tables[name] = table


def _write_registry_file(path: Path, old_text: str | None, data: Mapping[str, Any]) -> None:
    """Replace the file at once (a temporary file renamed over it): a reader sees the old file or
    the new one, never half of one. A symbolic link is followed, not replaced."""
    text = registry_file_text(old_text, data)
    if len(text.encode("utf-8")) > MAX_REGISTRY_BYTES:
        raise BlendinError(f"{path}: would grow beyond {MAX_REGISTRY_BYTES >> 20} MiB; remove some entries first")
    try:
        replace_file(path, text)
    except OSError as e:
        raise BlendinError(f"{path}: cannot write it: {e.strerror or e}") from None


def check_name(name: str, kind: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise BlendinError(
            f"{kind} name {_quoted(name)} is not 1 to 64 letters, digits, '.', '_' or '-' starting with a letter or digit"
        )
    return name


def _existing_file(spec: str) -> str | None:
    """The absolute path of the file `spec` names, if it names one: an entry keeps it so, since a
    relative path would depend on the folder a later command runs in."""
    try:
        path = user_path(spec)
        return str(path.resolve()) if path.is_file() else None
    except (OSError, ValueError):  # not a usable path (a NUL byte, too long): the entry's checks say why
        return None


def _pair_settings(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The pair's settings as GenerationSettings values, checked by GenerationSettings."""
    given = {key: table[key] for key in PAIR_SETTINGS if key in table}
    for key, value in given.items():
        # GenerationSettings would read "0.5" or true as a number: a file's wrong type is an error.
        if not _has_type(value, value_type(key)) and not (key == "alpha" and value == ALPHA_AUTO):
            expected = {float: "a number", int: "a whole number", str: "a string"}[value_type(key)]
            raise BlendinError(f"{where}.{key} must be {expected}, not {_quoted(value)}")
    try:
        return GenerationSettings.checked(**given).model_dump(include=set(given))
    except BlendinError as e:
        raise BlendinError(f"{where}: {e}") from None


def _has_type(value: Any, kind: Any) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, but never a number in a registry
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _tables(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    tables = data.get(key, {})
    if not isinstance(tables, dict):
        raise BlendinError(f"{key} is not a table")
    return tables


def _check_keys(table: Any, known: tuple[str, ...], where: str) -> None:
    if not isinstance(table, dict):
        raise BlendinError(f"{where} is not a table")
    unknown = [key for key in table if key not in known]
    if unknown:
        raise BlendinError(f"{where}: unknown key {_quoted(unknown[0])} (known: {', '.join(known)})")


_UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")  # control characters, lone surrogates


def _check_text(value: Any, where: str, limit: int, may_be_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise BlendinError(f"{where} must be a string, not {_quoted(value)}")
    if not value and not may_be_empty:
        raise BlendinError(f"{where} is empty")
    if len(value) > limit:
        raise BlendinError(f"{where} is longer than {limit} characters")
    if _UNSAFE_CHARACTERS.search(value):
        raise BlendinError(f"{where} holds a control character: {_quoted(value)}")


def _quoted(value: Any) -> str:
    """A value from a file or a user in a message: on one line, and short."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
