"""GGUF files other tools keep on disk, named by a prefixed spec (docs/model_sources.md).

    ollama:NAME[:TAG], ollama:NAMESPACE/NAME[:TAG], ollama:HOST/NAMESPACE/NAME[:TAG]
    hf:ORG/REPO[:QUANT], hf:ORG/REPO/FILE.gguf           (the Hugging Face hub cache)
    lmstudio:PUBLISHER/REPO[:QUANT], lmstudio:PUBLISHER/REPO/FILE.gguf
    llm:ID, llm:gguf/ID, llm:ALIAS                       (a model llm-gguf registered)
    llamacpp:USER/MODEL[:TAG], llamacpp:USER/MODEL/FILE.gguf, llamacpp:FILE.gguf
                                                         (llama.cpp's -hf downloads)
    models:NAME                                          (blendin's own models folder)

Pure filesystem code: nothing here loads a model or touches the network. Every folder, manifest,
ref and link is hostile input. A spec is bounded and its parts checked against the character
rules of the tool that made the name, so no part can be `..` or hold a separator; a manifest is
read only if small, and its digest must be `sha256:` and 64 hex digits; the path returned is
built inside the source's folder (what a symlink there points to is the tool's business, as
Hugging Face's snapshots are links into its blobs), and must be a regular file. The exception is
llm-gguf, whose index names files wherever its user registered them: those paths must be
absolute and regular files. Anything wrong is one BlendinError line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from blendin_local.errors import BlendinError
from blendin_local.user_paths import user_path

MAX_SPEC = 512
MAX_MANIFEST_BYTES = 1 << 20  # an Ollama manifest is a few hundred bytes; a megabyte is not one
MAX_REF_BYTES = 256  # refs/main: a 40-digit commit hash and a newline
MAX_POINTER_BYTES = 4096  # ~/.lmstudio-home-pointer: one path
MAX_ENTRIES = 10_000  # folder entries looked at per search: a listing, not a crawl of the disk
MAX_DEPTH = 4  # folders below a snapshot or an LM Studio model folder
SHOWN_CANDIDATES = 10

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE, OLLAMA_DEFAULT_TAG = "registry.ollama.ai", "library", "latest"

# What a spec may contain at all; each source then checks its own parts.
_SPEC_CHARS = re.compile(r"[A-Za-z0-9._:/+-]+")
# Ollama's name parts (types/model/name.go, isValidPart): an alphanumeric or _ first, then these.
_OLLAMA_PART = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
# Ollama's blob names (manifest/paths.go, BlobsPath): only a sha256 digest, so none can leave blobs/.
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
# A Hugging Face repo id part; "--" is the cache's separator and ".." a parent, so neither.
_REPO_PART = re.compile(r"(?!.*--)(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_FILE_PART = re.compile(r"(?!\.\.?$)[A-Za-z0-9._+-]{1,255}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_QUANT = re.compile(r"[A-Za-z0-9_]{1,32}")
# llama.cpp's split files: <prefix>-%05d-of-%05d.gguf (llama.h, llama_model_load_from_file).
_SPLIT = re.compile(r"(.*)-(\d{5})-of-(\d{5})\.gguf")
# A file-name token that looks like a quantization (Q4_K_M, IQ4_XS, F16, BF16, TQ1_0, MXFP4_MOE):
# only used to offer a short spec in listings, which is then checked to name that very file.
_QUANT_TOKEN = re.compile(r"(?:[IT]?Q\d[A-Z0-9_]*|B?F(?:16|32)|MXFP4[A-Z0-9_]*)", re.IGNORECASE)


@dataclass(frozen=True)
class FoundModel:
    """A GGUF file found in a source, and the spec that names it."""

    source: str  # "models", "ollama", "hf", "lmstudio", "llm" or "llamacpp"
    spec: str
    path: Path


def source_of(spec: str) -> str | None:
    """The source a spec names by its prefix (`ollama:...` is "ollama"), or None for a plain name."""
    prefix, colon, _ = spec.partition(":")
    return prefix if colon and prefix in SOURCES else None


def resolve(spec: str, models_folder: Path) -> Path:
    """The GGUF file a prefixed spec names; one-line BlendinError if there is none or several."""
    source = source_of(spec)
    if source is None:
        raise BlendinError(f"'{_shown(spec)}' names no model source (known: {', '.join(f'{s}:' for s in SOURCES)})")
    rest = _checked_spec(spec)[len(source) + 1 :]
    try:
        return SOURCES[source](rest, models_folder)
    except OSError as e:  # a folder this user may not read, a name longer than the filesystem takes
        raise BlendinError(f"{_shown(spec)}: {e.strerror or e}") from None


def discover(models_folder: Path) -> list[FoundModel]:
    """Every GGUF file in the models folder, Ollama, the Hugging Face cache, LM Studio, llm and
    llama.cpp's cache, each with the shortest spec that resolves back to it (its path where none
    does)."""
    found = []
    for source, files in (  # generators: each reads its folders as it is iterated, in the try
        ("models", _models_folder_files(models_folder)),
        ("ollama", _ollama_files()),
        ("hf", _hf_files()),
        ("lmstudio", _lmstudio_files()),
        ("llm", _llm_files()),
        ("llamacpp", _llamacpp_files()),
    ):
        try:
            for specs, path in files:
                found.append(FoundModel(source, _first_naming(specs, path, models_folder), path))
        except OSError:
            continue  # a folder this user may not read: the rest of that source is not listed
    return found


def _first_naming(specs: list[str], path: Path, models_folder: Path) -> str:
    for spec in specs:
        try:
            if resolve(spec, models_folder) == path:
                return spec
        except BlendinError:
            continue
    return str(path)


def _checked_spec(spec: str) -> str:
    if len(spec) > MAX_SPEC:
        raise BlendinError(f"model spec '{_shown(spec)}' is {len(spec)} characters long (at most {MAX_SPEC})")
    if not _SPEC_CHARS.fullmatch(spec):
        raise BlendinError(f"model spec '{_shown(spec)}' has characters other than letters, digits and . _ - + : /")
    return spec


def _shown(text: str, limit: int = 80) -> str:
    """User or file text inside an error line: printable, on one line, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _candidates(names: list[str]) -> str:
    shown = ", ".join(_shown(n) for n in names[:SHOWN_CANDIDATES])
    more = len(names) - SHOWN_CANDIDATES
    return shown + (f" and {more} more" if more > 0 else "") if names else "none"


