"""The vocabulary bridge: every guide token mapped onto the base vocabulary, by bytes.

A guide token maps to the base token with exactly its bytes where one exists, else to the
longest base token that is a byte-prefix of it (the guide then finishes its token on later
steps, see guide_cursor.py). The guide's end-of-generation tokens map to the base's EOS;
its other control tokens map nowhere (-1): their probability is dropped. The map is one int32
array, so a whole guide distribution moves onto the base vocabulary in one `np.bincount`.

Bridges are cached on disk, keyed by a hash of both vocabularies.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from blendin_local.engine.distributions import SparseDistribution
from blendin_local.file_replace import replace_file

if TYPE_CHECKING:
    from blendin_local.engine.distributions import FloatArray

UNMAPPED = -1


@dataclass(frozen=True)
class Vocabulary:
    """The byte pieces of one model's tokens (empty for control tokens) and its special ids."""

    pieces: tuple[bytes, ...]
    eog_ids: frozenset[int]
    eos_id: int

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        # (2-byte length, piece) for every token, hashed in chunks: the same digest as updating
        # piece by piece, without 2 x 262k calls.
        lengths = [n.to_bytes(2, "little") for n in range(max(map(len, self.pieces), default=0) + 1)]
        for start in range(0, len(self.pieces), 8192):
            chunk = self.pieces[start : start + 8192]
            parts: list[bytes] = [b""] * (2 * len(chunk))
            parts[0::2] = map(lengths.__getitem__, map(len, chunk))
            parts[1::2] = chunk
            digest.update(b"".join(parts))
        digest.update(repr(sorted(self.eog_ids)).encode())
        digest.update(str(self.eos_id).encode())
        return digest.hexdigest()


def byte_index(vocab: Vocabulary, tokenize: Callable[[bytes], list[int]] | None = None) -> dict[bytes, int]:
    """bytes -> token id. Where several tokens share the same bytes (SentencePiece byte-fallback
    tokens beside normal ones), take the id the model's own tokenizer produces, else the highest."""
    index: dict[bytes, int] = {}
    duplicates: dict[bytes, list[int]] = {}
    for token, piece in enumerate(vocab.pieces):
        if not piece or token in vocab.eog_ids:
            continue
        if piece in index:
            duplicates.setdefault(piece, [index[piece]]).append(token)
        index[piece] = token
    for piece, candidates in duplicates.items():
        if tokenize is not None and _is_utf8(piece):
            produced = tokenize(piece)
            if len(produced) == 1 and produced[0] in candidates:
                index[piece] = produced[0]
                continue
        index[piece] = max(candidates)
    return index


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class PrefixFinder:
    """Longest token of one vocabulary that is a byte-prefix of a given byte string."""

    def __init__(self, index: dict[bytes, int]):
        self.index = index
        self.max_len = max((len(p) for p in index), default=0)

    def longest(self, data: bytes) -> int:
        for n in range(min(len(data), self.max_len), 0, -1):
            token = self.index.get(data[:n])
            if token is not None:
                return token
        return UNMAPPED


class Extensions:
    """Tokens whose bytes strictly extend a given byte string, found by bisection in sorted pieces."""

    def __init__(self, index: dict[bytes, int]):
        ordered = sorted(index.items())
        self.pieces = [piece for piece, _ in ordered]
        self.ids = np.fromiter((token for _, token in ordered), dtype=np.int64, count=len(ordered))

    def of(self, prefix: bytes) -> np.ndarray:
        lo = bisect.bisect_right(self.pieces, prefix)  # skips `prefix` itself
        upper = _successor(prefix)
        hi = len(self.pieces) if upper is None else bisect.bisect_left(self.pieces, upper, lo)
        return self.ids[lo:hi]

    def exist(self, prefix: bytes) -> bool:
        lo = bisect.bisect_right(self.pieces, prefix)
        return lo < len(self.pieces) and self.pieces[lo].startswith(prefix)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True)
class BridgeStats:
    guide_tokens: int
    exact: int
    prefix: int
    unmapped: int
    control: int

    def as_dict(self) -> dict[str, float]:
        text_tokens = self.exact + self.prefix + self.unmapped
        pct = (lambda n: round(100.0 * n / text_tokens, 2)) if text_tokens else (lambda n: 0.0)
        return {
            "guide_tokens": self.guide_tokens,
            "control_tokens": self.control,
            "exact": self.exact,
            "prefix": self.prefix,
            "unmapped": self.unmapped,
            "exact_pct": pct(self.exact),
            "prefix_pct": pct(self.prefix),
            "unmapped_pct": pct(self.unmapped),
        }


