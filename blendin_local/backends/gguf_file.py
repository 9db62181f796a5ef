"""Checks on a GGUF file before llama.cpp reads it, so that a bad file is one precise message.

`check_gguf_file` runs before every load. It walks the whole header as llama.cpp's own parser
does (ggml/src/gguf.cpp) and refuses what that parser refuses, but bounds every length and count
read from the file by the bytes the file has before acting on it: a corrupt or hostile header
costs a walk no longer than the file and one line, and llama.cpp's parser, which is attack
surface of its own, only sees headers that hold together. It also refuses a vocabulary with a
token twice (llama.cpp aborts the process on one) and checks that every tensor's data lies
inside the file, which tells a truncated download from a bad model.

What no header walk can see is whether the metadata values make a model llama.cpp can run: a
bit flipped in `llama.block_count` or `llama.attention.layer_norm_rms_epsilon` makes it abort
the process (a failed GGML_ASSERT, SIGABRT), which no Python code can catch. So a file that
passes the walk is then loaded, and one token decoded, in a child process (`trial_load`); a
child killed by a signal is one line here. llama.cpp may still refuse the file in the parent,
loaded there with other parameters (GPU layers, repacked kernels), and `explain_load_failure`
turns that into a line.

The walk also keeps what shows a model to people (`display_name`, `blendin models list --all`):
general.name, general.file_type and its quantization's name, the vocabulary's size, and whether
there is a chat template.

The walk costs about 60 ms for Gemma 3 (a vocabulary of 262k strings, each kept to find a
repeated one) and the trial load about a second, so a passed check is remembered next to the
models, keyed by the file's resolved path, size and mtime, as model_registry does for sha256
checks: both run once per file.
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

from blendin_local.backends.registry import models_dir
from blendin_local.errors import BlendinError
from blendin_local.json_files import dataclass_from_json, read_json_object, write_json_cache

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # llama.cpp refuses version 1 and any later than 3
DEFAULT_ALIGNMENT = 32
_ALIGNMENT_KEY = b"general.alignment"
_ARCHITECTURE_KEY = b"general.architecture"
_TOKENS_KEY = b"tokenizer.ggml.tokens"
_NAME_KEY = b"general.name"
_FILE_TYPE_KEY = b"general.file_type"
_CHAT_TEMPLATE_KEY = b"tokenizer.chat_template"
_MAX_NAME = 256  # bytes of general.name kept: a name, not a document
_DISPLAY_NAME_CHARS = 80
_STRING, _ARRAY, _UINT32 = 8, 9, 4
# Bytes of the fixed-width GGUF value types, by type id (7 is a bool, read as one byte).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_MAX_KEY = (1 << 16) - 1  # the GGUF specification's limit on a key's length
_MAX_ARRAY = 1 << 30  # llama.cpp's GGUF_MAX_ARRAY_ELEMENTS
_MAX_TENSOR_NAME = 63  # llama.cpp's GGML_MAX_NAME, less the terminating zero
# Tokens kept to find a repeated one: 16 times Gemma 3's vocabulary, at most ~200 MB of Python bytes.
_MAX_VOCABULARY = 1 << 22
_MAX_DIMS = 4
_INT64_MAX = (1 << 63) - 1
# The smallest encodings, to bound a count by the bytes left before walking that many.
_MIN_KV = 8 + 1 + 4 + 1  # key length, a one-byte key, the value type, a one-byte value
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # name length (an empty name), n_dims (0), type, offset
# ggml tensor types: id -> (elements per block, bytes per block), from ggml's type traits. An id
# not listed (a type ggml removed, or one newer than this table) leaves the tensor data's size
# to llama.cpp, which refuses what it does not know.
_TENSOR_TYPES = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
    40: (64, 36),
    41: (128, 18),
    42: (64, 18),
}
# The integer GGUF value types, by type id: general.file_type is a uint32 as llama.cpp writes it,
# but any integer type is read.
_INTEGERS = {
    t: struct.Struct(f) for t, f in {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}.items()
}
# general.file_type -> the quantization's name: llama.cpp's enum llama_ftype (include/llama.h),
# LLAMA_FTYPE_ALL_F32 and LLAMA_FTYPE_MOSTLY_<name>. 4-6 and 33-35 were removed from llama.cpp.
QUANT_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
_U32, _I32, _U64, _I64 = (struct.Struct(f) for f in ("<I", "<i", "<Q", "<q"))
_CHECK_REVISION = 2  # part of a remembered verdict: a change to the checks makes older ones void
TRIAL_TIMEOUT_S = 600.0  # loading a model and decoding one token on the CPU
TRIAL_REFUSED = 3  # the trial child's exit code for a BlendinError (its line is on stderr)
_trial_running = False  # true in a trial child: its own load must not start another trial


def enter_trial_process() -> None:
    """Called by the trial child (gguf_trial_child.py): its own load of the file is the trial."""
    global _trial_running
    _trial_running = True


class CorruptHeader(Exception):
    """What is wrong with a GGUF header: the end of one line, with nothing from the file unescaped."""


@dataclass(frozen=True)
class GgufHeader:
    version: int
    n_tensors: int
    n_kv: int
    architecture: str | None
    data_start: int  # where the tensor data begins
    data_end: int | None  # bytes the tensors need (None: a tensor type unknown to this table)
    name: str | None = None  # general.name: its first _MAX_NAME bytes, printable() (display_name: for people)
    file_type: int | None = None  # general.file_type: llama.cpp's llama_ftype
    n_vocab: int | None = None  # tokens in tokenizer.ggml.tokens (None: no vocabulary)
    has_chat_template: bool = False  # tokenizer.chat_template is there

    @property
    def quant(self) -> str | None:
        """The quantization's name for general.file_type (Q4_K_M for 15), None if unknown."""
        return QUANT_NAMES.get(self.file_type) if self.file_type is not None else None