def _regular_file(path: Path, what: str) -> Path:
    """`path` if it is a regular file (through symlinks); else the one line saying what it is."""
    if path.is_symlink() and not path.exists():
        raise BlendinError(f"{what}: {_shown(str(path), 300)} is a dangling symlink")
    if not path.exists():
        raise BlendinError(f"{what}: {_shown(str(path), 300)} does not exist")
    if path.is_dir():
        raise BlendinError(f"{what}: {_shown(str(path), 300)} is a directory, not a file")
    if not path.is_file():
        raise BlendinError(f"{what}: {_shown(str(path), 300)} is not a regular file")
    return path


def _read_small(path: Path, limit: int, what: str) -> bytes:
    _regular_file(path, what)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise BlendinError(f"{what}: cannot read {_shown(str(path), 300)} ({e.strerror or e})") from None
    if len(data) > limit:
        raise BlendinError(f"{what}: {_shown(str(path), 300)} is larger than {limit} bytes")
    return data


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """A folder's entries, sorted by name, at most MAX_ENTRIES of them; none if it is unreadable."""
    try:
        with os.scandir(folder) as it:
            entries = []
            for entry in it:
                entries.append(entry)
                if len(entries) >= MAX_ENTRIES:
                    break
    except OSError:
        return []
    return sorted(entries, key=lambda e: e.name)


def _subfolders(folder: Path) -> list[str]:
    """Names of the folders in `folder`, through symlinks (a fixed depth below, so no loop)."""
    return [e.name for e in _entries(folder) if e.is_dir()]


# -- blendin's models folder -------------------------------------------------------------------


def _resolve_models_folder(name: str, models_folder: Path) -> Path:
    if not _FILE_PART.fullmatch(name):
        raise BlendinError(f"models:{_shown(name)}: give a file name in the models folder, not a path")
    path = models_folder / name
    for candidate in (path, path.with_name(path.name + ".gguf")):
        if candidate.is_file():
            return candidate
    names = sorted(n.removesuffix(".gguf") for n in _gguf_names(models_folder))
    raise BlendinError(
        f"models:{name}: no such file in {_shown(str(models_folder), 300)} (there: {_candidates(names)})"
    )


def _gguf_names(folder: Path) -> list[str]:
    return [e.name for e in _entries(folder) if e.name.endswith(".gguf") and e.is_file()]


def _models_folder_files(models_folder: Path) -> Iterator[tuple[list[str], Path]]:
    for name in _gguf_names(models_folder):
        yield [f"models:{name.removesuffix('.gguf')}", f"models:{name}"], models_folder / name


# -- Ollama ------------------------------------------------------------------------------------