def build_map(base: Vocabulary, guide: Vocabulary, base_index: dict[bytes, int]) -> tuple[np.ndarray, np.ndarray]:
    """(g2b, exact): the base token of every guide token, and whether the bytes match exactly."""
    finder = PrefixFinder(base_index)
    g2b = np.full(len(guide.pieces), UNMAPPED, dtype=np.int64)
    exact = np.zeros(len(guide.pieces), dtype=bool)
    for token, piece in enumerate(guide.pieces):
        if token in guide.eog_ids:
            g2b[token], exact[token] = base.eos_id, True
        elif piece:
            hit = base_index.get(piece)
            if hit is not None:
                g2b[token], exact[token] = hit, True
            else:
                g2b[token] = finder.longest(piece)
    return g2b, exact


class VocabBridge:
    """Maps between a base and a guide vocabulary; see the module docstring."""

    def __init__(
        self,
        base: Vocabulary,
        guide: Vocabulary,
        g2b: np.ndarray,
        exact: np.ndarray,
        base_index: dict[bytes, int],
        guide_index: dict[bytes, int],
    ):
        self.base, self.guide = base, guide
        self.g2b, self.exact = g2b, exact
        self.mapped = g2b != UNMAPPED
        # For the projection: the distinct base tokens guide tokens land on (sorted) and, per
        # guide token, the slot of its base token among those (unmapped ones: one extra slot).
        self._targets, slots = np.unique(g2b[self.mapped], return_inverse=True)
        self._slots = np.full(len(g2b), len(self._targets), dtype=np.intp)
        self._slots[self.mapped] = slots.reshape(-1)
        self.base_index, self.guide_index = base_index, guide_index
        self.base_prefix = PrefixFinder(base_index)
        self.guide_prefix = PrefixFinder(guide_index)
        self.guide_extensions = Extensions(guide_index)
        self.n_base = len(base.pieces)

    @classmethod
    def build(
        cls,
        base: Vocabulary,
        guide: Vocabulary,
        *,
        base_tokenize: Callable[[bytes], list[int]] | None = None,
        guide_tokenize: Callable[[bytes], list[int]] | None = None,
        cache_dir: Path | None = None,
    ) -> VocabBridge:
        base_index = byte_index(base, base_tokenize)
        guide_index = byte_index(guide, guide_tokenize)
        cached = _load_cached(cache_dir, base, guide) if cache_dir else None
        if cached is None:
            g2b, exact = build_map(base, guide, base_index)
            if cache_dir:
                _save_cached(cache_dir, base, guide, g2b, exact)
        else:
            g2b, exact = cached
        return cls(base, guide, g2b, exact, base_index, guide_index)

    def project(self, guide_probs: np.ndarray) -> np.ndarray:
        """A guide distribution moved onto the base vocabulary (mass of unmapped tokens dropped)."""
        return self.project_sparse(guide_probs).dense()

    def project_sparse(self, guide_probs: np.ndarray) -> SparseDistribution:
        """`project` without the dense vector: its entries on the base tokens guide tokens reach.

        Each base token gets the sum of its guide tokens' probabilities added in guide-id order,
        as a dense np.bincount adds them, so `.dense()` is `project` bit for bit.
        """
        n = len(self._targets)
        # with weights, bincount sums them as float64 (its stubs know only the integer counts)
        values = cast("FloatArray", np.bincount(self._slots, weights=guide_probs, minlength=n + 1)[:n])
        return SparseDistribution(self._targets, values, self.n_base)

    def stats(self) -> BridgeStats:
        text = np.array([bool(p) for p in self.guide.pieces]) & ~np.isin(
            np.arange(len(self.guide.pieces)), list(self.guide.eog_ids)
        )
        return BridgeStats(
            guide_tokens=len(self.guide.pieces),
            exact=int((text & self.exact).sum()),
            prefix=int((text & self.mapped & ~self.exact).sum()),
            unmapped=int((text & ~self.mapped).sum()),
            control=int((~text).sum()),
        )


def _cache_path(cache_dir: Path, base: Vocabulary, guide: Vocabulary) -> Path:
    return cache_dir / f"bridge-{base.fingerprint()[:16]}-{guide.fingerprint()[:16]}.npz"


def _load_cached(cache_dir: Path, base: Vocabulary, guide: Vocabulary) -> tuple[np.ndarray, np.ndarray] | None:
    path = _cache_path(cache_dir, base, guide)
    try:
        with np.load(path) as data:
            g2b, exact = data["g2b"], data["exact"]
    except (OSError, KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile):
        return None  # missing, truncated or foreign (a lone .npy array is no archive: TypeError): rebuilt
    wanted = (len(guide.pieces),)
    if g2b.shape != wanted or exact.shape != wanted or g2b.dtype != np.int64 or exact.dtype != np.bool_:
        return None
    if ((g2b < UNMAPPED) | (g2b >= len(base.pieces))).any():
        return None
    return g2b, exact


def _save_cached(cache_dir: Path, base: Vocabulary, guide: Vocabulary, g2b: np.ndarray, exact: np.ndarray) -> None:
    path = _cache_path(cache_dir, base, guide)
    archive = io.BytesIO()
    np.savez(archive, g2b=g2b, exact=exact)
    try:
        replace_file(path, archive.getvalue())
    except OSError:
        pass  # an unwritable cache only costs a rebuild next time
