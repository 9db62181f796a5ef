"""Small JSON files that only help: the caches (the CPU probe's verdicts, the GGUF files already
checked, the sha256 stamps of installed models) and the optional files beside a tokenizer. A
missing, damaged, oversized or foreign file reads as an empty object, and a cache write that
fails only costs the work again next time."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from blendin_local.file_replace import replace_file

MAX_CACHE_BYTES = 4 << 20  # thousands of entries; a larger file is not one blendin wrote
T = TypeVar("T")


def read_json_object(path: Path, max_bytes: int = MAX_CACHE_BYTES) -> dict:
    """The JSON object the file holds, or {} when there is none to read."""
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
        entries = json.loads(raw) if len(raw) <= max_bytes else None
    except (OSError, ValueError, RecursionError):  # ValueError covers undecodable bytes
        return {}
    return entries if isinstance(entries, dict) else {}


def dataclass_from_json(cls: type[T], entry: object) -> T | None:
    """The dataclass `cls` from a cache entry (what dataclasses.asdict wrote) if every field there
    has its declared type, else None: a damaged entry must cost the work again, never pass a
    wrong value on ("runs": "no" is not true, and a list is not a file type)."""
    if not isinstance(entry, dict):
        return None
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not required <= set(entry) <= {f.name for f in fields}:
        return None
    if not all(_holds(value, hints[name]) for name, value in entry.items()):
        return None
    return cls(**entry)


def _holds(value: object, hint: Any) -> bool:
    """Whether a JSON value is of a field's type: the scalars JSON has, None, and unions of them."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_holds(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool or isinstance(value, bool):  # JSON's true is not a number, nor 1 a boolean
        return hint is bool and isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float))  # JSON writes 2.0 as 2.0 but a hand's 2 is fine
    return hint in (int, str) and isinstance(value, hint)


def write_json_cache(path: Path, entries: Mapping) -> None:
    try:
        replace_file(path, json.dumps(entries, indent=1))
    except OSError:
        pass  # a read-only or full disk only costs the work again in the next process