def ollama_models_dir() -> Path:
    """$OLLAMA_MODELS, else ~/.ollama/models (envconfig/config.go, Models). Ollama's Linux
    service keeps its own under /usr/share/ollama/.ollama/models: point OLLAMA_MODELS there."""
    return user_path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    model: str
    tag: str

    def spec(self) -> str:
        """The shortest spec, as Ollama shows a name (DisplayShortest): defaults left out."""
        if self.host != OLLAMA_DEFAULT_HOST:
            return f"ollama:{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace != OLLAMA_DEFAULT_NAMESPACE:
            return f"ollama:{self.namespace}/{self.model}:{self.tag}"
        return f"ollama:{self.model}:{self.tag}"


def parse_ollama_name(text: str) -> OllamaName:
    """[HOST/][NAMESPACE/]MODEL[:TAG], read as Ollama reads it (ParseNameBare): the tag is what
    follows the last ':' after the last '/', so a host may carry a port."""
    path, tag = text, OLLAMA_DEFAULT_TAG
    if text.rfind(":") > text.rfind("/"):
        path, _, tag = text.rpartition(":")
    parts = path.split("/")
    if len(parts) > 3:
        raise BlendinError(f"ollama:{_shown(text)}: a name is [HOST/][NAMESPACE/]MODEL[:TAG]")
    host, namespace = OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    name = OllamaName(host, namespace, model, tag)
    for kind, pattern in _OLLAMA_PART.items():
        if not pattern.fullmatch(getattr(name, kind)):
            raise BlendinError(f"ollama:{_shown(text)}: '{_shown(getattr(name, kind))}' is not a valid Ollama {kind}")
    return name


def _resolve_ollama(text: str, models_folder: Path) -> Path:
    return ollama_model_blob(parse_ollama_name(text), ollama_models_dir())


def ollama_model_blob(name: OllamaName, root: Path) -> Path:
    """The GGUF blob of an Ollama model: its manifest's one layer of the model media type."""
    what = name.spec()
    model_folder = root / "manifests" / name.host / name.namespace / name.model
    manifest = model_folder / name.tag
    if not manifest.exists() and not manifest.is_symlink():
        if model_folder.is_dir():
            tags = [f"{name.model}:{t}" for t in sorted(e.name for e in _entries(model_folder))]
            raise BlendinError(f"{what}: no such tag in {_shown(str(root), 300)} (tags: {_candidates(tags)})")
        raise BlendinError(f"{what}: no manifest for this model in {_shown(str(root), 300)} (set OLLAMA_MODELS?)")
    layers = _manifest_layers(_read_small(manifest, MAX_MANIFEST_BYTES, what), what)
    models = [layer for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE]
    if len(models) != 1:
        types = sorted({t for layer in layers if isinstance(t := layer.get("mediaType"), str)})
        count = "no layer" if not models else f"{len(models)} layers"
        raise BlendinError(
            f"{what}: the manifest has {count} of type {OLLAMA_MODEL_MEDIA_TYPE} (its layers: {_candidates(types)})"
        )
    digest, size = models[0].get("digest"), models[0].get("size")
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise BlendinError(f"{what}: the model layer's digest is not sha256:<64 hex digits>")
    blob = _regular_file(root / "blobs" / f"sha256-{match.group(1)}", what)
    if isinstance(size, int) and not isinstance(size, bool) and blob.stat().st_size != size:
        raise BlendinError(
            f"{what}: {blob} is {blob.stat().st_size} bytes, the manifest says {size} (an unfinished pull?)"
        )
    return blob


def _manifest_layers(data: bytes, what: str) -> list[dict]:
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise BlendinError(f"{what}: the manifest is not JSON") from None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise BlendinError(f"{what}: the manifest has no list of layers")
    return layers


def _ollama_files() -> Iterator[tuple[list[str], Path]]:
    """Every model with a manifest, found as Ollama finds them (manifests/*/*/*/*)."""
    root = ollama_models_dir()
    manifests = root / "manifests"
    for host in _subfolders(manifests):
        for namespace in _subfolders(manifests / host):
            for model in _subfolders(manifests / host / namespace):
                for tag in _entries(manifests / host / namespace / model):
                    try:
                        name = parse_ollama_name(f"{host}/{namespace}/{model}:{tag.name}")
                        yield [name.spec()], ollama_model_blob(name, root)
                    except BlendinError:
                        continue  # `blendin models path` with its spec says what is wrong


# -- files in a model folder: Hugging Face snapshots and LM Studio -------------------------------


