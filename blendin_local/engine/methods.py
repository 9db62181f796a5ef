"""Decoding methods as interchangeable objects: each decides the next piece of text.

The loop (generation.py) calls `step(ctx)` and commits the StepDecision it returns to both
models' cursors; a method only reads distributions and chooses. All but `guide` choose a base
token; `guide` and Nudging's inserted words choose guide tokens.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from blendin_local.engine.base_cursor import BaseCursor
from blendin_local.engine.blending import LazyMixture, as_array, blend, proxy_tune, should_intervene, softmax, top_of
from blendin_local.engine.guide_cursor import GuideCursor, Proposal
from blendin_local.engine.logprobs import TokenLogprob, piece_namer, token_logprob
from blendin_local.engine.sampling import SamplerSettings, choose
from blendin_local.engine.settings import GAMMA_EVERY_TOKEN
from blendin_local.engine.triggers import (
    LOOP_STOP_TOKENS,
    EndingTrigger,
    LoopTrigger,
    at_boundary,
    end_probability,
    repeats_ngram,
)

if TYPE_CHECKING:
    from blendin_local.engine.distributions import FloatArray
    from blendin_local.engine.model import LanguageModel

METHODS = ("base", "guide", "nudging", "blendin", "ensemble", "proxy")


@dataclass
class StepDecision:
    """What one step commits: a piece of text, who chose it, and the tokens it was chosen as."""

    piece: bytes
    source: str  # "base": the base alone; "blend": an intervention; "guide": the guide's own token
    base_token: int | None = None  # the base token chosen, when the choice was on the base vocabulary
    guide_tokens: list[int] | None = None  # the guide's whole token sequence, when the guide chose
    proposal: Proposal | None = None  # the guide's proposal, when it was consulted for a base token
    anti_proposal: Proposal | None = None
    base_top_p: float | None = None
    alpha: float | None = None
    guide_rank: int | None = None  # at an intervention: the rank of the guide's top token in p_B (0 = top)
    end: bool = False  # the answer ends here: an end-of-generation token, or a trigger's decision
    end_reason: str = "eos"  # the generation's stop_reason when `end`: eos, or loop
    end_probability: float | None = None  # the guide's, when the ending trigger asked it at this step
    logprob: TokenLogprob | None = None  # the chosen piece's, when they were asked for (logprobs.py)


class NextTokenDistribution:
    """A method's distribution over the base vocabulary for the next token, and why.

    `probs` may be given as a blending.LazyMixture: the greedy choice then needs no dense vector,
    and reading `probs` builds it (the same array `blending.mix` gives).
    """

    __slots__ = ("distribution", "source", "base_top_p", "alpha", "guide_rank", "proposal", "anti_proposal")

    def __init__(
        self,
        probs: FloatArray | LazyMixture,
        source: str,
        base_top_p: float | None,
        alpha: float | None = None,
        guide_rank: int | None = None,
        proposal: Proposal | None = None,
        anti_proposal: Proposal | None = None,
    ):
        self.distribution = probs
        self.source, self.base_top_p, self.alpha, self.guide_rank = source, base_top_p, alpha, guide_rank
        self.proposal, self.anti_proposal = proposal, anti_proposal

    @property
    def probs(self) -> np.ndarray:
        return as_array(self.distribution)

    def decide(self, token: int, model: LanguageModel) -> StepDecision:
        return StepDecision(
            piece=model.pieces[token],
            source=self.source,
            base_token=token,
            proposal=self.proposal,
            anti_proposal=self.anti_proposal,
            base_top_p=self.base_top_p,
            alpha=self.alpha,
            guide_rank=self.guide_rank,
            end=token in model.eog_ids,
        )


@dataclass
class DecodeContext:
    base: BaseCursor
    guide: GuideCursor
    anti: GuideCursor | None
    sampler: SamplerSettings
    rng: np.random.Generator
    top_logprobs: int | None = None  # report each chosen token's log-probability and this many alternatives

    def base_decision(self, next_token: NextTokenDistribution) -> StepDecision:
        # The base's tokens are settled: reading its distribution turned any pending bytes into tokens.
        token = choose(next_token.distribution, self.sampler, self.rng, self.base.tokens)
        decision = next_token.decide(token, self.base.model)
        if self.top_logprobs is not None:
            decision.logprob = token_logprob(
                next_token.distribution, token, self.top_logprobs, piece_namer(self.base.model)
            )
        return decision

    def guide_decision(
        self, tokens: list[int], piece: bytes, base_top_p: float | None, logprob: TokenLogprob | None = None
    ) -> StepDecision:
        return StepDecision(
            piece=piece,
            source="guide",
            guide_tokens=tokens,
            base_top_p=base_top_p,
            end=tokens[-1] in self.guide.model.eog_ids,
            logprob=logprob,
        )

    def guide_logprob(self, probs: np.ndarray, token: int) -> TokenLogprob | None:
        """A guide token's log-probability in `probs`, when they were asked for."""
        if self.top_logprobs is None:
            return None
        return token_logprob(probs, token, self.top_logprobs, piece_namer(self.guide.model))


