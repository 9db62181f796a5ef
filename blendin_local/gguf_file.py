"""Cheap checks on a GGUF file, so that a bad path gets a precise message instead of a crash.

`check_gguf_file` runs before every load (a stat and four bytes). `explain_load_failure`
runs only after llama.cpp has refused a file: it walks the header to tell a truncated
download from an unsupported model.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from .errors import BlendinError

MAGIC = b"GGUF"
# Sizes of the fixed-width GGUF value types, by type id; 8 is a string and 9 an array.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def check_gguf_file(path: Path) -> None:
    if not path.exists():
        raise BlendinError(f"{path}: no such file")
    if path.is_dir():
        raise BlendinError(f"{path}: is a directory, not a GGUF file")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise BlendinError(f"{path}: cannot read ({e.strerror})") from None
    if head != MAGIC:
        raise BlendinError(f"{path}: not a GGUF file (it starts with {head!r}, not {MAGIC!r})")


class _Reader:
    def __init__(self, data: mmap.mmap):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        value = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value[0]

    def string(self) -> bytes:
        n = self.take("Q")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALAR_SIZES:
            self.pos += _SCALAR_SIZES[vtype]
        elif vtype == _STRING:
            n = self.take("Q")
            self.pos += n
        elif vtype == _ARRAY:
            item_type, count = self.take("I"), self.take("Q")
            if item_type in _SCALAR_SIZES:
                self.pos += _SCALAR_SIZES[item_type] * count
            else:
                for _ in range(count):
                    self.skip_value(item_type)
        else:
            raise ValueError(f"unknown GGUF value type {vtype}")


def minimum_size(path: Path) -> int:
    """Bytes the file must have at least: header plus the start of its last tensor's data."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _minimum_size(_Reader(data))


def _minimum_size(r: _Reader) -> int:
    if r.take("4s") != MAGIC:
        raise ValueError("bad magic")
    r.take("I")  # version
    n_tensors, n_kv = r.take("Q"), r.take("Q")
    alignment = 32
    for _ in range(n_kv):
        key, vtype = r.string(), r.take("I")
        if key == b"general.alignment" and vtype == 4:
            alignment = r.take("I")
        else:
            r.skip_value(vtype)
    last_offset = 0
    for _ in range(n_tensors):
        r.string()
        n_dims = r.take("I")
        r.pos += 8 * n_dims
        r.take("I")  # tensor type
        last_offset = max(last_offset, r.take("Q"))
    data_start = -(-r.pos // alignment) * alignment
    return data_start + last_offset + (1 if n_tensors else 0)


def explain_load_failure(path: Path) -> str:
    size = path.stat().st_size
    try:
        needed = minimum_size(path)
    except (struct.error, ValueError, IndexError):
        return f"{path}: truncated or corrupt GGUF header ({size} bytes)"
    if size < needed:
        return f"{path}: truncated GGUF file: its tensors need at least {needed} bytes, the file has {size}"
    return f"{path}: llama.cpp could not load this GGUF file (unsupported architecture or corrupt data)"
