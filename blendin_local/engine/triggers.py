"""Two more moments to consult the guide, besides the base being unsure (the paper's trigger).

- **A loop.** The base is confident, but its top token would complete an n-gram of tokens that
  the answer already holds in its last `window` tokens: it is about to repeat itself. BlendIn
  treats the step as uncertain and blends. When the answer nevertheless keeps repeating itself
  (LOOP_STOP_TOKENS tokens in a row, each completing an n-gram already in the window) the
  generation ends with stop_reason "loop": the rest would be more of the same.
- **An ending.** A pre-trained base rarely writes an end token, and "the answer is finished" is
  a place where it is seldom unsure, so BlendIn alone runs answers to the length limit. At a
  natural boundary (the answer so far ends a line or a sentence) the guide is asked whether the
  answer is finished: its end-of-turn probability there, at or above a threshold, ends the answer
  (stop_reason "eos").

Pure functions on token ids and bytes; methods.BlendIn holds the per-answer state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blendin_local.engine.distributions import SparseDistribution

# A loop that blending did not break ends the answer after this many repeating tokens in a row:
# some 32 tokens copied from the answer's own recent text is a loop, not a list or a quote.
LOOP_STOP_TOKENS = 32
# The answer so far, without trailing spaces, ends with one of these: a line or a sentence ends.
BOUNDARY_ENDS = (b"\n", b".", b"!", b"?")


@dataclass(frozen=True)
class LoopTrigger:
    ngram: int  # tokens in the n-gram that must not repeat
    window: int  # the answer's last tokens searched for it


@dataclass(frozen=True)
class EndingTrigger:
    threshold: float  # the guide's end-of-turn probability at a boundary that ends the answer


def repeats_ngram(answer: Sequence[int], candidate: int, ngram: int, window: int) -> bool:
    """Whether `candidate` after `answer` completes an n-gram of `ngram` tokens that already occurs
    in the last `window` tokens of `answer`."""
    if ngram < 1 or len(answer) < ngram:
        return False
    recent = np.asarray(answer[-window:], dtype=np.int64)
    if len(recent) < ngram:
        return False
    wanted = np.asarray([*answer[len(answer) - ngram + 1 :], candidate], dtype=np.int64)
    # Candidate positions first (a cheap filter), then the whole n-gram at each of them.
    ends = np.flatnonzero(recent[ngram - 1 :] == candidate)
    return any(np.array_equal(recent[end : end + ngram], wanted) for end in ends.tolist())


def at_boundary(answer_bytes: bytes) -> bool:
    """Whether the answer so far ends a line or a sentence."""
    return answer_bytes.rstrip(b" ").endswith(BOUNDARY_ENDS)


def end_probability(guide_on_base: SparseDistribution, eos_id: int) -> float:
    """The guide's end-of-turn probability, as projected on the base vocabulary (every guide
    end-of-generation token lands on the base's end token)."""
    i = int(np.searchsorted(guide_on_base.index, eos_id))
    if i < len(guide_on_base.index) and int(guide_on_base.index[i]) == eos_id:
        return float(guide_on_base.values[i])
    return 0.0
