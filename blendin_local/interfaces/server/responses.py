"""OpenAI's response bodies and stream chunks for one request, with OpenAI's `usage` and a
`blendin` object (method, interventions, intervention rate, limits, ...) that OpenAI clients ignore.

A stream asked for with `"trace": true` (the web page's) also says who decided each chunk's text:
its `blendin` object holds `pieces`, one per token the text came from (`piece`).

Log-probabilities asked for (chat: `logprobs` with `top_logprobs`; completions: `logprobs`) come
in OpenAI's two shapes, one entry per token of the text (engine/logprobs.py says which
distribution they are from): chat's `content` list, and the completions' parallel lists, whose
`text_offset` counts characters from the prompt's start, as OpenAI's and llama-cpp-python's do."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from blendin_local.engine.generation import GenerationResult, TraceEntry
from blendin_local.engine.logprobs import Alternative, TokenLogprob
from blendin_local.engine.settings import GenerationSettings
from blendin_local.engine.speculation import SpeculationStats
from blendin_local.interfaces.server.errors import ApiError
from blendin_local.interfaces.server.worker import Started

FINISH_REASONS = {
    "eos": "stop",
    "stop": "stop",
    "loop": "stop",  # BlendIn's loop trigger ended it: a stop of ours, said in `blendin.stop_reason`
    "length": "length",
    "context": "length",
    "time": "length",
    "interrupted": "stop",
}


def usage(started: Started, result: GenerationResult) -> dict:
    return {
        "prompt_tokens": started.prompt_tokens,
        "completion_tokens": result.n_tokens,
        "total_tokens": started.prompt_tokens + result.n_tokens,
    }


def blendin_stats(started: Started, result: GenerationResult, settings: GenerationSettings) -> dict:
    return {
        "method": result.method,
        "base": result.base,
        "guide": result.guide,
        "n_interventions": result.n_interventions,
        "intervention_rate": result.intervention_rate,
        "alpha_mean": result.alpha_mean,
        "gamma": settings.gamma,
        "alpha": "auto" if settings.alpha is None else settings.alpha,
        "stop_reason": result.stop_reason,
        "elapsed_s": result.elapsed_s,
        "tokens_per_s": result.tokens_per_s,
        "seed": result.seed,
        "prompt_tokens_base": started.prompt_tokens_base,
        "prompt_tokens_guide": started.prompt_tokens_guide,
        "max_tokens": started.max_tokens,
        "max_tokens_requested": started.max_tokens_requested,
        "max_tokens_clamped": started.clamped,
        "max_tokens_limit": started.max_tokens_limit,
        "time_limit_s": started.time_limit_s,
        **({"speculation": stats.as_dict()} if (stats := SpeculationStats.of(result.speculation)) else {}),
    }


PROVENANCE_DIGITS = 4  # of a piece's probabilities: enough to read, and 6 bytes each instead of up to 20


def piece(entry: TraceEntry) -> dict:
    """One token's provenance as a traced stream carries it: `source` (base, blend or guide), and
    where known `base_top_p`, `alpha`, `guide_top` (the guide's top choice where it was blended in)
    and `guide_rank` (that choice's rank in the base's distribution); absent rather than null."""
    out: dict = {"source": entry.source}
    if entry.base_top_p is not None:
        out["base_top_p"] = round(entry.base_top_p, PROVENANCE_DIGITS)
    if entry.alpha is not None:
        out["alpha"] = round(entry.alpha, PROVENANCE_DIGITS)
    if entry.guide_top is not None:
        out["guide_top"] = entry.guide_top
    if entry.guide_rank is not None:
        out["guide_rank"] = entry.guide_rank
    return out


def chat_alternative(a: Alternative) -> dict:
    return {"token": a.token, "logprob": a.logprob, "bytes": list(a.bytes)}


def chat_logprob(lp: TokenLogprob) -> dict:
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": list(lp.bytes),
        "top_logprobs": [chat_alternative(a) for a in lp.top_logprobs],
    }


def characters(data: Sequence[int]) -> int:
    """Characters in UTF-8 bytes: those that do not continue a character (a piece may split one)."""
    return sum(1 for byte in data if byte & 0xC0 != 0x80)


def legacy_top(lp: TokenLogprob) -> dict[str, float]:
    """OpenAI's legacy `top_logprobs` entry: the most likely tokens and the chosen one, by text (a
    text two tokens write keeps the likelier's)."""
    top: dict[str, float] = {}
    for a in lp.top_logprobs:
        top.setdefault(a.token, a.logprob)
    top.setdefault(lp.token, lp.logprob)
    return top


@dataclass
class Exchange:
    """One request in flight: what the response needs to know about it. `trace`: a stream's chunks
    say who decided their text; `prompt_chars`: where a completion's text_offset starts."""

    kind: Literal["chat", "completion"]
    model: str
    settings: GenerationSettings
    include_usage: bool
    trace: bool = False
    prompt_chars: int = 0
    id: str = ""
    created: int = 0

    def __post_init__(self):
        self.id = ("chatcmpl-" if self.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.text_offset = self.prompt_chars  # the completion's next token's, in characters

    @property
    def logprobs(self) -> bool:
        return self.settings.top_logprobs is not None

    def logprobs_of(self, entries: Sequence[TraceEntry]) -> dict | None:
        """`entries`' log-probabilities in the request's shape; None when it asked for none."""
        if not self.logprobs:
            return None
        scored = [e.logprob for e in entries if e.logprob is not None]
        if self.kind == "chat":
            return {"content": [chat_logprob(lp) for lp in scored], "refusal": None}
        offsets = []
        for lp in scored:
            offsets.append(self.text_offset)
            self.text_offset += characters(lp.bytes)
        return {
            "tokens": [lp.token for lp in scored],
            "token_logprobs": [lp.logprob for lp in scored],
            "top_logprobs": [legacy_top(lp) for lp in scored],
            "text_offset": offsets,
        }

    def body(self, text: str, started: Started, result: GenerationResult) -> dict:
        finish = FINISH_REASONS[result.stop_reason]
        logprobs = self.logprobs_of(result.trace[: result.text_tokens])
        if self.kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return {
            "id": self.id,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [choice],
            "usage": usage(started, result),
            "blendin": blendin_stats(started, result, self.settings),
        }

    def chunk(
        self,
        text: str | None = None,
        finish: str | None = None,
        first: bool = False,
        pieces: Sequence[TraceEntry] | None = None,
    ) -> dict:
        """One stream chunk; `pieces`: the tokens its text came from (a traced stream shows who decided
        them, a request for log-probabilities gets theirs)."""
        logprobs = None if pieces is None else self.logprobs_of(pieces)
        if self.kind == "chat":
            delta: dict = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
            obj = "text_completion"
        out = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [choice],
        }
        if pieces is not None and self.trace:
            out["blendin"] = {"pieces": [piece(entry) for entry in pieces]}
        return out

    def opening_chunk(self) -> dict:
        return self.chunk(first=True) if self.kind == "chat" else self.chunk("")

    def closing_chunks(
        self, tail: str, started: Started, result: GenerationResult, pieces: Sequence[TraceEntry] | None = None
    ) -> list[dict | str]:
        """A stream's end: the text held back (with `pieces`, the tokens it came from), the finish
        reason with the stats, the usage (in a chunk of its own, OpenAI's form, when the client asked
        for it), then [DONE]."""
        chunks: list[dict | str] = [self.chunk(tail, pieces=pieces)] if tail else []
        last = self.chunk(finish=FINISH_REASONS[result.stop_reason])
        last["blendin"] = blendin_stats(started, result, self.settings)
        if not self.include_usage:
            last["usage"] = usage(started, result)
        chunks.append(last)
        if self.include_usage:
            usage_chunk = self.chunk()
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage(started, result)
            chunks.append(usage_chunk)
        chunks.append("[DONE]")
        return chunks


def error_chunk(error: ApiError) -> dict:
    """An error in a stream that has begun (its status line is sent): OpenAI's error body as a chunk."""
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


def sse(data: dict | str) -> dict:
    return {"data": data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))}
