"""llama.cpp's own downloads (llama-cli / llama-server -hf), named llamacpp:USER/MODEL[:TAG],
llamacpp:USER/MODEL/FILE.gguf or llamacpp:FILE.gguf.

Two layouts. Since March 2026 (ggml-org/llama.cpp#20775, common/hf-cache.cpp) `-hf` keeps the
Hugging Face hub's layout, in $LLAMA_CACHE or else huggingface_hub's own cache, and moves older
downloads there on start-up. Before, it kept a flat folder (the legacy layout): a manifest per
repo and tag, and the files named USER_MODEL_FILE. A user may have either.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from blendin_local.backends.model_sources.folders import (
    COMMIT,
    FILE_PART,
    MAX_MANIFEST_BYTES,
    MAX_REF_BYTES,
    REPO_PART,
    SPLIT,
    candidates,
    entries,
    gguf_files,
    gguf_names,
    models_among,
    names,
    read_small,
    regular_file,
    short_specs,
    shown,
    split_first_part,
)
from blendin_local.backends.model_sources.hugging_face import hub_cache as hf_hub_cache
from blendin_local.backends.model_sources.hugging_face import model_repos
from blendin_local.errors import BlendinError
from blendin_local.user_paths import user_path

LEGACY_DEFAULT_TAG = "latest"
# What a tag may hold here (Q4_K_M, UD-Q4_K_XL, latest): it only goes into a file name built
# here, and into a pattern escaped as text.
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# llama.cpp's choice without a tag (common/download.cpp, find_best_model): the first of these
# quantizations the repo has, else its first model file.
DEFAULT_QUANTS = ("Q4_K_M", "Q8_0")
# GGUF files that ride along with a model and are none (download.cpp, gguf_filename_is_model):
# projectors, importance matrices, draft heads for speculative decoding.
_SIDECARS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")


def hub_cache() -> Path:
    """Where llama.cpp keeps `-hf` downloads in the hub layout (hf-cache.cpp,
    get_cache_directory): $LLAMA_CACHE, else huggingface_hub's cache, found by the same
    variables in the same order (hf_hub_cache)."""
    configured = os.environ.get("LLAMA_CACHE")
    return user_path(configured) if configured else hf_hub_cache()


def flat_cache_dir() -> Path:
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


def resolve(text: str, models_folder: Path) -> Path:
    """USER/MODEL[:TAG] as `llama-cli -hf` takes it offline, USER/MODEL/FILE.gguf as `-hf
    USER/MODEL -hff FILE.gguf` does, or a GGUF file of the flat cache by name."""
    if "/" not in text:
        cache = flat_cache_dir()
        if not FILE_PART.fullmatch(text) or not text.lower().endswith(".gguf"):
            raise BlendinError(f"llamacpp:{shown(text)}: give llamacpp:USER/MODEL[:TAG] or a .gguf file of the cache")
        return split_first_part(regular_file(cache / text, f"llamacpp:{text}"), f"llamacpp:{text}")
    repo, _, tag = text.partition(":")
    parts = repo.split("/")
    if (
        len(parts) < 2
        or not all(REPO_PART.fullmatch(p) for p in parts[:2])
        or (tag and (len(parts) > 2 or not _TAG.fullmatch(tag)))
        or (
            len(parts) > 2
            and (not parts[-1].lower().endswith(".gguf") or not all(FILE_PART.fullmatch(p) for p in parts[2:]))
        )
    ):
        raise BlendinError(
            f"llamacpp:{shown(text)}: give llamacpp:USER/MODEL[:TAG] as llama-cli -hf takes it,"
            " or llamacpp:USER/MODEL/FILE.gguf"
        )
    user, model = parts[:2]
    file = "/".join(parts[2:]) or None
    hub_folder = hub_cache() / f"models--{user}--{model}"
    if hub_folder.is_dir():
        return _hub_file(hub_folder, f"llamacpp:{text}", tag or None, file)
    if file is not None:
        raise BlendinError(f"llamacpp:{shown(text)}: not in llama.cpp's cache {shown(str(hub_folder.parent), 300)}")
    return _legacy_file(f"{user}/{model}", tag or LEGACY_DEFAULT_TAG)


def _hub_file(repo_folder: Path, what: str, tag: str | None, file: str | None) -> Path:
    """The file llama.cpp runs from a repo in the hub layout, offline: the snapshot of the
    branch it last fetched, then the named file, or the first file of the tag (find_best_model)."""
    snapshot = _snapshot(repo_folder, what)
    files = gguf_files(snapshot)
    if file is not None:
        chosen = [f for f in files if f.lower() == file.lower()]  # llama.cpp compares -hff without case
        if not chosen:
            raise BlendinError(f"{what}: no such file in the snapshot (files: {candidates(files)})")
        return split_first_part(regular_file(snapshot / chosen[0], what), what)
    models = [f for f in files if _is_model(f)]
    for quant in (tag,) if tag else DEFAULT_QUANTS:
        pattern = re.compile(re.escape(quant) + r"[.-]", re.IGNORECASE)
        chosen = [f for f in models if pattern.search(f)]
        if chosen:
            return split_first_part(regular_file(snapshot / chosen[0], what), what)
    if tag is None and models:
        return split_first_part(regular_file(snapshot / models[0], what), what)
    wanted = f"the tag {tag}" if tag else "a model"
    raise BlendinError(f"{what}: no GGUF file with {wanted} in the snapshot (models: {candidates(models)})")


def _is_model(file: str) -> bool:
    """A model file, by its first part if split, and none of the files that ride along."""
    name = file.rsplit("/", 1)[-1]
    split = SPLIT.fullmatch(file)
    return not any(s in name for s in _SIDECARS) and (split is None or split.group(2) == "00001")


def _snapshot(repo_folder: Path, what: str) -> Path:
    """The snapshot of the branch llama.cpp last fetched (hf-cache.cpp, get_cached_ref): refs/main,
    else the first other ref holding a commit hash."""
    refs = [e.name for e in entries(repo_folder / "refs") if e.is_file()]
    for ref in sorted(refs, key=lambda name: name != "main"):
        try:
            commit = read_small(repo_folder / "refs" / ref, MAX_REF_BYTES, what).decode("ascii", "replace").strip()
        except BlendinError:
            continue
        if COMMIT.fullmatch(commit) and (repo_folder / "snapshots" / commit).is_dir():
            return repo_folder / "snapshots" / commit
    raise BlendinError(f"{what}: no ref in {shown(str(repo_folder), 300)} names a downloaded snapshot")


def _legacy_file(repo: str, tag: str) -> Path:
    """The file a legacy manifest chose: manifest=USER=MODEL=TAG.json, its ggufFile.rfilename."""
    cache = flat_cache_dir()
    user, model = repo.split("/")
    what = f"llamacpp:{repo}:{tag}"
    manifest = cache / f"manifest={user}={model}={tag}.json"
    if not manifest.exists():
        tags = sorted(
            name.removeprefix(f"manifest={user}={model}=").removesuffix(".json")
            for name in names(cache)
            if name.startswith(f"manifest={user}={model}=") and name.endswith(".json")
        )
        raise BlendinError(
            f"{what}: not downloaded: no models--{user}--{model} in {shown(str(hub_cache()), 300)},"
            f" no manifest in {shown(str(cache), 300)} (tags there: {candidates(tags)})"
        )
    try:
        data = json.loads(read_small(manifest, MAX_MANIFEST_BYTES, what))
    except (ValueError, RecursionError):
        raise BlendinError(f"{what}: {shown(str(manifest), 300)} is not JSON") from None
    gguf = data.get("ggufFile") if isinstance(data, dict) else None
    file = gguf.get("rfilename") if isinstance(gguf, dict) else None
    if not isinstance(file, str) or not all(FILE_PART.fullmatch(p) for p in file.split("/")):
        raise BlendinError(f"{what}: the manifest names no GGUF file (ggufFile.rfilename)")
    # llama.cpp's name for it (common/arg.cpp): USER/MODEL_FILE with every '/' made '_'
    path = cache / f"{repo}_{file}".replace("/", "_")
    return split_first_part(regular_file(path, what), what)


def files() -> Iterator[tuple[list[str], Path]]:
    hub = hub_cache()
    if hub != hf_hub_cache():  # else they are huggingface_hub's cache, listed as hf:
        for folder, user, model in model_repos(hub):
            if not (REPO_PART.fullmatch(user) and REPO_PART.fullmatch(model)):
                continue
            repo = f"{user}/{model}"
            try:
                snapshot = _snapshot(hub / folder, f"llamacpp:{repo}")
            except BlendinError:
                continue
            models = [f for f in gguf_files(snapshot) if _is_model(f)]
            for file in models:
                yield short_specs("llamacpp", repo, file, models), snapshot / file
    cache = flat_cache_dir()
    named: set[Path] = set()
    for name in names(cache):
        parts = name.removesuffix(".json").split("=")
        if name.startswith("manifest=") and name.endswith(".json") and len(parts) == 4:
            user, model, tag = parts[1:]
            if not (REPO_PART.fullmatch(user) and REPO_PART.fullmatch(model) and _TAG.fullmatch(tag)):
                continue
            spec = f"llamacpp:{user}/{model}" + ("" if tag == LEGACY_DEFAULT_TAG else f":{tag}")
            try:
                path = _legacy_file(f"{user}/{model}", tag)
            except (BlendinError, OSError):
                continue  # a manifest whose file is gone, or unreadable: nothing to list
            named.add(path)
            yield [spec], path
    for name in models_among(gguf_names(cache)):
        # a file no manifest chose (a -hff or -mu download); a manifest's projector rides along
        # with its model, saved as USER_MODEL_mmproj-...gguf, and is no model
        if cache / name not in named and "mmproj" not in name.lower():
            yield [f"llamacpp:{name}"], cache / name