def display_name(header: GgufHeader, path: Path) -> str:
    """A short printable name for a model: general.name and the quantization ("Gemma 3 270m
    Q4_K_M"), or the file's name where the file has no general.name. Both come from the file, so
    control characters go and the length is bounded."""
    base = printable(header.name or "") or printable(path.name.removesuffix(".gguf")) or "model"
    quant = header.quant
    if quant and quant.lower() not in base.lower():
        room = _DISPLAY_NAME_CHARS - len(quant) - 1
        return f"{_cut(base, room)} {quant}"
    return _cut(base, _DISPLAY_NAME_CHARS)


def printable(text: str) -> str:
    """`text` on one line: control, format (bidi overrides, zero-width) and unassigned characters
    become spaces, runs of whitespace one space."""
    return " ".join("".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text).split())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def check_gguf_file(path: Path) -> GgufHeader:
    """check_gguf_header and trial_load, or the header they passed for this very file before."""
    _check_regular_file(path)
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "revision": _CHECK_REVISION}
    checked = read_json_object(_checked_file())
    entry = checked.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        remembered = dataclass_from_json(GgufHeader, entry.get("header"))
        if remembered is not None:  # a damaged entry only costs the walk
            return remembered
    header = check_gguf_header(path)
    if _trial_running:
        return header
    trial_load(path)
    checked[key] = {"stamp": stamp, "header": asdict(header)}
    _write_checked(checked)
    return header


