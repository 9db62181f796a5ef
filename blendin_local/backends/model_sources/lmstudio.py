"""LM Studio's models folders: PUBLISHER/REPO/FILE.gguf, named lmstudio:PUBLISHER/REPO[:QUANT] or
lmstudio:PUBLISHER/REPO/FILE.gguf."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from blendin_local.backends.model_sources.folders import (
    MAX_MANIFEST_BYTES,
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

MAX_POINTER_BYTES = 4096  # ~/.lmstudio-home-pointer: one path


def models_dirs() -> list[Path]:
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
            text = read_small(pointer, MAX_POINTER_BYTES, "LM Studio").decode("utf-8").strip()
            home = Path(text) if text and Path(text).is_absolute() else None
        except (BlendinError, UnicodeDecodeError):
            home = None  # a bad pointer is not worth failing a search over: the defaults remain
    legacy = home_dir / ".cache" / "lm-studio"
    home = home or (legacy if legacy.is_dir() else home_dir / ".lmstudio")
    folders = [_downloads_folder(home), home / "models", home_dir / ".lmstudio" / "models", legacy / "models"]
    unique = list(dict.fromkeys(f for f in folders if f is not None))
    return [f for f in unique if f.is_dir()]


def _downloads_folder(home: Path) -> Path | None:
    try:
        settings = json.loads(read_small(home / "settings.json", MAX_MANIFEST_BYTES, "LM Studio"))
    except (BlendinError, ValueError, RecursionError):
        return None
    folder = settings.get("downloadsFolder") if isinstance(settings, dict) else None
    return Path(folder) if isinstance(folder, str) and folder and Path(folder).is_absolute() else None


def resolve(text: str, models_folder: Path) -> Path:
    publisher, repo, selector, is_file = parse_repo_spec("lmstudio", text)
    what = f"lmstudio:{publisher}/{repo}"
    folders = models_dirs()
    for folder in folders:
        if (folder / publisher / repo).is_dir():
            return pick_file(folder / publisher / repo, what, selector, is_file)
    searched = ", ".join(str(f) for f in folders) or "no LM Studio models folder exists"
    raise BlendinError(f"{what}: not in LM Studio's models folders ({shown(searched, 300)})")


def files() -> Iterator[tuple[list[str], Path]]:
    for folder in models_dirs():
        for publisher in subfolders(folder):
            for repo in subfolders(folder / publisher):
                models = models_among(gguf_files(folder / publisher / repo))
                for file in models:
                    specs = short_specs("lmstudio", f"{publisher}/{repo}", file, models)
                    yield specs, folder / publisher / repo / file
