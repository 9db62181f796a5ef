"""Small JSON files that only help: the caches (the CPU probe's verdicts, the GGUF files already
checked, the sha256 stamps of installed models) and the optional files beside a tokenizer. A
missing, damaged, oversized or foreign file reads as an empty object, and a cache write that
fails only costs the work again next time."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from blendin_local.file_replace import replace_file

MAX_CACHE_BYTES = 4 << 20  # thousands of entries; a larger file is not one blendin wrote


def read_json_object(path: Path, max_bytes: int = MAX_CACHE_BYTES) -> dict:
    """The JSON object the file holds, or {} when there is none to read."""
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
        entries = json.loads(raw) if len(raw) <= max_bytes else None
    except (OSError, ValueError, RecursionError):  # ValueError covers undecodable bytes
        return {}
    return entries if isinstance(entries, dict) else {}


def write_json_cache(path: Path, entries: Mapping) -> None:
    try:
        replace_file(path, json.dumps(entries, indent=1))
    except OSError:
        pass  # a read-only or full disk only costs the work again in the next process