def _gguf_files(folder: Path) -> list[str]:
    """GGUF files below `folder` (relative paths, '/'-separated, sorted), bounded in depth and count."""
    found: list[str] = []
    pending = [(folder, "", 0)]
    seen = 0
    while pending and seen < MAX_ENTRIES:
        current, prefix, depth = pending.pop()
        for entry in _entries(current):
            seen += 1
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if depth < MAX_DEPTH:
                    pending.append((Path(entry.path), relative + "/", depth + 1))
            elif entry.name.lower().endswith(".gguf"):
                found.append(relative)
    return sorted(found)


def _models_among(files: list[str]) -> list[str]:
    """The files that are each one model: a split model by its first part, and no multimodal
    projectors (mmproj-*.gguf, which ride along with a model and are not one)."""
    return [
        f
        for f in files
        if not f.rsplit("/", 1)[-1].lower().startswith("mmproj")
        and ((split := _SPLIT.fullmatch(f)) is None or split.group(2) == "00001")
    ]


def _quant_matches(file: str, quant: str) -> bool:
    """`quant` in the file's name, case-insensitively, not inside a longer word: Q4_K is not
    Q4_K_M (no letter, digit or _ may follow), but model_Q4_K_M names Q4_K_M."""
    name = file.rsplit("/", 1)[-1]
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", name, re.IGNORECASE) is not None


def _pick_file(folder: Path, what: str, selector: str | None, is_file: bool) -> Path:
    """The model in a model folder that `selector` names: a relative file path, a quantization,
    or (None) the only model there."""
    if is_file:
        assert selector is not None
        return _split_first_part(_regular_file(folder / selector, what), what)
    files = _models_among(_gguf_files(folder))
    if selector is not None:
        chosen = [f for f in files if _quant_matches(f, selector)]
        if not chosen:
            raise BlendinError(f"{what}: no GGUF file with '{selector}' in its name (files: {_candidates(files)})")
    elif not files:
        raise BlendinError(f"{what}: no GGUF files in {_shown(str(folder), 300)}")
    else:
        chosen = files
    if len(chosen) > 1:
        raise BlendinError(f"{what}: {len(chosen)} GGUF files match; add :QUANT or a file name: {_candidates(chosen)}")
    return _split_first_part(_regular_file(folder / chosen[0], what), what)


def _split_first_part(path: Path, what: str) -> Path:
    """A split model is loaded by llama.cpp from its first part, which finds the others next to
    it by name: so the spec must name the first part, and all parts must be there."""
    split = _SPLIT.fullmatch(path.name)
    if split is None:
        return path
    prefix, number, count = split.group(1), int(split.group(2)), int(split.group(3))
    if number != 1:
        raise BlendinError(f"{what}: {path.name} is part {number} of a split model; name its first part")
    missing = [
        f"{prefix}-{i:05d}-of-{count:05d}.gguf"
        for i in range(2, count + 1)
        if not path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf").is_file()
    ]
    if missing:
        raise BlendinError(f"{what}: parts of the split model are missing: {_candidates(missing)}")
    return path


def _parse_repo_spec(source: str, text: str) -> tuple[str, str, str | None, bool]:
    """ORG/REPO[:QUANT] or ORG/REPO/FILE.gguf -> (org, repo, quant or file, whether a file)."""
    path, _, quant = text.partition(":")
    parts = path.split("/")
    if len(parts) < 2 or not all(_REPO_PART.fullmatch(p) for p in parts[:2]):
        raise BlendinError(f"{source}:{_shown(text)}: give {source}:ORG/REPO[:QUANT] or {source}:ORG/REPO/FILE.gguf")
    if len(parts) > 2:
        if quant or not parts[-1].lower().endswith(".gguf") or not all(_FILE_PART.fullmatch(p) for p in parts[2:]):
            raise BlendinError(f"{source}:{_shown(text)}: a file is named by its path in the repo, ending in .gguf")
        return parts[0], parts[1], "/".join(parts[2:]), True
    if quant and not _QUANT.fullmatch(quant):
        raise BlendinError(f"{source}:{_shown(text)}: '{quant}' is not a quantization name like Q4_K_M")
    return parts[0], parts[1], quant or None, False


def _short_specs(source: str, repo: str, file: str, files: list[str]) -> list[str]:
    """Specs that may name `file` of a repo, shortest first; the caller keeps the first that does."""
    stem = file.rsplit("/", 1)[-1].removesuffix(".gguf")
    quants = [t for t in re.split(r"[-.]", stem) if _QUANT_TOKEN.fullmatch(t)]
    return [f"{source}:{repo}", *(f"{source}:{repo}:{q}" for q in quants), f"{source}:{repo}/{file}"]


# -- the Hugging Face hub cache ----------------------------------------------------------------


