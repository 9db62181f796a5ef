"""The guide's view of the shared response text, and its proposals on the base vocabulary.

The response grows by base tokens. The guide keeps its own tokens for the part it has
"settled" plus the committed bytes it has not (its tail). When consulted, the tail is turned
into guide tokens, and when the text ends inside what would be one guide token (say the base
wrote `'` where the guide writes `'s`), the guide is *healed*: backed up to the last token
boundary (the anchor) and asked only for tokens that start with the bytes already written (h).
Its proposal is then a distribution over what comes after the committed text:

- extensions t of h, with p0(t) / Z, each proposing the rest of t beyond h;
- when h is itself a guide token q, everything after q, with p0(q) / Z * p1(.),

where p0 is the guide's distribution at the anchor, p1 after q, and Z the mass of q and its
extensions. Each proposed byte string lands on the base token with exactly those bytes, else on
the longest base token that starts it (the guide finishes its token on later steps).

When a base token is committed after a consultation, the guide settles: if the bytes complete
one of its proposals exactly, it takes that guide token as its own; if they are only the start of
a more probable proposal, it heals on the next consultation; otherwise the bytes become tail.
Comparing the single most probable exact and partial proposals (not sums) keeps the guide on
its own greedy path when it decides every token, which is what makes alpha = 1 reproduce the
guide alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from blendin_local.engine.base_cursor import silent_controls
from blendin_local.engine.blending import softmax
from blendin_local.engine.bridge import UNMAPPED, VocabBridge
from blendin_local.engine.byte_tokens import tokens_for_bytes
from blendin_local.engine.distributions import SparseDistribution

if TYPE_CHECKING:
    from blendin_local.engine.distributions import FloatArray, IdArray
    from blendin_local.engine.model import LanguageModel

EXTENSION_ROUTES = 64  # extensions of h kept per healing step; the rest carry negligible mass


@dataclass
class GuideState:
    tokens: list[int]  # prompt + settled response tokens
    tail: list[bytes] = field(default_factory=list)  # committed pieces after `tokens`, not settled
    healing: bool = False  # the tail is the start of one guide token the guide was writing


@dataclass(frozen=True)
class Route:
    tokens: tuple[int, ...]  # guide tokens appended to the anchor when this route is taken
    rest: bytes  # the bytes it proposes after the committed text
    mass: float


class Proposal:
    """The guide's next-bytes distribution at one step, and how to settle after a commit."""

    __slots__ = ("anchor", "h", "on_base_sparse", "_dense", "native", "native_prefix", "extension_routes")

    def __init__(
        self,
        anchor: list[int],
        h: bytes,
        on_base: SparseDistribution,
        native: FloatArray | None,
        native_prefix: tuple[int, ...],
        extension_routes: list[Route],
    ):
        self.anchor, self.h = anchor, h
        self.on_base_sparse = (
            on_base  # over the base vocabulary, summing to at most 1; sparse, as the blending math takes it
        )
        self._dense: FloatArray | None = None
        self.native = native  # guide probabilities of the full-token routes (after h, or after q)
        self.native_prefix = native_prefix  # tokens before a full-token route: () or (q,)
        self.extension_routes = extension_routes

    @property
    def on_base(self) -> FloatArray:
        """The same distribution as a dense vector, built only if someone reads it."""
        if self._dense is None:
            self._dense = self.on_base_sparse.dense()
        return self._dense

    def __repr__(self) -> str:
        return f"Proposal(anchor=[{len(self.anchor)} tokens], h={self.h!r}, native_prefix={self.native_prefix})"


