"""Choosing a token from a probability vector: repetition penalties, then greedy, or a draw after
llama.cpp's filters.

Order of operations (docs/design.md, "Sampling: order of operations"):

1. the method's distribution over one vocabulary (a model's own, or a blend of two);
2. the penalties, over the last `repeat_last_n` tokens of the model whose vocabulary the choice is
   made in (its prompt included: llama.cpp feeds its samplers the prompt's tokens too; -1 = every
   token of the context, 0 = none);
3. greedy (temperature 0): the argmax, lowest id on ties; nothing below applies;
4. top-k, then top-p, then min-p, on the penalised probabilities;
5. the temperature, on what survives, then the draw.

This is llama.cpp's default sampler chain (common/common.h: penalties, DRY, top-n-sigma, top-k,
typical-p, top-p, min-p, XTC, temperature, then the draw) without the steps this engine does not
have, all of which are off by default there too.

The penalties are llama.cpp's, applied to log-probabilities instead of logits, since a blend has
no logits: for a token that occurs `count` times in the window,

    log p  ->  log p * repeat_penalty - (count * frequency_penalty + presence_penalty)

then the vector is renormalised. llama.cpp multiplies a logit <= 0 and divides a positive one;
every log-probability is <= 0, so it is always multiplied. The same penalty is therefore gentler
here on a confident token than in llama.cpp: at 1.1 a repeated token at p = 0.99 stays at 0.990,
while llama.cpp divides its raw logit (some 15 to 30) by 1.1. With every penalty off, `penalise`
returns its input itself and `choose` does exactly what it did without penalties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from blendin_local.engine.blending import LazyMixture, argmax, as_array

if TYPE_CHECKING:
    from blendin_local.engine.distributions import FloatArray, IdArray

_PARTIAL_SORT = 4096  # top-p rarely needs more than this many tokens sorted

# llama.cpp's defaults (common/common.h). A request that samples and leaves top-k, top-p or min-p
# unset gets theirs (GenerationSettings.sampler()); repeat_last_n's is the setting's default.
LLAMA_CPP_TOP_K = 40
LLAMA_CPP_TOP_P = 0.95
LLAMA_CPP_MIN_P = 0.05
LLAMA_CPP_REPEAT_LAST_N = 64
WHOLE_CONTEXT = -1  # repeat_last_n: every token the model has been given


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repeat_penalty: float = 1.0  # 1 = off
    repeat_last_n: int = LLAMA_CPP_REPEAT_LAST_N  # 0 = off, WHOLE_CONTEXT = all
    presence_penalty: float = 0.0  # 0 = off
    frequency_penalty: float = 0.0  # 0 = off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalises(self) -> bool:
        """Whether any penalty changes a distribution."""
        return self.repeat_last_n != 0 and (
            self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        )


def window_counts(history: Sequence[int], last_n: int) -> tuple[IdArray, IdArray]:
    """(tokens, how often each occurs) in the last `last_n` tokens of `history`; tokens sorted."""
    if last_n == 0:
        recent: Sequence[int] = ()
    else:
        recent = history if last_n == WHOLE_CONTEXT else history[-last_n:]
    tokens, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    return tokens, counts


def penalised_logp(logp: FloatArray, counts: IdArray, settings: SamplerSettings) -> FloatArray:
    """Log-probabilities of tokens seen `counts` times (each >= 1) in the window, penalised."""
    out: FloatArray = logp * settings.repeat_penalty - (counts * settings.frequency_penalty + settings.presence_penalty)
    return out


def penalise(
    probs: FloatArray | LazyMixture,
    history: Sequence[int],
    settings: SamplerSettings,
    entry_tokens: IdArray | None = None,
) -> FloatArray | LazyMixture:
    """`probs` renormalised with every token of the window penalised (float64); `probs` itself
    when no penalty is on. `entry_tokens`: the token each entry stands for, where that is not the
    entry's index (a choice between routes that each end in a token)."""
    if not settings.penalises:
        return probs
    tokens, counts = window_counts(history, settings.repeat_last_n)
    if entry_tokens is None:
        entries = tokens
    else:
        entries = np.flatnonzero(np.isin(entry_tokens, tokens))
        counts = counts[np.searchsorted(tokens, entry_tokens[entries])]
    if len(entries) == 0:
        return probs  # no token of the window can be chosen here
    out = np.array(as_array(probs), dtype=np.float64)  # a copy: the method's vector stays as it was
    total = out.sum()
    if not total > 0.0:
        return probs  # nothing to choose from: choose() falls back as it does without penalties
    with np.errstate(divide="ignore"):  # log 0 = -inf: a token without probability keeps none
        logp = penalised_logp(np.log(out[entries] / total), counts, settings)
    # The other entries keep their scale, `total`: one pass less over the vocabulary than
    # normalising first. Negative presence or frequency penalties may lift a log-probability above
    # 0: everything is then scaled down by the largest, as a softmax does, so that exp cannot overflow.
    shift = max(0.0, float(logp.max()))
    if shift > 0.0:
        out *= np.exp(-shift)
    out[entries] = np.exp(logp - shift) * total
    z = out.sum()
    if z == 0.0:
        # Every token with probability is in the window, penalised beyond float64's range (a long
        # window, a few candidates): they keep their order, as in a softmax of the penalised logs.
        out[entries] = np.exp(logp - logp.max())
        z = out.sum()
    out *= 1.0 / z  # a multiplication: half the time of a division over 262k entries
    return out


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


def choose(
    probs: FloatArray | LazyMixture,
    settings: SamplerSettings,
    rng: np.random.Generator,
    history: Sequence[int],
    entry_tokens: IdArray | None = None,
) -> int:
    """The chosen entry of `probs`. `history`: the tokens so far, prompt included, of the model
    whose vocabulary `probs` is over (the penalties count the last `repeat_last_n` of them);
    `entry_tokens` as for `penalise`."""
    probs = penalise(probs, history, settings, entry_tokens)
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