def hf_hub_cache() -> Path:
    """Where huggingface_hub keeps its cache (src/huggingface_hub/constants.py): $HF_HUB_CACHE,
    else the older $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, HF_HOME defaulting to
    $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _hf_snapshot(repo_folder: Path, what: str) -> Path:
    """The snapshot refs/main points at: the files of the repo's main branch as last downloaded."""
    if not repo_folder.is_dir():
        raise BlendinError(f"{what}: not in the Hugging Face cache {_shown(str(repo_folder.parent), 300)}")
    commit = _read_small(repo_folder / "refs" / "main", MAX_REF_BYTES, what).decode("ascii", "replace").strip()
    if not _COMMIT.fullmatch(commit):
        raise BlendinError(f"{what}: refs/main does not hold a commit hash")
    snapshot = repo_folder / "snapshots" / commit
    if not snapshot.is_dir():
        raise BlendinError(f"{what}: refs/main names commit {commit}, which has no snapshot folder")
    return snapshot


def _resolve_hf(text: str, models_folder: Path) -> Path:
    org, repo, selector, is_file = _parse_repo_spec("hf", text)
    what = f"hf:{org}/{repo}"
    snapshot = _hf_snapshot(hf_hub_cache() / f"models--{org}--{repo}", what)
    return _pick_file(snapshot, what, selector, is_file)


def _hf_files() -> Iterator[tuple[list[str], Path]]:
    cache = hf_hub_cache()
    for folder in _subfolders(cache):
        parts = folder.split("--")
        if len(parts) != 3 or parts[0] != "models":
            continue  # datasets, spaces, and repos without an organisation
        repo = f"{parts[1]}/{parts[2]}"
        try:
            snapshot = _hf_snapshot(cache / folder, f"hf:{repo}")
        except BlendinError:
            continue
        files = _models_among(_gguf_files(snapshot))
        for file in files:
            yield _short_specs("hf", repo, file, files), snapshot / file


# -- LM Studio ---------------------------------------------------------------------------------


def lmstudio_models_dirs() -> list[Path]:
    """LM Studio's models folders that exist, the one it uses first.

    LM Studio's home is the path in ~/.lmstudio-home-pointer, else ~/.cache/lm-studio (before
    0.3) if it exists, else ~/.lmstudio (lmstudio-js, findLMStudioHome.ts). Its models are in
    the "downloadsFolder" of the home's settings.json (Settings > Models Directory), else
    <home>/models. The older default folders are searched too, after it."""
    home_dir = Path.home()
    pointer = home_dir / ".lmstudio-home-pointer"
    home = None
    if pointer.is_file():
        try:
            text = _read_small(pointer, MAX_POINTER_BYTES, "LM Studio").decode("utf-8").strip()
            home = Path(text) if text and Path(text).is_absolute() else None
        except (BlendinError, UnicodeDecodeError):
            home = None  # a bad pointer is not worth failing a search over: the defaults remain
    legacy = home_dir / ".cache" / "lm-studio"
    home = home or (legacy if legacy.is_dir() else home_dir / ".lmstudio")
    folders = [_lmstudio_downloads_folder(home), home / "models", home_dir / ".lmstudio" / "models", legacy / "models"]
    unique = list(dict.fromkeys(f for f in folders if f is not None))
    return [f for f in unique if f.is_dir()]


def _lmstudio_downloads_folder(home: Path) -> Path | None:
    try:
        settings = json.loads(_read_small(home / "settings.json", MAX_MANIFEST_BYTES, "LM Studio"))
    except (BlendinError, ValueError, RecursionError):
        return None
    folder = settings.get("downloadsFolder") if isinstance(settings, dict) else None
    return Path(folder) if isinstance(folder, str) and folder and Path(folder).is_absolute() else None


def _resolve_lmstudio(text: str, models_folder: Path) -> Path:
    publisher, repo, selector, is_file = _parse_repo_spec("lmstudio", text)
    what = f"lmstudio:{publisher}/{repo}"
    folders = lmstudio_models_dirs()
    for folder in folders:
        if (folder / publisher / repo).is_dir():
            return _pick_file(folder / publisher / repo, what, selector, is_file)
    searched = ", ".join(str(f) for f in folders) or "no LM Studio models folder exists"
    raise BlendinError(f"{what}: not in LM Studio's models folders ({_shown(searched, 300)})")


def _lmstudio_files() -> Iterator[tuple[list[str], Path]]:
    for folder in lmstudio_models_dirs():
        for publisher in _subfolders(folder):
            for repo in _subfolders(folder / publisher):
                files = _models_among(_gguf_files(folder / publisher / repo))
                for file in files:
                    specs = _short_specs("lmstudio", f"{publisher}/{repo}", file, files)
                    yield specs, folder / publisher / repo / file


