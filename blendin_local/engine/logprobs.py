"""The log-probability of each chosen token and of its most likely alternatives, as OpenAI's
`logprobs` report them.

What is reported is the distribution the method chose from, step 1 of sampling.py's order of
operations: the base's own, the blend at an intervention, the guide's own for its tokens. That
is before the penalties, the filters and the temperature, as llama-server reports them by
default (its `post_sampling_probs` off) and as OpenAI documents them: the model's probabilities,
not the sampler's. Each distribution is renormalised over what could be chosen (the guide's
without its silent control tokens).

Where the guide writes its next text at a healed boundary (guide_cursor.py) the entries are its
routes: the rest of each of its tokens that extends the bytes already written, and each whole
token after them, every route written as the bytes it adds.

The work is done only when asked (`top_logprobs` set): one pass over the distribution for the
normaliser and one partial sort for the alternatives, per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from blendin_local.engine.blending import LazyMixture, as_array

if TYPE_CHECKING:
    from blendin_local.engine.distributions import FloatArray
    from blendin_local.engine.model import LanguageModel

MAX_TOP_LOGPROBS = 20  # OpenAI's limit on top_logprobs
# OpenAI's stand-in for the log of a probability that is 0 (or below float's range): JSON has no -inf.
LOGPROB_FLOOR = -9999.0


@dataclass(frozen=True)
class Alternative:
    token: str  # the piece as text; bytes that are not UTF-8 written as \x escapes
    bytes: tuple[int, ...]  # the piece exactly
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log-probability, and the `k` most likely entries of its distribution (the
    chosen one among them when it is one of the k), most likely first."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top_logprobs: tuple[Alternative, ...]


def piece_namer(model: LanguageModel) -> Callable[[int], bytes]:
    """A token's bytes as a report names it: its piece; for a control token that writes nothing
    (an end of turn, say), its own text, such as <end_of_turn>."""
    pieces = model.pieces

    def piece_of(token: int) -> bytes:
        piece = pieces[token]
        if piece or (token not in model.control_ids and token not in model.eog_ids):
            return piece
        return model.token_bytes(token, special=True)

    return piece_of


def alternative(piece: bytes, probability: float) -> Alternative:
    logprob = float(np.log(probability)) if probability > 0.0 else LOGPROB_FLOOR
    return Alternative(piece.decode("utf-8", "backslashreplace"), tuple(piece), max(logprob, LOGPROB_FLOOR))


def token_logprob(
    probs: FloatArray | LazyMixture, chosen: int, k: int, piece_of: Callable[[int], bytes]
) -> TokenLogprob:
    """Entry `chosen` of `probs` (any non-negative weights: they are normalised) and its `k` most
    likely entries, each named by `piece_of(entry)`. Ties keep the lower entry first."""
    p = as_array(probs)
    total = float(p.sum(dtype=np.float64))
    scale = 1.0 / total if total > 0.0 else 0.0
    top: list[Alternative] = []
    if k > 0:
        candidates = np.flatnonzero(p > 0) if len(p) <= k else np.argpartition(-p, k - 1)[:k]
        candidates = candidates[p[candidates] > 0]
        ordered = candidates[np.lexsort((candidates, -p[candidates]))]
        top = [alternative(piece_of(int(i)), float(p[i]) * scale) for i in ordered]
    chosen_one = alternative(piece_of(chosen), float(p[chosen]) * scale)
    return TokenLogprob(chosen_one.token, chosen_one.bytes, chosen_one.logprob, tuple(top))