def trial_load(path: Path) -> None:
    """Load the file and decode one token in a child process; one-line BlendinError if llama.cpp
    refuses it or dies on it. The child uses no repacked kernels (cpu_kernels.py): a crash there
    is the file's doing, not the CPU's."""
    try:
        # GGML_NO_BACKTRACE: a failed assertion ends the child at once instead of attaching gdb to it.
        child = subprocess.run(
            [sys.executable, "-m", "blendin_local.backends.gguf_trial_child", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TRIAL_TIMEOUT_S,
            env={**os.environ, "GGML_NO_BACKTRACE": "1"},
        )
    except subprocess.TimeoutExpired:
        raise BlendinError(
            f"{path}: loading it and decoding one token took more than {TRIAL_TIMEOUT_S:.0f} s"
        ) from None
    if child.returncode == 0:
        return
    if child.returncode < 0:
        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        raise BlendinError(
            f"{path}: llama.cpp crashed ({name}) loading it and decoding one token: corrupt metadata"
            " or data, or a model this llama.cpp build cannot run"
        )
    lines = child.stderr.decode("utf-8", "replace").strip().splitlines()
    last = lines[-1][:300] if lines else ""
    if child.returncode == TRIAL_REFUSED and last.startswith(f"{path}: "):
        raise BlendinError(last)
    raise BlendinError(f"{path}: the trial load ended with exit code {child.returncode}: {last}")


def check_gguf_header(path: Path) -> GgufHeader:
    """The header of a GGUF file that llama.cpp's parser will accept; else one-line BlendinError."""
    _check_regular_file(path)
    try:
        with path.open("rb") as f:
            head = f.read(4)
            if head != MAGIC:
                raise BlendinError(f"{path}: not a GGUF file (it starts with {head!r}, not {MAGIC!r})")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                header, size = read_header(data), len(data)
    except OSError as e:
        raise BlendinError(f"{path}: cannot read ({e.strerror or e})") from None
    except CorruptHeader as e:
        raise BlendinError(f"{path}: truncated or corrupt GGUF header: {e}") from None
    if header.data_end is not None and header.data_end > size:
        raise BlendinError(
            f"{path}: truncated GGUF file: its tensors need at least {header.data_end} bytes, the file has {size}"
        )
    return header


def _check_regular_file(path: Path) -> None:
    if not path.exists():
        raise BlendinError(f"{path}: no such file")
    if path.is_dir():
        raise BlendinError(f"{path}: is a directory, not a GGUF file")
    if not path.is_file():  # a FIFO or a device would block the read or never end
        raise BlendinError(f"{path}: not a regular file")


def _checked_file() -> Path:
    return models_dir() / "gguf_checked.json"


def _write_checked(checked: dict) -> None:
    """Save the verdicts of files that still exist (temporary files come and go)."""
    write_json_cache(_checked_file(), {key: entry for key, entry in checked.items() if os.path.isfile(key)})


def explain_load_failure(path: Path) -> str:
    """One line for a file that passed check_gguf_file and that llama.cpp refused all the same."""
    try:
        header = check_gguf_file(path)
    except BlendinError as e:  # the file changed since it was checked
        return str(e)
    arch = f"architecture {header.architecture}" if header.architecture else "no general.architecture"
    return (
        f"{path}: llama.cpp could not load this GGUF file ({arch}: unsupported by this llama.cpp build,"
        " or corrupt metadata or data)"
    )


def read_header(data) -> GgufHeader:
    """Walk a whole GGUF header in `data` (bytes or an mmap); CorruptHeader if it does not hold."""
    return _Walk(data).header()


def _shown(raw: bytes, limit: int = 40) -> str:
    """A key or name from the file, safe to print on one line."""
    return repr(raw[:limit])[2:-1] + ("..." if len(raw) > limit else "")


class _Walk:
    def __init__(self, data):
        self.data, self.size, self.pos = data, len(data), 0
        self.n_vocab: int | None = None  # set by strings() on the vocabulary

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise CorruptHeader(f"{what} at byte {self.pos} needs {n} bytes, {self.size - self.pos} are left")

    def take(self, fmt: struct.Struct, what: str) -> int:
        self.need(fmt.size, what)
        value = fmt.unpack_from(self.data, self.pos)[0]
        self.pos += fmt.size
        return value

    def string(self, what: str, limit: int | None = None, keep: int | None = None) -> bytes:
        """Step over a string, refused if longer than `limit`; its first `keep` bytes (default: all)."""
        n = self.take(_U64, f"length of {what}")
        if limit is not None and n > limit:
            raise CorruptHeader(f"{what} at byte {self.pos - 8} is {n} bytes long (at most {limit})")
        self.need(n, what)
        s = self.data[self.pos : self.pos + (n if keep is None else min(n, keep))]
        self.pos += n
        return s

    def count(self, n: int, item_size: int, what: str) -> None:
        """A count read from the file: its items, `item_size` bytes each at least, must fit in what is left."""
        if n * item_size > self.size - self.pos:
            raise CorruptHeader(f"{what} is {n}: more than the {self.size - self.pos} bytes left can hold")

    def header(self) -> GgufHeader:
        self.pos = 4  # the magic, checked by the caller
        version = self.take(_U32, "version")
        if version not in SUPPORTED_VERSIONS:
            raise CorruptHeader(f"version {version} (llama.cpp reads versions 2 and 3)")
        n_tensors = self.take(_U64, "tensor count")
        n_kv = self.take(_U64, "metadata count")
        self.count(n_kv, _MIN_KV, "metadata count")
        alignment, architecture = DEFAULT_ALIGNMENT, None
        model_name, file_type, has_chat_template = None, None, False
        seen: set[bytes] = set()
        for i in range(n_kv):
            key = self.string(f"key {i}", _MAX_KEY)
            if not key:
                raise CorruptHeader(f"key {i} is empty")
            if key in seen:
                raise CorruptHeader(f"duplicate key '{_shown(key)}'")
            seen.add(key)
            vtype = self.take(_U32, f"type of '{_shown(key)}'")
            if key == _ALIGNMENT_KEY:
                if vtype != _UINT32:
                    raise CorruptHeader(f"general.alignment has type {vtype}, not uint32")
                alignment = self.take(_U32, "general.alignment")
                if alignment == 0 or alignment & (alignment - 1):
                    raise CorruptHeader(f"general.alignment {alignment} is not a power of 2")
            elif key == _ARCHITECTURE_KEY and vtype == _STRING:
                architecture = _shown(self.string("general.architecture", keep=65), 64)
            elif key == _NAME_KEY and vtype == _STRING:
                model_name = printable(self.string("general.name", keep=_MAX_NAME).decode("utf-8", "replace")) or None
            elif key == _FILE_TYPE_KEY and vtype in _INTEGERS:
                file_type = self.take(_INTEGERS[vtype], "general.file_type")
            elif key == _CHAT_TEMPLATE_KEY and vtype == _STRING:
                has_chat_template = True
                self.value(vtype, key)
            else:
                self.value(vtype, key)
        self.count(n_tensors, _MIN_TENSOR_INFO, "tensor count")
        names: set[bytes] = set()
        expected_offset, data_size = 0, 0  # in the data section, as llama.cpp lays it out
        sizes_known = True
        for i in range(n_tensors):
            name = self.string(f"name of tensor {i}", _MAX_TENSOR_NAME)
            if name in names:
                raise CorruptHeader(f"duplicate tensor name '{_shown(name)}'")
            names.add(name)
            shown = _shown(name)
            n_dims = self.take(_U32, f"dimension count of tensor '{shown}'")
            if n_dims > _MAX_DIMS:
                raise CorruptHeader(f"tensor '{shown}' has {n_dims} dimensions (at most {_MAX_DIMS})")
            elements = 1
            dims = [self.take(_I64, f"shape of tensor '{shown}'") for _ in range(n_dims)]
            for d in dims:
                if d < 0:
                    raise CorruptHeader(f"tensor '{shown}' has a negative dimension {d}")
                elements *= d
            if elements > _INT64_MAX:
                raise CorruptHeader(f"tensor '{shown}' has {elements} elements, more than int64 holds")
            ggml_type = self.take(_I32, f"type of tensor '{shown}'")
            offset = self.take(_U64, f"data offset of tensor '{shown}'")
            if ggml_type not in _TENSOR_TYPES:
                sizes_known = False
                continue
            block, block_bytes = _TENSOR_TYPES[ggml_type]
            row = dims[0] if dims else 1
            if row % block:
                raise CorruptHeader(
                    f"tensor '{shown}' has rows of {row} elements, not a multiple of its type's block of {block}"
                )
            if sizes_known:
                if offset != expected_offset:
                    raise CorruptHeader(f"tensor '{shown}' has data offset {offset}, expected {expected_offset}")
                nbytes = elements // block * block_bytes
                data_size = offset + nbytes
                expected_offset = -(-data_size // alignment) * alignment
        data_start = -(-self.pos // alignment) * alignment if n_tensors else self.pos
        if data_start > self.size:
            raise CorruptHeader(f"the tensor data would start at byte {data_start}, past the end of the file")
        return GgufHeader(
            version,
            n_tensors,
            n_kv,
            architecture,
            data_start,
            data_start + data_size if sizes_known else None,
            model_name,
            file_type,
            self.n_vocab,
            has_chat_template,
        )

    def value(self, vtype: int, key: bytes) -> None:
        """Skip one value of type `vtype`, checking it fits in the file."""
        if vtype in _SCALAR_SIZES:
            self.need(_SCALAR_SIZES[vtype], f"value of '{_shown(key)}'")
            self.pos += _SCALAR_SIZES[vtype]
        elif vtype == _STRING:
            self.string(f"value of '{_shown(key)}'", keep=0)
        elif vtype == _ARRAY:
            item_type = self.take(_U32, f"item type of '{_shown(key)}'")
            n = self.take(_U64, f"length of '{_shown(key)}'")
            if n > _MAX_ARRAY:
                raise CorruptHeader(f"array '{_shown(key)}' has {n} items (at most {_MAX_ARRAY})")
            if item_type in _SCALAR_SIZES:
                self.count(n, _SCALAR_SIZES[item_type], f"length of '{_shown(key)}'")
                self.pos += n * _SCALAR_SIZES[item_type]
            elif item_type == _STRING:
                self.count(n, 8, f"length of '{_shown(key)}'")
                self.strings(n, key)
            else:
                raise CorruptHeader(f"array '{_shown(key)}' has items of type {item_type}")
        else:
            raise CorruptHeader(f"'{_shown(key)}' has an unknown value type {vtype}")

    def strings(self, n: int, key: bytes) -> None:
        """Skip `n` strings: the tight loop of the walk (a vocabulary is 262k strings for Gemma 3)."""
        data, pos, unpack = self.data, self.pos, _U64.unpack_from
        tokens: list[bytes] = []
        keep = tokens.append if key == _TOKENS_KEY else None
        if keep is not None:
            if n > _MAX_VOCABULARY:
                raise CorruptHeader(f"a vocabulary of {n} tokens (this tool reads at most {_MAX_VOCABULARY})")
            self.n_vocab = n
        try:
            if keep is None:
                for _ in range(n):
                    pos += 8 + unpack(data, pos)[0]
            else:
                for _ in range(n):
                    start = pos + 8
                    pos = start + unpack(data, pos)[0]
                    keep(data[start:pos])
        except (struct.error, OverflowError):
            # unpack_from checks its own bounds: a length past the end lands a later read
            # outside the buffer (struct.error) or beyond an index (OverflowError).
            pos = self.size + 1
        if pos > self.size:
            raise CorruptHeader(f"the strings of '{_shown(key)}' run past the end of the file")
        self.pos = pos
        if len(set(tokens)) < len(tokens):
            _refuse_repeated_tokens(tokens)


def _refuse_repeated_tokens(tokens: list[bytes]) -> None:
    """llama.cpp aborts the process (an assertion, SIGABRT) on a vocabulary that has a token text
    twice, counting an empty token as "[EMPTY_<id>]" as it does."""
    seen: set[bytes] = set()
    for i, token in enumerate(tokens):
        text = token or b"[EMPTY_%d]" % i
        if text in seen:
            raise CorruptHeader(f"the vocabulary has the token '{_shown(text)}' twice")
        seen.add(text)