# -- llm (Simon Willison's), through its llm-gguf plugin ------------------------------------------


def llm_user_dir() -> Path:
    """llm's folder (llm/__init__.py, user_dir): $LLM_USER_PATH, else click's application folder
    for io.datasette.llm (~/.config/io.datasette.llm on Linux, ~/Library/Application
    Support/io.datasette.llm on macOS)."""
    configured = os.environ.get("LLM_USER_PATH")
    return user_path(configured) if configured else Path(click.get_app_dir("io.datasette.llm"))


def llm_gguf_models(root: Path) -> dict[str, tuple[str, list[str]]]:
    """llm-gguf's index, gguf/models.json under llm's folder: model id -> (path, aliases), as
    `llm gguf download-model` and `llm gguf register-model` write it. Entries of another shape
    are left out; a missing index is an empty one."""
    index = root / "gguf" / "models.json"
    if not index.exists():
        return {}
    try:
        data = json.loads(_read_small(index, MAX_MANIFEST_BYTES, "llm"))
    except (ValueError, RecursionError):
        raise BlendinError(f"llm: {_shown(str(index), 300)} is not JSON") from None
    if not isinstance(data, dict):
        raise BlendinError(f"llm: {_shown(str(index), 300)} is not a JSON object of models")
    models = {}
    for model_id, info in data.items():
        path = info.get("path") if isinstance(info, dict) else None
        if isinstance(path, str) and path:
            aliases = info.get("aliases")
            models[model_id] = (path, [a for a in aliases if isinstance(a, str)] if isinstance(aliases, list) else [])
    return models


def _resolve_llm(text: str, models_folder: Path) -> Path:
    """llm:ID (what `llm -m gguf/ID` runs; gguf/ID too) or llm:ALIAS."""
    name = text.removeprefix("gguf/")
    root = llm_user_dir()
    models = llm_gguf_models(root)
    found = models.get(name) or next((entry for entry in models.values() if name in entry[1]), None)
    if found is None:
        known = sorted({*models, *(alias for _, aliases in models.values() for alias in aliases)})
        raise BlendinError(
            f"llm:{_shown(text)}: no such model or alias in {_shown(str(root / 'gguf' / 'models.json'), 300)}"
            f" (there: {_candidates(known)})"
        )
    path = Path(found[0])
    if not path.is_absolute():
        raise BlendinError(f"llm:{_shown(text)}: its path {_shown(found[0], 300)} is not absolute")
    return _regular_file(path, f"llm:{_shown(text)}")


def _llm_files() -> Iterator[tuple[list[str], Path]]:
    try:
        models = llm_gguf_models(llm_user_dir())
    except BlendinError:
        return  # a broken index lists nothing; naming one of its models says why
    for model_id, (path, aliases) in models.items():
        if Path(path).is_absolute() and Path(path).is_file():  # naming the others says what is wrong
            yield [f"llm:{model_id}", *(f"llm:{alias}" for alias in aliases)], Path(path)


# -- llama.cpp's own download cache (llama-cli / llama-server -hf) ----------------------------------
# Two layouts. Since March 2026 (ggml-org/llama.cpp#20775, common/hf-cache.cpp) `-hf` keeps the
# Hugging Face hub's layout, in $LLAMA_CACHE or else huggingface_hub's own cache, and moves older
# downloads there on start-up. Before, it kept a flat folder (the legacy layout below): a
# manifest per repo and tag, and the files named USER_MODEL_FILE. A user may have either.

LLAMACPP_LEGACY_DEFAULT_TAG = "latest"
# What a tag may hold here (Q4_K_M, UD-Q4_K_XL, latest): it only goes into a file name built
# here, and into a pattern escaped as text.
_LLAMACPP_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# llama.cpp's choice without a tag (common/download.cpp, find_best_model): the first of these
# quantizations the repo has, else its first model file.
LLAMACPP_DEFAULT_QUANTS = ("Q4_K_M", "Q8_0")
# GGUF files that ride along with a model and are none (download.cpp, gguf_filename_is_model):
# projectors, importance matrices, draft heads for speculative decoding.
_LLAMACPP_SIDECARS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")


def llamacpp_hub_cache() -> Path:
    """Where llama.cpp keeps `-hf` downloads in the hub layout (hf-cache.cpp,
    get_cache_directory): $LLAMA_CACHE, else huggingface_hub's cache, found by the same
    variables in the same order (hf_hub_cache)."""
    configured = os.environ.get("LLAMA_CACHE")
    return user_path(configured) if configured else hf_hub_cache()


