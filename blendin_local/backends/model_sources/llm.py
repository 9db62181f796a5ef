"""llm (Simon Willison's), through its llm-gguf plugin: gguf/models.json in llm's folder, model id
-> path and aliases. Named llm:ID, llm:gguf/ID or llm:ALIAS."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import click

from blendin_local.backends.model_sources.folders import MAX_MANIFEST_BYTES, candidates, read_small, regular_file, shown
from blendin_local.errors import BlendinError
from blendin_local.user_paths import user_path


def user_dir() -> Path:
    """llm's folder (llm/__init__.py, user_dir): $LLM_USER_PATH, else click's application folder
    for io.datasette.llm (~/.config/io.datasette.llm on Linux, ~/Library/Application
    Support/io.datasette.llm on macOS)."""
    configured = os.environ.get("LLM_USER_PATH")
    return user_path(configured) if configured else Path(click.get_app_dir("io.datasette.llm"))


def gguf_models(root: Path) -> dict[str, tuple[str, list[str]]]:
    """llm-gguf's index, gguf/models.json under llm's folder: model id -> (path, aliases), as
    `llm gguf download-model` and `llm gguf register-model` write it. Entries of another shape
    are left out; a missing index is an empty one."""
    index = root / "gguf" / "models.json"
    if not index.exists():
        return {}
    try:
        data = json.loads(read_small(index, MAX_MANIFEST_BYTES, "llm"))
    except (ValueError, RecursionError):
        raise BlendinError(f"llm: {shown(str(index), 300)} is not JSON") from None
    if not isinstance(data, dict):
        raise BlendinError(f"llm: {shown(str(index), 300)} is not a JSON object of models")
    models = {}
    for model_id, info in data.items():
        path = info.get("path") if isinstance(info, dict) else None
        if isinstance(path, str) and path:
            aliases = info.get("aliases")
            models[model_id] = (path, [a for a in aliases if isinstance(a, str)] if isinstance(aliases, list) else [])
    return models


def resolve(text: str, models_folder: Path) -> Path:
    """llm:ID (what `llm -m gguf/ID` runs; gguf/ID too) or llm:ALIAS."""
    name = text.removeprefix("gguf/")
    root = user_dir()
    models = gguf_models(root)
    found = models.get(name) or next((entry for entry in models.values() if name in entry[1]), None)
    if found is None:
        known = sorted({*models, *(alias for _, aliases in models.values() for alias in aliases)})
        raise BlendinError(
            f"llm:{shown(text)}: no such model or alias in {shown(str(root / 'gguf' / 'models.json'), 300)}"
            f" (there: {candidates(known)})"
        )
    path = Path(found[0])
    if not path.is_absolute():
        raise BlendinError(f"llm:{shown(text)}: its path {shown(found[0], 300)} is not absolute")
    return regular_file(path, f"llm:{shown(text)}")


def files() -> Iterator[tuple[list[str], Path]]:
    try:
        models = gguf_models(user_dir())
    except BlendinError:
        return  # a broken index lists nothing; naming one of its models says why
    for model_id, (path, aliases) in models.items():
        if Path(path).is_absolute() and Path(path).is_file():  # naming the others says what is wrong
            yield [f"llm:{model_id}", *(f"llm:{alias}" for alias in aliases)], Path(path)
