"""Speculative decoding across vocabularies: the guide drafts, the base evaluates the whole draft
in one batch, and the method's own steps then read the base's rows instead of evaluating one
token at a time.

A round, before a step whose base distribution nobody evaluated ahead:

1. The guide, caught up on the committed text through its cursor (healing included), writes its
   greedy continuation: up to K guide tokens, fewer at one of its end tokens or a full context.
   The draft is only a guess, so it is plain greedy: no penalties, no sampling.
2. The draft's bytes become base tokens: a guide token whose bytes are one base token stays one
   token, runs of others are tokenized by the base (byte_tokens.py: complete UTF-8 through its
   tokenizer, a broken tail by its longest pieces). An end token writes no bytes and is not
   drafted: the row after the last drafted token is there to end on.
3. The base evaluates the committed tokens plus the m drafted ones in one batch, with logits
   after the committed text and after each drafted token: m + 1 rows (BaseCursor.evaluate_ahead).
   m is capped so that the batch fits the base's context and the answer's remaining length.
4. The walk is the decode loop itself. Each step decides exactly as without speculation, from
   the same distributions; only where the base's row comes from differs. A step whose decision
   equals the drafted token accepts it and the next step reads the next row; the first decision
   that differs is committed, since it is the sequential decision, and the round is over (the
   next step finds no row ahead and starts a round). A round whose m tokens are all accepted
   gives one more token from its last row.

Rules where the walk needs more than the base's rows:
- The guide's distribution at a position where the base is unsure comes from the guide's cursor,
  as without speculation. Where the draft's evaluation already holds it (the cursor's tokens are
  a prefix of the draft's), the guide's cache answers without evaluating; where the position
  falls inside a guide token, the cursor heals as it always does and evaluates the one or two
  guide tokens that takes. So no round ends for want of the guide's distribution, and the
  decisions never depend on K.
- Stop strings, end tokens, triggers and max_tokens end the answer inside a round as they do
  without one: the rows left are not read.
- Rolling back: neither cache is cut when a draft is rejected. Each model's next evaluation keeps
  the longest common prefix of what its cache holds and what it is asked (backends/llama.py),
  which drops the rejected tail there.

Greedy or sampled, the text is therefore sequential decoding's, up to llama.cpp's batch-dependent
rounding: a row evaluated inside a batch can differ from the same row evaluated alone by a
rounding (docs/design.md), which matters only where two tokens nearly tie. A sampled answer
draws from the same distributions with the same random numbers (the draft takes none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from blendin_local.engine.blending import softmax
from blendin_local.engine.byte_tokens import tokens_for_bytes
from blendin_local.engine.methods import DecodeContext, choose_route, guide_choosable
from blendin_local.engine.model import ContextFull
from blendin_local.engine.sampling import SamplerSettings

if TYPE_CHECKING:
    from blendin_local.engine.base_cursor import BaseCursor
    from blendin_local.engine.guide_cursor import GuideCursor

# How a round ended: a decision differed from the drafted token; every drafted token was accepted;
# the answer ended inside it; the guide drafted nothing (it would end there, or no room was left).
ROUND_ENDS = ("rejected", "whole", "stopped", "empty")
_GREEDY = SamplerSettings()


@dataclass(frozen=True)
class SpeculationRound:
    """One round: the base tokens drafted, how many of them the answer took, and how it ended."""

    at: int  # the answer's token count when the round began
    drafted: int
    accepted: int
    ended: str  # one of ROUND_ENDS


def draft_pieces(guide: GuideCursor, k: int) -> list[bytes]:
    """The guide's greedy continuation of the committed text: at most `k` of its tokens' bytes."""
    proposal = guide.propose()
    rng = np.random.default_rng(0)  # greedy choices draw nothing; choose_route takes a generator
    tokens, first, _ = choose_route(guide, proposal, _GREEDY, rng)
    pieces, eog = [first], guide.model.eog_ids
    while len(pieces) < k and tokens[-1] not in eog:
        try:
            probs = softmax(guide.model.logits(tokens)[0])
        except ContextFull:
            break
        token = int(np.argmax(guide_choosable(guide, probs)))
        tokens.append(token)
        pieces.append(guide.bridge.guide.pieces[token])
    return [piece for piece in pieces if piece]


def as_base_tokens(pieces: list[bytes], base: BaseCursor) -> list[int]:
    """The draft as base tokens. A guide piece that is a base token stays one, so the draft keeps
    the guide's boundaries where the base can (as a model writing the text would, rather than as
    its tokenizer would cut the whole); runs of other pieces go through the base's tokenizer."""
    b, model = base.bridge, base.model
    tokens: list[int] = []
    run = b""
    for piece in pieces:
        token = b.base_index.get(piece)
        if token is None:
            run += piece
            continue
        if run:
            tokens += tokens_for_bytes(model.tokenize, b.base.pieces, b.base_prefix, run)
            run = b""
        tokens.append(token)
    if run:
        tokens += tokens_for_bytes(model.tokenize, b.base.pieces, b.base_prefix, run)
    return tokens