class Method(Protocol):
    """A decoding method: it reads the models' distributions through `ctx` and decides one step."""

    def step(self, ctx: DecodeContext) -> StepDecision: ...


class OnBaseVocabulary(ABC):
    """A method that chooses from a distribution over the base vocabulary."""

    @abstractmethod
    def next_token_distribution(self, ctx: DecodeContext) -> NextTokenDistribution: ...

    def step(self, ctx: DecodeContext) -> StepDecision:
        return ctx.base_decision(self.next_token_distribution(ctx))


class BaseOnly(OnBaseVocabulary):
    def next_token_distribution(self, ctx: DecodeContext) -> NextTokenDistribution:
        p = ctx.base.probs()
        return NextTokenDistribution(p, "base", float(p.max()))


class GuideOnly:
    """The guide alone, on its own tokens (it decides every token, so it never heals)."""

    def step(self, ctx: DecodeContext) -> StepDecision:
        proposal = ctx.guide.propose()
        assert proposal.native is not None  # the guide alone never heals: its proposals are plain
        probs = guide_choosable(ctx.guide, proposal.native)
        token = choose(probs, ctx.sampler, ctx.rng, proposal.anchor)
        pieces = ctx.guide.bridge.guide.pieces
        return ctx.guide_decision(proposal.anchor + [token], pieces[token], None, ctx.guide_logprob(probs, token))


def guide_choosable(cursor: GuideCursor, probs: np.ndarray) -> np.ndarray:
    """Guide probabilities without control tokens that write nothing and do not end the text."""
    blocked = cursor.blocked
    if len(blocked):
        probs = probs.copy()
        probs[blocked] = 0.0
    return probs


@dataclass
class BlendIn(OnBaseVocabulary):
    """The paper's method: the base decides while confident, else the reliability-weighted blend.
    Ensemble is this with alpha = 0.5 at every token.

    Past the paper (triggers.py), both off unless given: `loop` also blends where the confident
    base is about to repeat an n-gram of its recent answer, and ends the answer ("loop") when it
    keeps repeating; `ending` asks the guide at each line or sentence end whether the answer is
    finished, and ends it ("eos") if so.
    """

    gamma: float  # the defaults of both live in GenerationSettings
    alpha: float | None  # None: the paper's auto alpha
    loop: LoopTrigger | None = None
    ending: EndingTrigger | None = None
    answer_start: int | None = None  # where the answer begins in the base's tokens (set at the first step)
    repeating: int = 0  # answer tokens in a row that each completed an n-gram already in the loop window

    def step(self, ctx: DecodeContext) -> StepDecision:
        if self.loop is None and self.ending is None:
            return super().step(ctx)
        if self.answer_start is None:
            self.answer_start = len(ctx.base.tokens)
        answer = ctx.base.tokens[self.answer_start :]
        if self.loop is not None and answer:
            loop = self.loop
            self.repeating = (
                self.repeating + 1 if repeats_ngram(answer[:-1], answer[-1], loop.ngram, loop.window) else 0
            )
            if self.repeating >= LOOP_STOP_TOKENS:
                return StepDecision(b"", "base", end=True, end_reason="loop")
        if (
            self.ending is None
            or not answer
            or not at_boundary(b"".join(ctx.base.model.pieces[t] for t in answer[-2:]))
        ):
            return ctx.base_decision(self._next_token(ctx, answer, None))
        proposal = ctx.guide.propose()
        p_end = end_probability(proposal.on_base_sparse, ctx.guide.bridge.base.eos_id)
        if p_end >= self.ending.threshold:
            return StepDecision(b"", "guide", end=True, end_probability=p_end)
        decision = ctx.base_decision(self._next_token(ctx, answer, proposal))
        decision.end_probability = p_end
        return decision

    def next_token_distribution(self, ctx: DecodeContext) -> NextTokenDistribution:
        return self._next_token(ctx, [], None)

    def _next_token(self, ctx: DecodeContext, answer: list[int], proposal: Proposal | None) -> NextTokenDistribution:
        """`proposal`: the guide's, when this step already asked it (at a boundary); used only if
        the step blends."""
        p_base = ctx.base.probs()
        top = float(p_base.max())
        unsure = should_intervene(top, self.gamma)
        if not unsure and self.loop is not None:
            unsure = repeats_ngram(answer, int(p_base.argmax()), self.loop.ngram, self.loop.window)
        if not unsure:
            # A proposal the ending trigger read is not passed on: the guide's view of the text
            # stays what it is without that trigger, so the trigger only decides where the answer
            # ends and the text up to there is BlendIn's own (the ablation derives every threshold
            # from one run on that).
            return NextTokenDistribution(p_base, "base", top)
        proposal = proposal or ctx.guide.propose()
        guide = proposal.on_base_sparse  # sparse on the base vocabulary: the dense 262k vector is never built
        mixed = blend(p_base, guide, self.alpha, top)
        return NextTokenDistribution(
            mixed.probs, "blend", top, mixed.alpha, rank_in(p_base, top_of(guide)[1], top), proposal
        )


