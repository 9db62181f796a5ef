"""The decode loop: one request, one method, one token (or word piece) per step.

`Generation` is an iterator of StepEvents (one per committed token, with the text that became
printable) ending with a Finished event that carries the GenerationResult. Stopping: an end
token of either model (the guide's mapped through the bridge), a stop string, the base's habit
of starting a new turn (TURN_STOPS, on by default), max_tokens, or a full context.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blendin_local.engine.base_cursor import BaseCursor
from blendin_local.errors import BlendinError
from blendin_local.engine.guide_cursor import GuideCursor
from blendin_local.backends.llama import ContextFull
from blendin_local.engine.methods import BaseOnly, BlendIn, Decision, DecodeContext, GuideOnly, Nudging, ProxyTuning, ensemble
from blendin_local.engine.prompts import Message, check_style, prompt_tokens
from blendin_local.engine.sampling import SamplerSettings
from blendin_local.engine.text_stream import TextStream

# A pre-trained base answers, then invents the next question: these end the answer there.
TURN_STOPS = ("\nQuestion:", "\nQ:", "\nUser:", "\nHuman:")
MAX_GAMMA = 1.01  # gamma above every probability: intervene at every token


class GenerationSettings(BaseModel):
    """Everything one request may set. Ranges are checked here, once, for the CLI, API and server."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["base", "guide", "nudging", "blendin", "ensemble", "proxy"] = "blendin"
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=100.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    gamma: float = Field(0.4, ge=0.0, le=MAX_GAMMA)
    alpha: float | None = Field(None, ge=0.0, le=1.0)  # None: auto
    nudging_chunk: int = Field(16, ge=1, le=256)
    stop: list[str] = Field(default_factory=list)
    stop_at_new_turn: bool = True
    system: str | None = None
    base_prompt: str = "plain"
    guide_prompt: str = "chat"

    @classmethod
    def checked(cls, **values) -> "GenerationSettings":
        """Settings from user input; a bad value becomes one readable BlendinError."""
        try:
            settings = cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            got = repr(first.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."  # the input may be megabytes
            raise BlendinError(f"invalid {where}: {first['msg']} (got {got})") from None
        check_style(settings.base_prompt, "base_prompt")
        check_style(settings.guide_prompt, "guide_prompt")
        return settings

    def sampler(self) -> SamplerSettings:
        return SamplerSettings(self.temperature, self.top_k, self.top_p, self.min_p)

    def stop_strings(self) -> list[str]:
        return list(self.stop) + (list(TURN_STOPS) if self.stop_at_new_turn else [])


def make_method(settings: GenerationSettings):
    return {
        "base": BaseOnly,
        "guide": GuideOnly,
        "blendin": lambda: BlendIn(gamma=settings.gamma, alpha=settings.alpha),
        "ensemble": ensemble,
        "proxy": ProxyTuning,
        "nudging": lambda: Nudging(gamma=settings.gamma, chunk=settings.nudging_chunk),
    }[settings.method]()


@dataclass(frozen=True)
class TraceEntry:
    piece: str
    source: str
    base_top_p: float | None
    alpha: float | None
    guide_rank: int | None = None  # BlendIn interventions: rank of the guide's top token in the base's distribution


@dataclass(frozen=True)
class StepEvent:
    text: str  # newly printable text (may be empty while UTF-8 or a possible stop string is incomplete)
    entry: TraceEntry


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
    stop_reason: str  # eos | stop | length | context | interrupted | time
    elapsed_s: float
    tokens_per_s: float
    seed: int | None
    trace: list[TraceEntry] = field(default_factory=list)

    def as_dict(self, with_trace: bool = True) -> dict:
        data = asdict(self)
        if not with_trace:
            data.pop("trace")
        return data


@dataclass(frozen=True)
class Finished:
    text: str  # the last printable text, flushed at the end
    result: GenerationResult


class Generation:
    def __init__(self, pair, messages: Sequence[Message], settings: GenerationSettings):
        if settings.method == "proxy" and pair.anti is None:
            raise BlendinError("--method proxy needs the guide's untuned counterpart: pass --anti PATH|NAME")
        self.pair, self.settings = pair, settings
        base_prompt = prompt_tokens(pair.base, messages, settings.base_prompt)
        guide_prompt = prompt_tokens(pair.guide, messages, settings.guide_prompt)
        for model, prompt in self._models_used(base_prompt, guide_prompt):
            if len(prompt) >= model.n_ctx:
                raise BlendinError(
                    f"the prompt is {len(prompt)} tokens for {model.name} but its context holds {model.n_ctx}"
                    f" (at least one more is needed to answer): shorten it or raise -c/--ctx-size")
            model.begin_request(prompt)
        self.prompt_lengths = {"base": len(base_prompt), "guide": len(guide_prompt)}  # in tokens
        self.max_tokens = settings.max_tokens  # a server may lower it before iterating (its own limit)
        # Without a seed, draw one and report it, so that any sampled answer can be reproduced.
        self.seed = settings.seed if settings.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self.ctx = DecodeContext(
            base=BaseCursor(pair.base, pair.bridge, base_prompt),
            guide=GuideCursor(pair.guide, pair.bridge, guide_prompt),
            anti=GuideCursor(pair.anti, pair.bridge, guide_prompt) if pair.anti is not None else None,
            sampler=settings.sampler(),
            rng=np.random.default_rng(self.seed),
        )
        self.method = make_method(settings)
        self.stream = TextStream(settings.stop_strings())
        self.trace: list[TraceEntry] = []
        self.stop_reason = "length"
        self.started = time.perf_counter()
        self.finished_at: float | None = None

    def _models_used(self, base_prompt: list[int], guide_prompt: list[int]):
        method = self.settings.method
        if method != "guide":
            yield self.pair.base, base_prompt
        if method != "base":
            yield self.pair.guide, guide_prompt
        if method == "proxy":
            yield self.pair.anti, guide_prompt

    def __iter__(self) -> Iterator[StepEvent | Finished]:
        for _ in range(self.max_tokens):
            try:
                decision = self.method.step(self.ctx)
            except ContextFull:
                self.stop_reason = "context"
                break
            if decision.end:
                self.stop_reason = "eos"
                break
            self.commit(decision)
            entry = TraceEntry(decision.piece.decode("utf-8", "backslashreplace"), decision.source,
                               decision.base_top_p, decision.alpha, decision.guide_rank)
            self.trace.append(entry)
            yield StepEvent(self.stream.feed(decision.piece), entry)
            if self.stream.stopped_by is not None:
                self.stop_reason = "stop"
                break
        yield Finished(self.stream.finish(), self.result())

    def finish_early(self, stop_reason: str) -> Finished:
        """The Finished event for a generation its caller ends between two steps (say, a server's
        time limit): the text held back so far is let out, as at any end."""
        return Finished(self.stream.finish(), self.result(stop_reason))

    def commit(self, d: Decision) -> None:
        """Append a decision to every model's view of the text."""
        ctx = self.ctx
        if d.base_token is not None:
            ctx.base.push_token(d.base_token)
        else:
            ctx.base.push_bytes(d.piece)
        for cursor, proposal in ((ctx.guide, d.proposal), (ctx.anti, d.anti_proposal)):
            if cursor is None:
                continue
            if d.guide_tokens is not None:
                cursor.take(list(d.guide_tokens))
            else:
                cursor.commit(d.piece, proposal)

    def result(self, stop_reason: str | None = None) -> GenerationResult:
        """The result so far; `stop_reason` overrides the loop's (say, "interrupted")."""
        if self.finished_at is None or stop_reason is not None:
            self.finished_at = time.perf_counter()
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
            trace=list(self.trace),
        )
