"""Choosing a token from a probability vector: greedy, or sampled with llama.cpp's filters.

Fixed order, as in llama.cpp's default chain: top-k, then top-p, then min-p on the model's
own probabilities, then the temperature on what survives. temperature = 0 is greedy (argmax,
lowest id on ties), whatever the filters say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from blendin_local.engine.blending import LazyMixture, argmax, as_array

if TYPE_CHECKING:
    from blendin_local.engine.distributions import FloatArray, IdArray

_PARTIAL_SORT = 4096  # top-p rarely needs more than this many tokens sorted


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filter_candidates(probs: FloatArray, settings: SamplerSettings) -> IdArray:
    """Ids of the tokens that survive top-k, top-p and min-p, most probable first."""
    candidates: IdArray = np.flatnonzero(probs > 0)
    if settings.top_k > 0 and settings.top_k < len(candidates):
        candidates = candidates[np.argpartition(-probs[candidates], settings.top_k - 1)[: settings.top_k]]
    total = probs[candidates].sum()
    candidates = _sorted_by_prob(probs, candidates, settings.top_p)
    if settings.top_p < 1.0 and len(candidates):
        cumulative = np.cumsum(probs[candidates]) / total
        candidates = candidates[: int(np.searchsorted(cumulative, settings.top_p)) + 1]
    if settings.min_p > 0.0 and len(candidates):
        candidates = candidates[probs[candidates] >= settings.min_p * probs[candidates[0]]]
    return candidates


def _sorted_by_prob(probs: FloatArray, candidates: IdArray, top_p: float) -> IdArray:
    if top_p < 1.0 and len(candidates) > _PARTIAL_SORT:
        head = candidates[np.argpartition(-probs[candidates], _PARTIAL_SORT - 1)[:_PARTIAL_SORT]]
        if probs[head].sum() >= top_p * probs[candidates].sum():
            candidates = head
    return candidates[np.argsort(-probs[candidates], kind="stable")]


def choose(probs: FloatArray | LazyMixture, settings: SamplerSettings, rng: np.random.Generator) -> int:
    if settings.greedy:
        return argmax(probs)
    probs = as_array(probs)
    candidates = filter_candidates(probs, settings)
    if len(candidates) == 0:
        return int(np.argmax(probs))
    # exp((log p - log p_max) / T): the same as p^(1/T) up to scale, without underflowing to 0
    logp = np.log(probs[candidates].astype(np.float64))
    weights = np.exp((logp - logp.max()) / settings.temperature)
    return int(candidates[rng.choice(len(candidates), p=weights / weights.sum())])
