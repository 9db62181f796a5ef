"""A model's vocabulary without its weights: for models that run on a server (remote_backend.py).

The engine needs every token's raw bytes, the special ids and a tokenizer; a server gives none of
them. Three local sources, all giving the same interface as LlamaModel's vocabulary side:

- a GGUF file (vocab only: llama.cpp loads the tokenizer and metadata, no weights, no context);
  the most faithful, since it also carries the chat template and is what llama.cpp servers run;
- a Hugging Face `tokenizer.json` (the `tokenizers` package): byte-level pieces (`Ġ`) go back to
  bytes through GPT-2's byte<->unicode table, SentencePiece-style ones have `▁` for a space and
  `<0xNN>` for a byte; `tokenizer_config.json` beside it gives the chat template, BOS/EOS and
  whether BOS is added, `generation_config.json` further end-of-generation ids;
- a SentencePiece `tokenizer.model` (the `sentencepiece` package), with the same files beside it.

`open_vocab(path)` picks the source by the file name and shares one instance per file: a remote
pair built N times for `eval --jobs N` loads its vocabularies once. The HF and SentencePiece
sources are thread-safe; the GGUF source is guarded by a lock.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
from functools import lru_cache
from pathlib import Path

from blendin_local.errors import BlendinError, install_hint
from blendin_local.json_files import read_json_object
from blendin_local.user_paths import user_path

# Names of end-of-generation tokens across model families, for sources that do not mark them.
EOG_NAMES = (
    "</s>",
    "<eos>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|end|>",
    "<|eom_id|>",
    "<|return|>",
)
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
SIDE_CONFIGS = ("tokenizer_config.json", "generation_config.json")
# Some list every added token (Gemma 3's is over 1 MB); one of hundreds of MB is not one of these.
MAX_SIDE_CONFIG_BYTES = 64 << 20


class VocabSource:
    """name, path, n_vocab, pieces, eog_ids, control_ids, bos_id, eos_id, adds_bos, tokenize,
    token_bytes, metadata: what the prompts, cursors and bridge read from a model."""

    name: str
    path: Path
    n_vocab: int
    pieces: list[bytes]
    eog_ids: frozenset[int]
    control_ids: frozenset[int]
    bos_id: int
    eos_id: int
    adds_bos: bool
    kind: str

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        raise NotImplementedError

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        raise NotImplementedError

    def metadata(self, key: str) -> str | None:
        return None

    @property
    def cache_key(self) -> str:
        return f"{self.kind}:{self.path}"


class GgufVocab(VocabSource):
    kind = "gguf"

    def __init__(self, path: Path):
        from blendin_local.backends.llama import LlamaModel, LoadOptions

        self._model = LlamaModel(path, LoadOptions(vocab_only=True))
        self._lock = threading.Lock()
        m = self._model
        self.name, self.path, self.n_vocab = m.name, m.path, m.n_vocab
        self.pieces = m.pieces
        self.eog_ids, self.control_ids = m.eog_ids, m.control_ids
        self.bos_id, self.eos_id, self.adds_bos = m.bos_id, m.eos_id, m.adds_bos

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        with self._lock:
            return self._model.tokenize(text, add_bos=add_bos, special=special)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        if not special:
            return self.pieces[token]
        with self._lock:
            return self._model.token_bytes(token, special=True)

    def metadata(self, key: str) -> str | None:
        with self._lock:
            return self._model.metadata(key)


def _side_config(path: Path) -> tuple[dict, dict]:
    """tokenizer_config.json and generation_config.json beside a tokenizer file, if there."""
    config, generation = (read_json_object(path.parent / name, MAX_SIDE_CONFIG_BYTES) for name in SIDE_CONFIGS)
    return config, generation


def _token_name(value) -> str | None:
    """A special token in tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(config: dict) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {
            t.get("name"): t.get("template") for t in template if isinstance(t, dict) and isinstance(t.get("name"), str)
        }
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def _ids_of(value) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _optional_module(name: str, path: Path, reading: str):
    """A package of the `remote` extra, or one clear error naming the file it was needed for."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise BlendinError(f"{path}: reading {reading} needs the `{name}` package: {install_hint('remote')}") from None


class _SpecialsMixin:
    """EOS/BOS/EOG and the chat template from the JSON files beside a tokenizer; the bytes of a
    token from the subclass's `pieces` and `_special_text` (special tokens as written)."""

    n_vocab: int
    pieces: list[bytes]
    control_ids: frozenset[int]
    _special_text: dict[int, bytes]

    def _apply_config(
        self, config: dict, generation: dict, token_id, default_bos: int, default_eos: int, default_adds_bos: bool
    ) -> None:
        def lookup(key: str, default: int) -> int:
            name = _token_name(config.get(key))
            found = token_id(name) if name else None
            return found if found is not None else default

        self.bos_id = lookup("bos_token", default_bos)
        self.eos_id = lookup("eos_token", default_eos)
        adds = config.get("add_bos_token")
        self.adds_bos = bool(adds) if isinstance(adds, bool) else default_adds_bos
        if self.bos_id < 0:
            self.adds_bos = False
        eog = {self.eos_id} if self.eos_id >= 0 else set()
        eog.update(i for i in _ids_of(generation.get("eos_token_id")) if 0 <= i < self.n_vocab)
        for name in EOG_NAMES:
            found = token_id(name)
            if found is not None and found in self.control_ids:
                eog.add(found)
        self.eog_ids = frozenset(eog)
        self._template = _chat_template(config)
        if self.eos_id < 0 and self.eog_ids:
            self.eos_id = min(self.eog_ids)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        if special and token in self._special_text:
            return self._special_text[token]
        return self.pieces[token]

    def metadata(self, key: str) -> str | None:
        if key == "tokenizer.chat_template":
            return self._template
        return None