class Speculation:
    """Runs rounds of `k` drafted guide tokens for one generation, and records them."""

    def __init__(self, k: int):
        self.k = k
        self.rounds: list[SpeculationRound] = []
        # The round under way: (the answer's tokens at its start, the base's tokens then, the draft).
        self._open: tuple[int, int, list[int]] | None = None

    def before_step(self, ctx: DecodeContext, answer_tokens: int, remaining: int) -> None:
        """Start a round unless this step's base distribution was evaluated ahead. `answer_tokens`:
        the answer's length so far; `remaining`: the steps the answer may still take."""
        if ctx.base.reads_ahead():
            return
        self.close(ctx)
        base = ctx.base
        room = min(remaining - 1, base.model.n_ctx - len(base.tokens))
        drafted: list[int] = []
        if room > 0:
            try:
                pieces = draft_pieces(ctx.guide, self.k)
            except ContextFull:
                pieces = []  # the guide's context is full: the step itself ends the answer ("context")
            drafted = as_base_tokens(pieces, base)[:room]
        self._open = (answer_tokens, len(base.tokens), drafted)
        if drafted:
            base.evaluate_ahead(drafted)

    def close(self, ctx: DecodeContext, stopped: bool = False) -> None:
        """Record the open round, if any; `stopped`: the answer has ended."""
        if self._open is None:
            return
        at, start, drafted = self._open
        self._open = None
        taken = ctx.base.tokens[start:]
        accepted = 0
        while accepted < min(len(taken), len(drafted)) and taken[accepted] == drafted[accepted]:
            accepted += 1
        if not drafted:
            ended = "empty"
        elif accepted == len(drafted):
            ended = "whole"
        elif stopped and accepted == len(taken):
            ended = "stopped"
        else:
            ended = "rejected"
        self.rounds.append(SpeculationRound(at, len(drafted), accepted, ended))


@dataclass(frozen=True)
class SpeculationStats:
    """A generation's rounds added up, as the shells report them."""

    rounds: int
    drafted: int
    accepted: int
    ended: dict[str, int]  # rounds by how they ended

    @classmethod
    def of(cls, rounds: list[SpeculationRound]) -> SpeculationStats | None:
        if not rounds:
            return None
        ended = {reason: sum(r.ended == reason for r in rounds) for reason in ROUND_ENDS}
        return cls(len(rounds), sum(r.drafted for r in rounds), sum(r.accepted for r in rounds), ended)

    @property
    def acceptance(self) -> float:
        """The share of drafted base tokens the answer took."""
        return self.accepted / self.drafted if self.drafted else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "acceptance": round(self.acceptance, 4)}

    def line(self) -> str:
        return (
            f"speculative: {self.rounds} rounds, {self.accepted} of {self.drafted} drafted tokens accepted"
            f" ({100 * self.acceptance:.1f}%)"
        )
