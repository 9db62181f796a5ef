"""The decode loop: one request, one method, one token (or word piece) per step.

`Generation.steps()` yields one StepEvent per committed token, with the text that became
printable; `finish()` then gives the Finished event: the text held back until the end and the
GenerationResult. Iterating a Generation gives both, Finished last; `run()` does both and returns
the result. Stopping: an end
token of either model (the guide's mapped through the bridge), a stop string, the base's habit
of starting a new turn (TURN_STOPS, on by default), BlendIn's ending or loop trigger
(triggers.py), max_tokens, or a full context.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np

from blendin_local.engine.answer_label import (
    STYLES_WHERE_THE_BASE_WRITES_THE_LABEL,
    STYLES_WITH_LABEL,
    AnswerText,
    LeadingWhitespace,
    PendingLabel,
    read_answer_label,
)
from blendin_local.engine.base_cursor import BaseCursor
from blendin_local.engine.blending import top_of
from blendin_local.engine.guide_cursor import GuideCursor
from blendin_local.engine.logprobs import TokenLogprob
from blendin_local.engine.methods import (
    BaseOnly,
    BlendIn,
    DecodeContext,
    GuideOnly,
    Method,
    Nudging,
    ProxyTuning,
    StepDecision,
    ensemble,
)
from blendin_local.engine.model import ContextFull, LanguageModel, ModelPair
from blendin_local.engine.prompts import FEWSHOT_STOPS, Message, prompt_tokens
from blendin_local.engine.settings import GenerationSettings, check_anti
from blendin_local.engine.speculation import Speculation, SpeculationRound
from blendin_local.engine.text_stream import TextStream
from blendin_local.errors import BlendinError


def make_method(settings: GenerationSettings) -> Method:
    factories: dict[str, Callable[[], Method]] = {
        "base": BaseOnly,
        "guide": GuideOnly,
        "blendin": lambda: BlendIn(
            gamma=settings.gamma, alpha=settings.alpha, loop=settings.loop(), ending=settings.ending()
        ),
        "ensemble": ensemble,
        "proxy": ProxyTuning,
        "nudging": lambda: Nudging(gamma=settings.gamma, chunk=settings.nudging_chunk),
    }
    return factories[settings.method]()


# Why a generation ended: an end token or the ending trigger; a stop string or a new turn; the loop
# trigger; max_tokens; a full context; a caller's interruption; a caller's time limit.
STOP_REASONS = ("eos", "stop", "loop", "length", "context", "interrupted", "time")


@dataclass(frozen=True)
class TraceEntry:
    piece: str
    source: str
    base_top_p: float | None
    alpha: float | None
    guide_rank: int | None = None  # BlendIn interventions: rank of the guide's top token in the base's distribution
    guide_top: str | None = None  # where the guide was consulted for a base token: its top choice, as that base token
    logprob: TokenLogprob | None = None  # with top_logprobs set: the piece's log-probability and alternatives


@dataclass(frozen=True)
class StepEvent:
    text: str  # newly printable text (may be empty while UTF-8 or a possible stop string is incomplete)
    entry: TraceEntry
    # The text's length in characters before this token: the token wrote into the text if the
    # final text is longer (one that only wrote a stop string starts at or past its end).
    text_start: int = 0


@dataclass(frozen=True)
class EndCheck:
    """The ending trigger asked the guide at a boundary: after `tokens` answer tokens, whose text
    is the result's first `chars` characters, its end-of-turn probability was `probability`. The
    answer a threshold t gives ends at the first check with probability >= t (eval/ending_sweep.py)."""

    tokens: int
    chars: int
    probability: float


@dataclass
class GenerationResult:
    text: str
    method: str
    base: str
    guide: str
    n_tokens: int
    n_interventions: int
    intervention_rate: float
    alpha_mean: float | None
    stop_reason: str  # one of STOP_REASONS
    elapsed_s: float
    tokens_per_s: float
    seed: int | None
    # The first this many trace entries wrote `text`; those after them wrote a stop string, which
    # the text leaves out (a server's log-probabilities leave them out too).
    text_tokens: int = 0
    trace: list[TraceEntry] = field(default_factory=list)
    end_checks: list[EndCheck] = field(default_factory=list)
    speculation: list[SpeculationRound] = field(default_factory=list)  # its rounds, when --speculative is on

    def as_dict(self, with_trace: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_trace:
            data.pop("trace")
        return data


@dataclass(frozen=True)
class Finished:
    text: str  # the last printable text, flushed at the end
    result: GenerationResult


class Generation:
    def __init__(self, pair: ModelPair, messages: Sequence[Message], settings: GenerationSettings):
        check_anti(settings.method, pair.anti is not None)
        self.pair, self.settings = pair, settings
        base_prompt = prompt_tokens(pair.base, messages, settings.base_prompt)
        guide_prompt = prompt_tokens(pair.guide, messages, settings.guide_prompt)
        for model, prompt in self._models_used(base_prompt, guide_prompt):
            if len(prompt) >= model.n_ctx:
                raise BlendinError(
                    f"the prompt is {len(prompt)} tokens for {model.name} but its context holds {model.n_ctx}"
                    f" (at least one more is needed to answer): shorten it or raise -c/--ctx-size"
                )
            model.begin_request(prompt)
        self.prompt_lengths = {"base": len(base_prompt), "guide": len(guide_prompt)}  # in tokens
        self.max_tokens = settings.max_tokens  # a server may lower it before iterating (its own limit)
        # Without a seed, draw one and report it, so that any sampled answer can be reproduced.
        self.seed = (
            settings.seed if settings.seed is not None else int(cast(int, np.random.SeedSequence().entropy) % 2**63)
        )
        self.ctx = DecodeContext(
            base=BaseCursor(pair.base, pair.bridge, base_prompt),
            guide=GuideCursor(pair.guide, pair.bridge, guide_prompt),
            anti=GuideCursor(pair.anti, pair.bridge, guide_prompt) if pair.anti is not None else None,
            sampler=settings.sampler(),
            rng=np.random.default_rng(self.seed),
            top_logprobs=settings.top_logprobs,
        )
        self.method = make_method(settings)
        self.speculation = Speculation(settings.speculative) if settings.speculative else None
        # The base's own answer label joins its prompt (answer_label.py). A guide that reads the
        # base's prompt form reads the label too; one in its own template is shown neither the
        # label nor the whitespace the base writes after it.
        shares_base_prompt = settings.guide_prompt == settings.base_prompt
        reads_label = settings.method != "guide" and settings.base_prompt in STYLES_WHERE_THE_BASE_WRITES_THE_LABEL
        readers = [c for c in (self.ctx.guide, self.ctx.anti) if c is not None and shares_base_prompt]
        self.answer_label = PendingLabel(read_answer_label(self.ctx.base) if reads_label else [], readers)
        self.prompt_lengths["base"] += len(self.answer_label.tokens)  # the label is the base's prompt too
        labelled = settings.base_prompt in STYLES_WITH_LABEL
        self.leading_whitespace = LeadingWhitespace(hidden=labelled and not shares_base_prompt)
        self.stream = (AnswerText if labelled else TextStream)(settings.stop_strings())
        self.trace: list[TraceEntry] = []
        self.text_starts: list[int] = []  # per trace entry: the text's length in characters before it
        self.end_checks: list[EndCheck] = []
        self.stop_reason = "length"
        self.started = time.perf_counter()
        self.finished_at: float | None = None

    def _models_used(
        self, base_prompt: list[int], guide_prompt: list[int]
    ) -> Iterator[tuple[LanguageModel, list[int]]]:
        method = self.settings.method
        if method != "guide":
            yield self.pair.base, base_prompt
        if method != "base" or self.settings.speculative:  # the guide drafts for speculation
            yield self.pair.guide, guide_prompt
        if method == "proxy" and self.pair.anti is not None:
            yield self.pair.anti, guide_prompt

    def __iter__(self) -> Iterator[StepEvent | Finished]:
        yield from self.steps()
        yield self.finish()

    def run(self) -> GenerationResult:
        """Every step to the end: the result."""
        for _ in self.steps():
            pass
        return self.finish().result

    def steps(self) -> Generator[StepEvent, None, None]:
        """One StepEvent per committed token, until the generation stops; `finish()` comes next."""
        self.answer_label.take(self.ctx.base)  # the base's own answer label ends its prompt (answer_label.py)
        for _ in range(self.max_tokens):
            try:
                if self.speculation is not None:
                    self.speculation.before_step(self.ctx, len(self.trace), self.max_tokens - len(self.trace))
                decision = self.method.step(self.ctx)
            except ContextFull:
                self.stop_reason = "context"
                break
            if decision.end_probability is not None:
                self.end_checks.append(EndCheck(len(self.trace), len(self.stream.text), decision.end_probability))
            if decision.end:
                self.stop_reason = decision.end_reason
                break
            self.commit(decision)
            entry = TraceEntry(
                decision.piece.decode("utf-8", "backslashreplace"),
                decision.source,
                decision.base_top_p,
                decision.alpha,
                decision.guide_rank,
                self._guide_top(decision),
                decision.logprob,
            )
            start = len(self.stream.text)
            self.trace.append(entry)
            self.text_starts.append(start)
            yield StepEvent(self.stream.feed(decision.piece), entry, start)
            if self.stream.stopped_by is not None:
                self.stop_reason = "eos" if self.stream.stopped_by in FEWSHOT_STOPS else "stop"
                break

    def finish(self, stop_reason: str | None = None) -> Finished:
        """The last event: the text held back so far let out, and the result. `stop_reason`
        overrides the loop's, for a caller that ends the generation between two steps (say, a
        server's time limit, or "interrupted")."""
        return Finished(self.stream.finish(), self.result(stop_reason))

    def _guide_top(self, d: StepDecision) -> str | None:
        """The guide's most probable next piece on the base vocabulary, where a step blended its
        proposal in (the top is cached on the proposal: auto alpha and the rank read it already)."""
        if d.proposal is None or d.source != "blend":
            return None
        return self.pair.base.pieces[top_of(d.proposal.on_base_sparse)[1]].decode("utf-8", "backslashreplace")

    def commit(self, d: StepDecision) -> None:
        """Append a decision to every model's view of the text."""
        ctx = self.ctx
        if d.base_token is not None:
            ctx.base.push_token(d.base_token)
        else:
            ctx.base.push_bytes(d.piece)
        consulted = d.proposal is not None or d.guide_tokens is not None
        shown = self.leading_whitespace.guide_view(d.piece, guide_consulted=consulted)
        for cursor, proposal in ((ctx.guide, d.proposal), (ctx.anti, d.anti_proposal)):
            if cursor is None:
                continue
            if d.guide_tokens is not None:
                cursor.take(list(d.guide_tokens))
            elif shown:
                cursor.commit(shown, proposal)

    def result(self, stop_reason: str | None = None) -> GenerationResult:
        """The result so far; `stop_reason` overrides the loop's (say, "interrupted")."""
        if self.finished_at is None or stop_reason is not None:
            self.finished_at = time.perf_counter()
            if self.speculation is not None:
                self.speculation.close(self.ctx, stopped=True)
        elapsed = self.finished_at - self.started
        n = len(self.trace)
        helped = [e for e in self.trace if e.source != "base"]
        alphas = [e.alpha for e in helped if e.alpha is not None]
        return GenerationResult(
            text=self.stream.text,
            method=self.settings.method,
            base=self.pair.base.name,
            guide=self.pair.guide.name,
            n_tokens=n,
            n_interventions=len(helped),
            intervention_rate=len(helped) / n if n else 0.0,
            alpha_mean=float(np.mean(alphas)) if alphas else None,
            stop_reason=stop_reason or self.stop_reason,
            elapsed_s=elapsed,
            tokens_per_s=n / elapsed if elapsed > 0 else 0.0,
            seed=self.seed,
            text_tokens=bisect.bisect_left(self.text_starts, len(self.stream.text)),
            trace=list(self.trace),
            end_checks=list(self.end_checks),
            speculation=list(self.speculation.rounds) if self.speculation is not None else [],
        )