def llamacpp_cache_dir() -> Path:
    """llama.cpp's flat cache (common.cpp, fs_get_cache_directory): the legacy `-hf` downloads,
    and still `-mu` and Docker ones. $LLAMA_CACHE, else llama.cpp in $XDG_CACHE_HOME or ~/.cache
    on Linux, ~/Library/Caches/llama.cpp on macOS, %LOCALAPPDATA%\\llama.cpp on Windows."""
    configured = os.environ.get("LLAMA_CACHE")
    if configured:
        return user_path(configured)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "llama.cpp"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "llama.cpp"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llama.cpp"


def _resolve_llamacpp(text: str, models_folder: Path) -> Path:
    """USER/MODEL[:TAG] as `llama-cli -hf` takes it offline, USER/MODEL/FILE.gguf as `-hf
    USER/MODEL -hff FILE.gguf` does, or a GGUF file of the flat cache by name."""
    if "/" not in text:
        cache = llamacpp_cache_dir()
        if not _FILE_PART.fullmatch(text) or not text.lower().endswith(".gguf"):
            raise BlendinError(f"llamacpp:{_shown(text)}: give llamacpp:USER/MODEL[:TAG] or a .gguf file of the cache")
        return _split_first_part(_regular_file(cache / text, f"llamacpp:{text}"), f"llamacpp:{text}")
    repo, _, tag = text.partition(":")
    parts = repo.split("/")
    if (
        len(parts) < 2
        or not all(_REPO_PART.fullmatch(p) for p in parts[:2])
        or (tag and (len(parts) > 2 or not _LLAMACPP_TAG.fullmatch(tag)))
        or (
            len(parts) > 2
            and (not parts[-1].lower().endswith(".gguf") or not all(_FILE_PART.fullmatch(p) for p in parts[2:]))
        )
    ):
        raise BlendinError(
            f"llamacpp:{_shown(text)}: give llamacpp:USER/MODEL[:TAG] as llama-cli -hf takes it,"
            " or llamacpp:USER/MODEL/FILE.gguf"
        )
    user, model = parts[:2]
    file = "/".join(parts[2:]) or None
    hub_folder = llamacpp_hub_cache() / f"models--{user}--{model}"
    if hub_folder.is_dir():
        return _llamacpp_hub_file(hub_folder, f"llamacpp:{text}", tag or None, file)
    if file is not None:
        raise BlendinError(f"llamacpp:{_shown(text)}: not in llama.cpp's cache {_shown(str(hub_folder.parent), 300)}")
    return _llamacpp_legacy_file(f"{user}/{model}", tag or LLAMACPP_LEGACY_DEFAULT_TAG)


def _llamacpp_hub_file(repo_folder: Path, what: str, tag: str | None, file: str | None) -> Path:
    """The file llama.cpp runs from a repo in the hub layout, offline: the snapshot of the
    branch it last fetched, then the named file, or the first file of the tag (find_best_model)."""
    snapshot = _llamacpp_snapshot(repo_folder, what)
    files = _gguf_files(snapshot)
    if file is not None:
        chosen = [f for f in files if f.lower() == file.lower()]  # llama.cpp compares -hff without case
        if not chosen:
            raise BlendinError(f"{what}: no such file in the snapshot (files: {_candidates(files)})")
        return _split_first_part(_regular_file(snapshot / chosen[0], what), what)
    models = [f for f in files if _llamacpp_is_model(f)]
    for quant in (tag,) if tag else LLAMACPP_DEFAULT_QUANTS:
        pattern = re.compile(re.escape(quant) + r"[.-]", re.IGNORECASE)
        chosen = [f for f in models if pattern.search(f)]
        if chosen:
            return _split_first_part(_regular_file(snapshot / chosen[0], what), what)
    if tag is None and models:
        return _split_first_part(_regular_file(snapshot / models[0], what), what)
    wanted = f"the tag {tag}" if tag else "a model"
    raise BlendinError(f"{what}: no GGUF file with {wanted} in the snapshot (models: {_candidates(models)})")


def _llamacpp_is_model(file: str) -> bool:
    """A model file, by its first part if split, and none of the files that ride along."""
    name = file.rsplit("/", 1)[-1]
    split = _SPLIT.fullmatch(file)
    return not any(s in name for s in _LLAMACPP_SIDECARS) and (split is None or split.group(2) == "00001")


