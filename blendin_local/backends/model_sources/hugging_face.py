"""The Hugging Face hub cache: models--ORG--REPO/snapshots/COMMIT, refs/main naming the commit.
Named hf:ORG/REPO[:QUANT] or hf:ORG/REPO/FILE.gguf."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from blendin_local.backends.model_sources.folders import (
    COMMIT,
    MAX_REF_BYTES,
    gguf_files,
    models_among,
    parse_repo_spec,
    pick_file,
    read_small,
    short_specs,
    shown,
    subfolders,
)
from blendin_local.errors import BlendinError


def hub_cache() -> Path:
    """Where huggingface_hub keeps its cache (src/huggingface_hub/constants.py): $HF_HUB_CACHE,
    else the older $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, HF_HOME defaulting to
    $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _snapshot(repo_folder: Path, what: str) -> Path:
    """The snapshot refs/main points at: the files of the repo's main branch as last downloaded."""
    if not repo_folder.is_dir():
        raise BlendinError(f"{what}: not in the Hugging Face cache {shown(str(repo_folder.parent), 300)}")
    commit = read_small(repo_folder / "refs" / "main", MAX_REF_BYTES, what).decode("ascii", "replace").strip()
    if not COMMIT.fullmatch(commit):
        raise BlendinError(f"{what}: refs/main does not hold a commit hash")
    snapshot = repo_folder / "snapshots" / commit
    if not snapshot.is_dir():
        raise BlendinError(f"{what}: refs/main names commit {commit}, which has no snapshot folder")
    return snapshot


def resolve(text: str, models_folder: Path) -> Path:
    org, repo, selector, is_file = parse_repo_spec("hf", text)
    what = f"hf:{org}/{repo}"
    snapshot = _snapshot(hub_cache() / f"models--{org}--{repo}", what)
    return pick_file(snapshot, what, selector, is_file)


def model_repos(cache: Path) -> Iterator[tuple[str, str, str]]:
    """(folder, ORG, REPO) of every model repo in a cache of the hub's layout (models--ORG--REPO);
    datasets, spaces and repos without an organisation are left out. llama.cpp's cache has it too."""
    for folder in subfolders(cache):
        parts = folder.split("--")
        if len(parts) == 3 and parts[0] == "models":
            yield folder, parts[1], parts[2]


def files() -> Iterator[tuple[list[str], Path]]:
    cache = hub_cache()
    for folder, org, name in model_repos(cache):
        repo = f"{org}/{name}"
        try:
            snapshot = _snapshot(cache / folder, f"hf:{repo}")
        except BlendinError:
            continue
        models = models_among(gguf_files(snapshot))
        for file in models:
            yield short_specs("hf", repo, file, models), snapshot / file