def rank_in(probs: np.ndarray, token: int, top: float | None = None) -> int:
    """How many tokens `probs` prefers to `token` (0: it is the top token). `top`: max probs,
    when known; at the top token no pass over the vocabulary is needed."""
    if top is not None and probs[token] == top:
        return 0
    return int(np.count_nonzero(probs > probs[token]))


def ensemble() -> BlendIn:
    return BlendIn(gamma=GAMMA_EVERY_TOKEN, alpha=0.5)


class ProxyTuning(OnBaseVocabulary):
    """p_B * p_G / p_G0 at every token; the anti-model G0 shares the guide's vocabulary and prompt."""

    def next_token_distribution(self, ctx: DecodeContext) -> NextTokenDistribution:
        assert ctx.anti is not None  # Generation refuses proxy tuning without the anti-model
        p_base = ctx.base.probs()
        guide, anti = ctx.guide.propose(), ctx.anti.propose()
        return NextTokenDistribution(
            proxy_tune(p_base, guide.on_base, anti.on_base),
            "blend",
            float(p_base.max()),
            proposal=guide,
            anti_proposal=anti,
        )


_WORD = re.compile(rb"\s*\S+")


@dataclass
class Nudging:
    """Fei et al. (2024), word-level: when the base is unsure, the guide drafts a chunk and its
    words are inserted, one at a time, until the base is confident again or would write the
    guide's next word itself; then the base goes on alone until it is unsure.

    Words go in token by token (each guide token is one trace entry) and the checks run where a
    whole word has gone in. A draft's last word counts only if the draft ended there (an end
    token): a chunk cut at its token limit may stop mid-word.
    """

    gamma: float  # the defaults of both live in GenerationSettings
    chunk: int
    lookahead: int = 8  # base tokens read at most to find the word it would write next
    # guide tokens still to insert: (token, piece, its log-probability when they were asked for)
    queue: list[tuple[int, bytes, TokenLogprob | None]] = field(default_factory=list)
    text: bytes = b""  # the inserted part of the draft so far, then what is queued
    inserted: int = 0  # bytes of `text` inserted so far
    word_ends: frozenset[int] = frozenset()

    def step(self, ctx: DecodeContext) -> StepDecision:
        if self.queue and self.inserted in self.word_ends and self._base_takes_over(ctx):
            self.queue = []
        if not self.queue:
            p_base = ctx.base.probs()
            top = float(p_base.max())
            if not should_intervene(top, self.gamma):
                return ctx.base_decision(NextTokenDistribution(p_base, "base", top))
            self._draft(ctx)
        token, piece, logprob = self.queue.pop(0)
        self.inserted += len(piece)
        return ctx.guide_decision(ctx.guide.state.tokens + [token], piece, None, logprob)

    def _base_takes_over(self, ctx: DecodeContext) -> bool:
        if not should_intervene(float(ctx.base.probs().max()), self.gamma):
            return True
        match = _WORD.match(self.text, self.inserted)
        return match is not None and self._base_next_word(ctx.base) == match.group(0)

    def _base_next_word(self, base: BaseCursor) -> bytes:
        """The word the base would write next, greedily; its cursor is left as it was."""
        saved = list(base.tokens)
        written = b""
        for _ in range(self.lookahead):
            token = int(np.argmax(base.probs()))
            if token in base.model.eog_ids:
                break
            written += base.model.pieces[token]
            base.push_token(token)
            match = _WORD.match(written)
            if match and match.end() < len(written):
                break
        base.tokens = saved
        match = _WORD.match(written)
        return match.group(0) if match else written

    def _draft(self, ctx: DecodeContext) -> None:
        guide = ctx.guide
        proposal = guide.propose()
        tokens, first_piece, first_logprob = choose_route(guide, proposal, ctx.sampler, ctx.rng, ctx.top_logprobs)
        guide.take(tokens[:-1])  # the drafted tokens are committed one by one as they go in
        drafted = [(tokens[-1], first_piece, first_logprob)]
        eog = guide.model.eog_ids
        while len(drafted) < self.chunk and tokens[-1] not in eog:
            p = guide_choosable(guide, softmax(guide.model.logits(tokens)[0]))
            token = choose(p, ctx.sampler, ctx.rng, tokens)
            tokens.append(token)
            drafted.append((token, guide.bridge.guide.pieces[token], ctx.guide_logprob(p, token)))
        text = b"".join(piece for _, piece, _ in drafted)
        words = _WORD.findall(text)
        ended = tokens[-1] in eog
        if not ended and len(words) > 1:
            words = words[:-1]
        keep = len(b"".join(words))
        queue, covered = [], 0
        for token, piece, logprob in drafted:
            if covered >= keep and not (ended and token in eog):
                break
            queue.append((token, piece, logprob))
            covered += len(piece)
        ends, total = set(), 0
        for word in words:
            total += len(word)
            ends.add(total)
        self.queue, self.text, self.inserted, self.word_ends = queue, text, 0, frozenset(ends)