@lru_cache(maxsize=1)
def gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: printable characters stand for themselves,
    the other 68 bytes for the code points from 256 on."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _uses(node, kind: str) -> bool:
    """Whether a tokenizer.json component (or any of its sequence members) is of `kind`."""
    if isinstance(node, dict):
        if node.get("type") == kind:
            return True
        return any(
            _uses(v, kind) for k, v in node.items() if k in ("decoders", "pretokenizers", "normalizers", "decoder")
        )
    if isinstance(node, list):
        return any(_uses(v, kind) for v in node)
    return False


class HFTokenizerVocab(_SpecialsMixin, VocabSource):
    kind = "tokenizer.json"

    def __init__(self, path: Path):
        Tokenizer = _optional_module("tokenizers", path, "a tokenizer.json").Tokenizer
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            self._tok = Tokenizer.from_file(str(path))
        except (OSError, ValueError, Exception) as e:  # the Rust side raises plain Exceptions
            raise BlendinError(f"{path}: not a readable tokenizer.json ({e})") from None
        self.path, self.name = path, path.parent.name or path.stem
        self.n_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        byte_level = _uses(spec.get("decoder"), "ByteLevel") or _uses(spec.get("pre_tokenizer"), "ByteLevel")
        table = gpt2_unicode_to_byte()
        added = self._tok.get_added_tokens_decoder()
        special = {i for i, t in added.items() if t.special}
        self._special_text = {i: added[i].content.encode("utf-8") for i in special}
        pieces, controls = [], set()
        for i in range(self.n_vocab):
            token = self._tok.id_to_token(i)
            if token is None or i in special:
                pieces.append(b"")
                controls.add(i)
            elif i in added:
                pieces.append(added[i].content.encode("utf-8"))
            elif byte_level and all(c in table for c in token):
                pieces.append(bytes(table[c] for c in token))
            else:
                match = _BYTE_PIECE.match(token)
                pieces.append(bytes([int(match.group(1), 16)]) if match else token.replace("▁", " ").encode("utf-8"))
        self.pieces, self.control_ids = pieces, frozenset(controls)
        config, generation = _side_config(path)
        probe = self._tok.encode("a", add_special_tokens=True).ids
        plain = self._tok.encode("a", add_special_tokens=False).ids
        default_bos = probe[0] if len(probe) > len(plain) and probe[0] in special else -1
        self._apply_config(config, generation, self._tok.token_to_id, default_bos, -1, default_bos >= 0)

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        ids = self._tok.encode(text.decode("utf-8"), add_special_tokens=False).ids
        return ([self.bos_id] if add_bos and self.bos_id >= 0 else []) + ids


