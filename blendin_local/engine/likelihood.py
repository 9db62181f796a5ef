"""How likely a method finds a given answer: the log-probability of forced text.

Used to score multiple-choice questions a second way, by which option a method finds most
likely (blendin_local.eval). The text is forced token by token through the same cursors and
the same distributions as generation (one token per evaluation, as generation does, so that
llama.cpp's batch-dependent rounding treats every method alike): methods on the base
vocabulary score the base's tokens of the text, the guide alone its own tokens. Nudging
inserts words rather than sampling from a distribution, so it has no such score.
"""

from __future__ import annotations

import math

from blendin_local.engine.byte_tokens import tokens_for_bytes
from blendin_local.engine.generation import Generation
from blendin_local.engine.methods import GuideOnly, OnBaseVocabulary, guide_choosable
from blendin_local.errors import BlendinError

_FLOOR = 1e-300  # log of a token the method gives no mass at all: very unlikely, still finite


def forced_logprob(generation: Generation, prefix: str, text: str) -> float:
    """log P(text | prompt + prefix) under the generation's method; `prefix` is forced, not scored."""
    method, ctx = generation.method, generation.ctx
    total = 0.0
    for part, scored in ((prefix, False), (text, True)):
        data = part.encode("utf-8")
        if isinstance(method, OnBaseVocabulary):
            b = ctx.base.bridge
            for token in tokens_for_bytes(ctx.base.model.tokenize, b.base.pieces, b.base_prefix, data):
                next_token = method.next_token_distribution(ctx)
                if scored:
                    total += math.log(max(float(next_token.probs[token] / next_token.probs.sum()), _FLOOR))
                generation.commit(next_token.decide(token, ctx.base.model))
        elif isinstance(method, GuideOnly):
            b = ctx.guide.bridge
            for token in tokens_for_bytes(ctx.guide.model.tokenize, b.guide.pieces, b.guide_prefix, data):
                proposal = ctx.guide.propose()
                assert proposal.native is not None  # the guide alone never heals: its proposals are plain
                probs = guide_choosable(ctx.guide, proposal.native)
                if scored:
                    total += math.log(max(float(probs[token] / probs.sum()), _FLOOR))
                ctx.guide.take(proposal.anchor + [token])
        else:
            raise BlendinError(f"--method {generation.settings.method} has no token distribution to score text with")
    return total
