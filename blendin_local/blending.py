"""The blending math, as pure NumPy on probability vectors over one (the base's) vocabulary.

Nothing here knows about models: the guide's distribution arrives already projected onto the
base vocabulary (bridge.py). Formulas follow the paper (see docs/design.md):

    trigger:   intervene when  max p_B < gamma
    auto alpha = pG_max / (pB_max + pG_max) + 0.1 * p_B(argmax p_G), clipped to [0, 1]
    blend:     p = alpha * p_G + (1 - alpha) * p_B, renormalised
    ensemble:  the blend with alpha = 0.5 at every token
    proxy:     p ∝ p_B * p_G / p_G0 where the guide has mass, p_B elsewhere
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGREEMENT_BONUS = 0.1


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def should_intervene(pB_max: float, gamma: float) -> bool:
    return pB_max < gamma


def auto_alpha(p_base: np.ndarray, p_guide: np.ndarray) -> float:
    pB_max = float(p_base.max())
    pG_max = float(p_guide.max())
    if pB_max + pG_max == 0.0:
        return 0.0
    alpha = pG_max / (pB_max + pG_max) + AGREEMENT_BONUS * float(p_base[int(p_guide.argmax())])
    return min(1.0, max(0.0, alpha))


def mix(p_base: np.ndarray, p_guide: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * p_G + (1 - alpha) * p_B, renormalised. alpha = 0 gives p_B itself, bit for bit."""
    if alpha == 0.0:
        return p_base
    mixed = alpha * p_guide + (1.0 - alpha) * p_base
    return mixed / mixed.sum()


def proxy_tune(p_base: np.ndarray, p_guide: np.ndarray, p_anti: np.ndarray) -> np.ndarray:
    """p_B * p_G / p_G0: the guide's shift from its untuned self applied to the base.

    Where the guide or its anti-model gives a token no mass (a base token the guide cannot
    express), the ratio is unknown and taken as 1, leaving the base's probability unchanged.
    """
    known = (p_guide > 0) & (p_anti > 0)
    ratio = np.ones_like(p_base)
    ratio[known] = p_guide[known] / p_anti[known]
    tuned = p_base * ratio
    return tuned / tuned.sum()


@dataclass(frozen=True)
class BlendDecision:
    probs: np.ndarray
    alpha: float


def blend(p_base: np.ndarray, p_guide: np.ndarray, alpha: float | None) -> BlendDecision:
    """The BlendIn mixture with a fixed alpha, or the paper's auto alpha when alpha is None."""
    weight = auto_alpha(p_base, p_guide) if alpha is None else alpha
    return BlendDecision(mix(p_base, p_guide, weight), weight)