class SentencePieceVocab(_SpecialsMixin, VocabSource):
    kind = "sentencepiece"

    def __init__(self, path: Path):
        sentencepiece = _optional_module("sentencepiece", path, "a tokenizer.model")
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise BlendinError(f"{path}: not a readable SentencePiece model ({e})") from None
        self._sp = sp
        self.path, self.name = path, path.parent.name or path.stem
        self.n_vocab = sp.GetPieceSize()
        pieces, controls, self._special_text = [], set(), {}
        for i in range(self.n_vocab):
            piece = sp.IdToPiece(i)
            if sp.IsControl(i) or sp.IsUnknown(i) or sp.IsUnused(i) or piece in EOG_NAMES:
                pieces.append(b"")
                controls.add(i)
                self._special_text[i] = piece.encode("utf-8")
            elif sp.IsByte(i):
                byte = _BYTE_PIECE.match(piece)
                assert byte is not None  # SentencePiece writes its byte pieces <0xNN>
                pieces.append(bytes([int(byte.group(1), 16)]))
            else:
                pieces.append(piece.replace("▁", " ").encode("utf-8"))
        self.pieces, self.control_ids = pieces, frozenset(controls)
        # Control pieces written in a (chat template's) text are parsed as tokens with special=True.
        texts = sorted((t for t in self._special_text.values() if t), key=len, reverse=True)
        self._special_split = re.compile(b"(" + b"|".join(re.escape(t) for t in texts) + b")") if texts else None
        self._by_special = {t: i for i, t in self._special_text.items()}
        config, generation = _side_config(path)

        def token_id(name: str) -> int | None:
            i = sp.PieceToId(name)
            return i if i != sp.unk_id() or name == sp.IdToPiece(sp.unk_id()) else None

        self._apply_config(config, generation, token_id, sp.bos_id(), sp.eos_id(), sp.bos_id() >= 0)

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        ids = [self.bos_id] if add_bos and self.bos_id >= 0 else []
        parts = self._special_split.split(text) if special and self._special_split else [text]
        for part in parts:
            if part in self._by_special and special:
                ids.append(self._by_special[part])
            elif part:
                ids += self._sp.EncodeAsIds(part.decode("utf-8"))
        return ids


_opened: dict[str, VocabSource] = {}
_open_lock = threading.Lock()


def open_vocab(path: str | Path) -> VocabSource:
    """The vocabulary in a GGUF file, a tokenizer.json or a SentencePiece tokenizer.model (or a
    folder holding one of the last two); one shared instance per file."""
    path = user_path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise BlendinError(f"{path}: no tokenizer.json or tokenizer.model in this folder")
    if not path.is_file():
        raise BlendinError(f"{path}: no such vocabulary file (a GGUF file, a tokenizer.json or a tokenizer.model)")
    key = str(path.resolve())
    with _open_lock:
        if key not in _opened:
            if path.suffix == ".gguf":
                _opened[key] = GgufVocab(path)
            elif path.suffix == ".json":
                _opened[key] = HFTokenizerVocab(path)
            elif path.suffix == ".model":
                _opened[key] = SentencePieceVocab(path)
            else:
                with path.open("rb") as f:
                    magic = f.read(4)
                if magic == b"GGUF":
                    _opened[key] = GgufVocab(path)
                else:
                    raise BlendinError(f"{path}: not a GGUF file, a tokenizer.json or a tokenizer.model")
        return _opened[key]
