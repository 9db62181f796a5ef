"""blendin's own models folder: models:NAME is NAME or NAME.gguf there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from blendin_local.backends.model_sources.folders import FILE_PART, candidates, gguf_names, shown
from blendin_local.errors import BlendinError


def resolve(name: str, models_folder: Path) -> Path:
    if not FILE_PART.fullmatch(name):
        raise BlendinError(f"models:{shown(name)}: give a file name in the models folder, not a path")
    path = models_folder / name
    for candidate in (path, path.with_name(path.name + ".gguf")):
        if candidate.is_file():
            return candidate
    names = sorted(n.removesuffix(".gguf") for n in gguf_names(models_folder))
    raise BlendinError(f"models:{name}: no such file in {shown(str(models_folder), 300)} (there: {candidates(names)})")


def files(models_folder: Path) -> Iterator[tuple[list[str], Path]]:
    for name in gguf_names(models_folder):
        yield [f"models:{name.removesuffix('.gguf')}", f"models:{name}"], models_folder / name
