"""The blending math, as pure NumPy on probability vectors over one (the base's) vocabulary.

Nothing here knows about models: the guide's distribution arrives already projected onto the
base vocabulary (bridge.py), often as a SparseDistribution (distributions.py). Formulas follow
the paper (see docs/design.md):

    trigger:   intervene when  max p_B < gamma
    auto alpha = pG_max / (pB_max + pG_max) + 0.1 * p_B(argmax p_G), clipped to [0, 1]
    blend:     p = alpha * p_G + (1 - alpha) * p_B, renormalised
    ensemble:  the blend with alpha = 0.5 at every token
    proxy:     p ∝ p_B * p_G / p_G0 where the guide has mass, p_B elsewhere
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from blendin_local.engine.distributions import SparseDistribution

if TYPE_CHECKING:
    from blendin_local.engine.distributions import Distribution, FloatArray

AGREEMENT_BONUS = 0.1


def softmax(logits: FloatArray) -> FloatArray:
    # The same operations as np.exp(x - max) / sum, done in place: one array instead of three.
    shifted: FloatArray = logits - logits.max()
    if shifted.dtype.kind == "f":
        np.exp(shifted, out=shifted)
    else:
        shifted = np.exp(shifted)
    shifted /= shifted.sum()
    return shifted


def should_intervene(pB_max: float, gamma: float) -> bool:
    return pB_max < gamma


def top_of(p: Distribution) -> tuple[float, int]:
    """(max p, argmax p), the first index on ties."""
    if isinstance(p, SparseDistribution):
        return p.top
    i = int(p.argmax())
    return float(p[i]), i


def auto_alpha(p_base: FloatArray, p_guide: Distribution, pB_max: float | None = None) -> float:
    """`pB_max`: max p_base, when the caller has it already."""
    pB_max = float(p_base.max()) if pB_max is None else pB_max
    pG_max, guide_top = top_of(p_guide)
    if pB_max + pG_max == 0.0:
        return 0.0
    alpha = pG_max / (pB_max + pG_max) + AGREEMENT_BONUS * float(p_base[guide_top])
    return min(1.0, max(0.0, alpha))


def mix(p_base: FloatArray, p_guide: Distribution, alpha: float) -> FloatArray:
    """alpha * p_G + (1 - alpha) * p_B, renormalised. alpha = 0 gives p_B itself, bit for bit."""
    if alpha == 0.0:
        return p_base
    if isinstance(p_guide, SparseDistribution) and _mixes_sparse(p_base, alpha):
        return _mix_sparse(p_base, p_guide, alpha)
    if isinstance(p_guide, SparseDistribution):
        p_guide = p_guide.dense()
    mixed: FloatArray = alpha * p_guide + (1.0 - alpha) * p_base
    mixed = mixed / mixed.sum()
    return mixed


def _mixes_sparse(p_base: FloatArray, alpha: float) -> bool:
    """Whether the sparse mixture of a sparse guide is exact here: it reproduces the dense
    formula's roundings for a float32 base and a Python float alpha (not 0, where `mix` returns
    p_base itself)."""
    return alpha != 0.0 and type(alpha) is float and p_base.dtype == np.float32


def _mix_sparse(p_base: FloatArray, p_guide: SparseDistribution, alpha: float) -> FloatArray:
    """`mix` for a float32 base and a sparse guide, with the same roundings as the dense formula.

    Dense: fl64(fl64(alpha * g) + fl32((1 - alpha) * b)) everywhere. Where g is 0 that is the
    float32 product itself, so it is written first for the whole vector (one pass), and the
    guide's entries are added where it has any. The sum and the division then see the very same
    array as the dense formula's.
    """
    mixed = np.empty(len(p_base), dtype=np.float64)
    np.multiply(p_base, 1.0 - alpha, out=mixed, dtype=np.float32)
    idx = p_guide.index
    mixed[idx] = alpha * p_guide.values + mixed[idx]
    mixed /= mixed.sum()
    return mixed


def proxy_tune(p_base: FloatArray, p_guide: FloatArray, p_anti: FloatArray) -> FloatArray:
    """p_B * p_G / p_G0: the guide's shift from its untuned self applied to the base.

    Where the guide or its anti-model gives a token no mass (a base token the guide cannot
    express), the ratio is unknown and taken as 1, leaving the base's probability unchanged.
    """
    known = (p_guide > 0) & (p_anti > 0)
    ratio = np.ones_like(p_base)
    ratio[known] = p_guide[known] / p_anti[known]
    tuned: FloatArray = p_base * ratio
    tuned = tuned / tuned.sum()
    return tuned


_NEAR = 2.0**-50  # values closer than this (relative) to the maximum may tie with it once divided


class LazyMixture:
    """`mix(p_base, guide, alpha)` for a float32 base and a sparse guide, built only when read.

    `argmax()` is the greedy choice, exactly `np.argmax(mix(...))`, usually without the dense
    262k vector: it needs only the entries of the unnormalised mixture u that come near its
    maximum (the guide's entries, and the base's largest ones where the guide has none).
    Dividing by the sum is monotonic, so the first index of the maximum of u is the answer
    unless some other entry lies within a few ulps of that maximum (the division could then
    round both to the same value); in that case, or on degenerate input, the dense vector is
    built and asked. `base_max` (max p_base, when known) spares the pass over the whole base
    vocabulary when not even the base's top token can come near the maximum.
    """

    __slots__ = ("p_base", "guide", "alpha", "base_max", "_dense")

    def __init__(self, p_base: FloatArray, guide: SparseDistribution, alpha: float, base_max: float | None = None):
        self.p_base, self.guide, self.alpha, self.base_max = p_base, guide, alpha, base_max
        self._dense: FloatArray | None = None

    def dense(self) -> FloatArray:
        if self._dense is None:
            self._dense = _mix_sparse(self.p_base, self.guide, self.alpha)
        return self._dense

    def argmax(self) -> int:
        if self._dense is not None:
            return int(self._dense.argmax())
        choice = self._sparse_argmax()
        return int(self.dense().argmax()) if choice is None else choice

    def _sparse_argmax(self) -> int | None:
        c, idx = 1.0 - self.alpha, self.guide.index
        if len(idx) == 0 or c <= 0.0:
            return None
        # u where the guide has mass: fl64(alpha * g + fl32(c * b)), as the dense formula
        base_part = self.p_base[idx]
        np.multiply(base_part, c, out=base_part)  # in float32, as np.multiply(p_base, c) rounds
        u_on = self.alpha * self.guide.values
        u_on += base_part
        u_max = float(u_on.max())
        if not (0.0 < u_max < float("inf")):
            return None
        # elsewhere u = fl32(c * b), monotonic in b: only b above this bound can come near u_max
        floor = u_max * (1.0 - _NEAR)
        bound = np.float32(floor / c * (1.0 - 2.0**-20))
        if self.base_max is not None and self.base_max < bound:
            others = idx[:0]  # no base entry reaches the bound: the pass below would find none
        else:
            others = np.flatnonzero(self.p_base >= bound)
        if len(others):
            at = np.minimum(np.searchsorted(idx, others), len(idx) - 1)
            others = others[idx[at] != others]  # the guide's own entries are in u_on already
        near_max = u_on >= floor
        cand, cand_u = idx[near_max], u_on[near_max]
        if len(others):
            u_off = np.multiply(self.p_base[others], c).astype(np.float64)
            cand, cand_u = np.concatenate([cand, others]), np.concatenate([cand_u, u_off])
        top = float(cand_u.max())
        near = cand_u >= top * (1.0 - _NEAR)
        if not (cand_u[near] == top).all():
            return None  # a near tie: only the division itself can tell
        return int(cand[near].min())


def lazy_mix(
    p_base: FloatArray, p_guide: Distribution, alpha: float, base_max: float | None = None
) -> FloatArray | LazyMixture:
    """`mix` for the decode loop: a LazyMixture (dense only if read) where that is exact and cheaper.
    `base_max`: max p_base, when the caller has it already."""
    if isinstance(p_guide, SparseDistribution) and _mixes_sparse(p_base, alpha):
        return LazyMixture(p_base, p_guide, alpha, base_max)
    return mix(p_base, p_guide, alpha)


def as_array(p: FloatArray | LazyMixture) -> FloatArray:
    return p.dense() if isinstance(p, LazyMixture) else p


def argmax(p: FloatArray | LazyMixture) -> int:
    return p.argmax() if isinstance(p, LazyMixture) else int(np.argmax(p))


@dataclass(frozen=True)
class BlendedDistribution:
    probs: FloatArray | LazyMixture
    alpha: float


def blend(
    p_base: FloatArray, p_guide: Distribution, alpha: float | None, pB_max: float | None = None
) -> BlendedDistribution:
    """The BlendIn mixture with a fixed alpha, or the paper's auto alpha when alpha is None
    (`pB_max`: max p_base, when the caller has it already)."""
    weight = auto_alpha(p_base, p_guide, pB_max) if alpha is None else alpha
    return BlendedDistribution(lazy_mix(p_base, p_guide, weight, pB_max), weight)