class GuideCursor:
    def __init__(self, model: LanguageModel, bridge: VocabBridge, prompt: Sequence[int]):
        self.model, self.bridge = model, bridge
        self.state = GuideState(tokens=list(prompt))
        self._blocked: IdArray | None = None

    @property
    def blocked(self) -> IdArray:
        """The guide's silent control tokens (never chosen), computed on first use."""
        if self._blocked is None:
            self._blocked = silent_controls(self.model)
        return self._blocked

    # -- consultation -----------------------------------------------------------------------

    def propose(self) -> Proposal:
        anchor, h = self._resolve()
        return self._healed(anchor, h) if h else self._plain(anchor)

    def _plain(self, anchor: list[int]) -> Proposal:
        p0 = softmax(self.model.logits(anchor)[0])
        return Proposal(anchor, b"", self.bridge.project_sparse(p0), p0, (), [])

    def _healed(self, anchor: list[int], h: bytes) -> Proposal:
        b = self.bridge
        q = b.guide_index.get(h)
        rows = self.model.logits(anchor + [q], n_last=2) if q is not None else self.model.logits(anchor)
        p0 = softmax(rows[0])
        extensions = b.guide_extensions.of(h)
        p_ext = p0[extensions]
        z = float(p_ext.sum()) + (float(p0[q]) if q is not None else 0.0)
        if z == 0.0:  # the guide gives no continuation of h any mass: read h as it tokenizes
            return self._plain(anchor + self.tokenize(h))
        landed: dict[int, float] = {}  # base token -> mass of the routes landing on it, in route order
        routes = []
        for i in np.argsort(-p_ext, kind="stable")[:EXTENSION_ROUTES]:
            token = int(extensions[i])
            rest = b.guide.pieces[token][len(h) :]
            target = b.base_index.get(rest, UNMAPPED)
            if target == UNMAPPED:
                target = b.base_prefix.longest(rest)
            mass = float(p_ext[i]) / z
            routes.append(Route((token,), rest, mass))
            if target != UNMAPPED:
                landed[target] = landed.get(target, 0.0) + mass
        native = None
        index: IdArray = np.array(sorted(landed), dtype=np.int64)
        values = np.array([landed[t] for t in index.tolist()], dtype=np.float64)
        if q is not None:
            native = (float(p0[q]) / z) * softmax(rows[1])
            projected = b.project_sparse(native)
            # the routes' masses plus the projection, added in that order, as on dense vectors
            union = np.union1d(index, projected.index)
            summed = np.zeros(len(union))
            summed[np.searchsorted(union, index)] = values
            summed[np.searchsorted(union, projected.index)] += projected.values
            index, values = union, summed
        on_base = SparseDistribution(index, values, b.n_base)
        return Proposal(anchor, h, on_base, native, (q,) if q is not None else (), routes)

    def _resolve(self) -> tuple[list[int], bytes]:
        """(anchor tokens, healing bytes h) for the committed text."""
        s, b = self.state, self.bridge
        if not s.tail:
            return s.tokens, b""
        written = b"".join(s.tail)
        if s.healing:
            if b.guide_extensions.exist(written):
                return s.tokens, written
            if written in b.guide_index:
                return s.tokens + [b.guide_index[written]], b""
        elif all(piece in b.guide_index for piece in s.tail):
            # The base's boundaries are guide boundaries too: keep them, as the base does.
            return s.tokens + [b.guide_index[piece] for piece in s.tail], b""
        ids = self.tokenize(written)
        if not ids:
            return s.tokens, b""
        last = b.guide.pieces[ids[-1]]
        if s.tail[-1] not in b.guide_index and b.guide_extensions.exist(last):
            return s.tokens + ids[:-1], last
        return s.tokens + ids, b""

    def tokenize(self, data: bytes) -> list[int]:
        b = self.bridge
        return tokens_for_bytes(self.model.tokenize, b.guide.pieces, b.guide_prefix, data)

    # -- committing -------------------------------------------------------------------------

    def commit(self, piece: bytes, proposal: Proposal | None = None) -> None:
        """Committed bytes chosen by others; `proposal` if the guide was consulted for them."""
        if proposal is None:
            self.state.tail.append(piece)
        else:
            self.state = self._settle(proposal, piece)

    def take(self, tokens: list[int]) -> None:
        """The guide chose these tokens itself: they are its settled sequence now."""
        self.state = GuideState(tokens)

    def _settle(self, p: Proposal, piece: bytes) -> GuideState:
        b = self.bridge
        exact: tuple[float, list[int]] | None = None
        partial: tuple[float, list[int], bytes] | None = None
        if p.native is not None:
            anchor = p.anchor + list(p.native_prefix)
            token = b.guide_index.get(piece)
            if token is not None:
                exact = (float(p.native[token]), anchor + [token])
            longer = b.guide_extensions.of(piece)
            if len(longer):
                partial = (float(p.native[longer].max()), anchor, piece)
        for route in p.extension_routes:
            if route.rest == piece and (exact is None or route.mass > exact[0]):
                exact = (route.mass, p.anchor + list(route.tokens))
            elif route.rest.startswith(piece) and (partial is None or route.mass > partial[0]):
                partial = (route.mass, p.anchor, p.h + piece)
        if exact is not None and (partial is None or exact[0] >= partial[0]):
            return GuideState(exact[1])
        if partial is not None and partial[0] > 0.0:
            return GuideState(partial[1], [partial[2]], healing=True)
        return GuideState(p.anchor, [p.h, piece] if p.h else [piece])