def _llamacpp_snapshot(repo_folder: Path, what: str) -> Path:
    """The snapshot of the branch llama.cpp last fetched (hf-cache.cpp, get_cached_ref): refs/main,
    else the first other ref holding a commit hash."""
    refs = [e.name for e in _entries(repo_folder / "refs") if e.is_file()]
    for ref in sorted(refs, key=lambda name: name != "main"):
        try:
            commit = _read_small(repo_folder / "refs" / ref, MAX_REF_BYTES, what).decode("ascii", "replace").strip()
        except BlendinError:
            continue
        if _COMMIT.fullmatch(commit) and (repo_folder / "snapshots" / commit).is_dir():
            return repo_folder / "snapshots" / commit
    raise BlendinError(f"{what}: no ref in {_shown(str(repo_folder), 300)} names a downloaded snapshot")


def _llamacpp_legacy_file(repo: str, tag: str) -> Path:
    """The file a legacy manifest chose: manifest=USER=MODEL=TAG.json, its ggufFile.rfilename."""
    cache = llamacpp_cache_dir()
    user, model = repo.split("/")
    what = f"llamacpp:{repo}:{tag}"
    manifest = cache / f"manifest={user}={model}={tag}.json"
    if not manifest.exists():
        tags = sorted(
            name.removeprefix(f"manifest={user}={model}=").removesuffix(".json")
            for name in _names(cache)
            if name.startswith(f"manifest={user}={model}=") and name.endswith(".json")
        )
        raise BlendinError(
            f"{what}: not downloaded: no models--{user}--{model} in {_shown(str(llamacpp_hub_cache()), 300)},"
            f" no manifest in {_shown(str(cache), 300)} (tags there: {_candidates(tags)})"
        )
    try:
        data = json.loads(_read_small(manifest, MAX_MANIFEST_BYTES, what))
    except (ValueError, RecursionError):
        raise BlendinError(f"{what}: {_shown(str(manifest), 300)} is not JSON") from None
    gguf = data.get("ggufFile") if isinstance(data, dict) else None
    file = gguf.get("rfilename") if isinstance(gguf, dict) else None
    if not isinstance(file, str) or not all(_FILE_PART.fullmatch(p) for p in file.split("/")):
        raise BlendinError(f"{what}: the manifest names no GGUF file (ggufFile.rfilename)")
    # llama.cpp's name for it (common/arg.cpp): USER/MODEL_FILE with every '/' made '_'
    path = cache / f"{repo}_{file}".replace("/", "_")
    return _split_first_part(_regular_file(path, what), what)


def _names(folder: Path) -> list[str]:
    return [e.name for e in _entries(folder)]


def _llamacpp_files() -> Iterator[tuple[list[str], Path]]:
    hub = llamacpp_hub_cache()
    if hub != hf_hub_cache():  # else they are huggingface_hub's cache, listed as hf:
        for folder in _subfolders(hub):
            parts = folder.split("--")
            if len(parts) != 3 or parts[0] != "models" or not all(_REPO_PART.fullmatch(p) for p in parts[1:]):
                continue
            repo = f"{parts[1]}/{parts[2]}"
            try:
                snapshot = _llamacpp_snapshot(hub / folder, f"llamacpp:{repo}")
            except BlendinError:
                continue
            models = [f for f in _gguf_files(snapshot) if _llamacpp_is_model(f)]
            for file in models:
                yield _short_specs("llamacpp", repo, file, models), snapshot / file
    cache = llamacpp_cache_dir()
    named: set[Path] = set()
    for name in _names(cache):
        parts = name.removesuffix(".json").split("=")
        if name.startswith("manifest=") and name.endswith(".json") and len(parts) == 4:
            user, model, tag = parts[1:]
            if not (_REPO_PART.fullmatch(user) and _REPO_PART.fullmatch(model) and _LLAMACPP_TAG.fullmatch(tag)):
                continue
            spec = f"llamacpp:{user}/{model}" + ("" if tag == LLAMACPP_LEGACY_DEFAULT_TAG else f":{tag}")
            try:
                path = _llamacpp_legacy_file(f"{user}/{model}", tag)
            except (BlendinError, OSError):
                continue  # a manifest whose file is gone, or unreadable: nothing to list
            named.add(path)
            yield [spec], path
    for name in _models_among(_gguf_names(cache)):
        # a file no manifest chose (a -hff or -mu download); a manifest's projector rides along
        # with its model, saved as USER_MODEL_mmproj-...gguf, and is no model
        if cache / name not in named and "mmproj" not in name.lower():
            yield [f"llamacpp:{name}"], cache / name


SOURCES: dict[str, Callable[[str, Path], Path]] = {
    "models": _resolve_models_folder,
    "ollama": _resolve_ollama,
    "hf": _resolve_hf,
    "lmstudio": _resolve_lmstudio,
    "llm": _resolve_llm,
    "llamacpp": _resolve_llamacpp,
}