def choose_route(
    guide: GuideCursor,
    proposal: Proposal,
    sampler: SamplerSettings,
    rng: np.random.Generator,
    top_logprobs: int | None = None,
) -> tuple[list[int], bytes, TokenLogprob | None]:
    """The guide's own next token at a possibly healed boundary: (its token sequence, new bytes,
    and with `top_logprobs` their log-probability among all the routes)."""
    options = [(list(r.tokens), r.rest, r.mass) for r in proposal.extension_routes]
    # For the penalties, the guide's tokens before a route's last token: the anchor, then q (h as one
    # guide token) if there is one. q precedes only the native routes, and no extension of h is q:
    # counting it for every route moves only the window's far end, by one token.
    history = proposal.anchor + list(proposal.native_prefix)
    native = None
    if proposal.native is not None:
        native = guide_choosable(guide, proposal.native)
        token = choose(native, sampler, rng, history)
        options.append((list(proposal.native_prefix) + [token], guide.bridge.guide.pieces[token], float(native[token])))
    # Each route ends in the guide token it writes: the penalties weigh the routes by that token.
    masses, last_tokens = np.array([mass for _, _, mass in options]), np.array([t[-1] for t, _, _ in options])
    chosen = choose(masses, sampler, rng, history, last_tokens)
    tokens, rest, _ = options[chosen]
    if top_logprobs is None:
        return proposal.anchor + tokens, rest, None
    return proposal.anchor + tokens, rest, route_logprob(guide, proposal, native, chosen, tokens[-1], top_logprobs)


def route_logprob(
    guide: GuideCursor, proposal: Proposal, native: np.ndarray | None, chosen: int, token: int, k: int
) -> TokenLogprob:
    """The chosen route's log-probability among every route of `proposal`: its extension routes,
    then each whole guide token of `native` (the choice saw only the drawn one of those)."""
    routes = proposal.extension_routes
    masses = np.array([r.mass for r in routes], dtype=np.float64)
    if native is not None:
        masses = np.concatenate([masses, native])
    entry = chosen if chosen < len(routes) else len(routes) + token
    token_piece = piece_namer(guide.model)

    def piece_of(i: int) -> bytes:
        return routes[i].rest if i < len(routes) else token_piece(i - len(routes))

    return token_logprob(masses, entry, k, piece_of)
