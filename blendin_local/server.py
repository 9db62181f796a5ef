"""An OpenAI-compatible HTTP API over one loaded pair (FastAPI + sse-starlette, run by uvicorn).

    app = create_app(pair, queue_size=16)      # then uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions
(streamed as server-sent events with "stream": true), GET /health.

One pair, one generation at a time: a single worker thread owns the pair (its models are not
thread-safe) and takes requests from a bounded asyncio queue; a request that finds the queue
full gets 503 at once. A streaming client that disconnects stops its generation at the next
token; a waiting client that disconnects leaves the queue.

Request fields honoured: temperature, top_p, max_tokens (or max_completion_tokens), stop (a
string or a list), seed; extra body fields: method, gamma, alpha (a number or "auto"),
base_prompt, guide_prompt, top_k, min_p, nudging_chunk, stop_at_new_turn. A field that is
absent takes the server's default (`blendin serve` options: greedy unless --temp). max_tokens
beyond the room left in the context after the prompt is clamped to that room, and the response
says so in `blendin.max_tokens_clamped`. Every response carries OpenAI's `usage` plus a
`blendin` object (method, interventions, intervention rate, ...) that OpenAI clients ignore.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import BlendinError
from .generation import Finished, GenerationResult, GenerationSettings
from .pair import as_messages
from .prompts import Message, prompt_tokens

# Fields a request may set, beyond OpenAI's own, and the GenerationSettings field each one sets.
EXTRA_FIELDS = ("method", "gamma", "alpha", "base_prompt", "guide_prompt", "top_k", "min_p", "nudging_chunk",
                "stop_at_new_turn")
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "context": "length", "interrupted": "stop"}
POLL_S = 0.25  # how often a request waiting for its turn checks that its client is still there


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.code, self.param)


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None) -> JSONResponse:
    """OpenAI's error body; a 503 also says when to retry (OpenAI clients honour Retry-After)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


# -- requests --------------------------------------------------------------------------------

class _SamplingRequest(BaseModel):
    # OpenAI clients send fields this server has no use for (user, store, ...): they are ignored.
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    # BlendIn's own, as extra body fields
    method: str | None = None
    gamma: float | None = None
    alpha: float | Literal["auto"] | None = None
    base_prompt: str | None = None
    guide_prompt: str | None = None
    top_k: int | None = None
    min_p: float | None = None
    nudging_chunk: int | None = None
    stop_at_new_turn: bool | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_SamplingRequest):
    messages: list[ChatMessageIn]


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str]
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None


def request_settings(body: _SamplingRequest, defaults: GenerationSettings) -> GenerationSettings:
    if body.n not in (None, 1):
        raise ApiError(400, f"n={body.n} is not supported: this server writes one choice per request", param="n")
    values = defaults.model_dump()
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens is not None:
        values["max_tokens"] = max_tokens
    for name in ("temperature", "top_p", "seed", *EXTRA_FIELDS):
        value = getattr(body, name)
        if value is not None:
            values[name] = value
    if values.get("alpha") == "auto":
        values["alpha"] = None
    if body.stop is not None:
        values["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    try:
        return GenerationSettings.checked(**values)
    except BlendinError as e:
        raise ApiError(400, str(e)) from None


def chat_messages(messages: Sequence[ChatMessageIn]) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}]: role {m.role!r} is not supported (system, user, assistant)",
                           param=f"messages[{i}].role")
        if role == "system" and i > 0:
            raise ApiError(400, f"messages[{i}]: a system message is supported only as the first message",
                           param=f"messages[{i}].role")
        if isinstance(m.content, list):
            parts = []
            for part in m.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ApiError(400, f"messages[{i}]: only text content parts are supported",
                                   param=f"messages[{i}].content")
                parts.append(part["text"])
            content = "".join(parts)
        else:
            content = m.content or ""
        out.append(Message(role, content))
    if not out:
        raise ApiError(400, "messages is empty", param="messages")
    if out[-1].role != "user":
        raise ApiError(400, "the last message must be the user's: the answer continues the conversation from there",
                       param="messages")
    return out


# -- the worker ------------------------------------------------------------------------------

@dataclass
class Job:
    prompt: str | list[Message]
    settings: GenerationSettings
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    checked_at: float = field(default_factory=time.monotonic)  # when its client was last seen connected

    def post(self, kind: str, payload: Any = None) -> None:
        """From the worker thread: hand one event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the event loop is gone (the server is stopping)
            self.cancel.set()


@dataclass
class Started:
    prompt_tokens: int  # the base's (the guide's for method "guide"): the model that writes the answer
    prompt_tokens_base: int | None
    prompt_tokens_guide: int | None
    max_tokens: int
    max_tokens_requested: int

    @property
    def clamped(self) -> bool:
        return self.max_tokens < self.max_tokens_requested


@dataclass
class Counters:
    served: int = 0
    cancelled: int = 0
    rejected: int = 0
    failed: int = 0
    last_cancelled_tokens: int | None = None


class Engine:
    """The pair, a worker thread that alone uses it, and the bounded queue in front of it."""

    def __init__(self, pair, queue_size: int):
        self.pair = pair
        self.queue_size = queue_size
        self.counters = Counters()
        self.running: Job | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blendin-pair")

    async def start(self) -> None:
        # The running job is not in the queue: queue_size more may wait (0: none may).
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._dispatch())

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def submit(self, job: Job) -> None:
        if self._queue is None:
            raise ApiError(503, "the server is not ready yet; retry later", type_="server_error")
        idle = self.running is None and self.waiting == 0
        if self.waiting >= self.queue_size and not idle:
            self.counters.rejected += 1
            raise ApiError(503, f"the server is busy: one request is running and {self.waiting} are waiting"
                                f" (queue size {self.queue_size}); retry later",
                           type_="server_error", code="queue_full")
        self._queue.put_nowait(job)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            if job.cancel.is_set():  # its client left while it waited
                self.counters.cancelled += 1
                continue
            self.running = job
            try:
                await loop.run_in_executor(self._executor, self._run, job)
            except Exception as e:  # _run reports its own errors; this is a last resort that keeps the queue moving
                job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
            finally:
                self.running = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.running is not None:
            self.running.cancel.set()
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            job.post("error", ApiError(503, "the server is stopping", type_="server_error"))
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    # In the worker thread, from here on.

    def _run(self, job: Job) -> None:
        try:
            started, generation = self._start(job)
        except BlendinError as e:
            job.post("error", ApiError(400, str(e)))
            return
        except Exception as e:  # an engine bug: the server stays up, the client hears about it
            self.counters.failed += 1
            job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
            return
        job.post("started", started)
        events = iter(generation)
        try:
            for _ in range(started.max_tokens + 2):  # one event per token, then Finished
                if job.cancel.is_set():
                    result = generation.result("interrupted")
                    self.counters.cancelled += 1
                    self.counters.last_cancelled_tokens = result.n_tokens
                    job.post("cancelled", result)
                    return
                event = next(events)
                if isinstance(event, Finished):
                    self.counters.served += 1
                    job.post("done", (event.text, event.result))
                    return
                if event.text:
                    job.post("text", event.text)
            raise AssertionError("a generation always finishes within max_tokens steps")
        except Exception as e:
            self.counters.failed += 1
            job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
        finally:
            events.close()

    def _start(self, job: Job):
        settings = job.settings
        messages = as_messages(job.prompt, settings.system)
        lengths: dict[str, int] = {}
        room = None
        if settings.method != "guide":
            lengths["base"] = len(prompt_tokens(self.pair.base, messages, settings.base_prompt))
            room = self.pair.base.n_ctx - lengths["base"]
        if settings.method != "base":
            lengths["guide"] = len(prompt_tokens(self.pair.guide, messages, settings.guide_prompt))
            guide_room = self.pair.guide.n_ctx - lengths["guide"]
            room = guide_room if room is None else min(room, guide_room)
        requested = settings.max_tokens
        if room is not None and room >= 1 and requested > room:
            settings = settings.model_copy(update={"max_tokens": room})
        generation = self.pair.start(messages, settings)  # raises a BlendinError when the prompt does not fit
        started = Started(prompt_tokens=lengths.get("base", lengths.get("guide", 0)),
                          prompt_tokens_base=lengths.get("base"), prompt_tokens_guide=lengths.get("guide"),
                          max_tokens=settings.max_tokens, max_tokens_requested=requested)
        return started, generation


# -- responses -------------------------------------------------------------------------------

def usage(started: Started, result: GenerationResult) -> dict:
    return {"prompt_tokens": started.prompt_tokens, "completion_tokens": result.n_tokens,
            "total_tokens": started.prompt_tokens + result.n_tokens}


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
        "max_tokens_clamped": started.clamped,
    }


@dataclass
class Exchange:
    """One request in flight: what the response needs to know about it."""

    kind: Literal["chat", "completion"]
    model: str
    settings: GenerationSettings
    include_usage: bool
    id: str = ""
    created: int = 0

    def __post_init__(self):
        self.id = ("chatcmpl-" if self.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def body(self, text: str, started: Started, result: GenerationResult) -> dict:
        finish = FINISH_REASONS[result.stop_reason]
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {"id": self.id, "object": "chat.completion" if self.kind == "chat" else "text_completion",
                "created": self.created, "model": self.model, "system_fingerprint": None, "choices": [choice],
                "usage": usage(started, result), "blendin": blendin_stats(started, result, self.settings)}

    def chunk(self, text: str | None = None, finish: str | None = None, first: bool = False) -> dict:
        if self.kind == "chat":
            delta: dict = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": [choice]}


def sse(data: dict | str) -> dict:
    return {"data": data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))}


# -- the app ---------------------------------------------------------------------------------

def model_id_for(pair) -> str:
    return f"blendin:{pair.guide.name}->{pair.base.name}"


def create_app(pair, *, queue_size: int = 16, defaults: GenerationSettings | None = None,
               model_id: str | None = None, aliases: Sequence[str] = (), cors_origins: Sequence[str] = ()) -> FastAPI:
    """An ASGI app serving `pair`.

    `aliases` are other model ids accepted (say, a registry pair name); `cors_origins` are the web
    origins whose pages may call the API from a browser ("*" for any).
    """
    defaults = defaults or GenerationSettings()
    model_id = model_id or model_id_for(pair)
    accepted = {model_id, *aliases}
    engine = Engine(pair, queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="blendin_local", summary=f"OpenAI-compatible API for {model_id}", lifespan=lifespan)
    app.state.engine = engine
    app.state.model_id = model_id
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["*"])

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            detail = (first.get("ctx") or {}).get("error", first.get("msg", ""))
            return error_response(400, f"the request body is not valid JSON: {detail}")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        if where == "body":
            return error_response(400, "the request body must be a JSON object (Content-Type: application/json)")
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return error_response(400, f"invalid {where}: {first.get('msg', 'invalid value')}{more}", param=where)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        return error_response(e.status_code, message, code="not_found" if e.status_code == 404 else None)

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "blendin_local",
                "blendin": {"base": pair.base.name, "guide": pair.guide.name, "aliases": sorted(accepted - {model_id}),
                            "n_ctx": min(pair.base.n_ctx, pair.guide.n_ctx)}}

    def check_model(name: str | None) -> None:
        if name is not None and name not in accepted:
            others = sorted(accepted - {model_id})
            also = f" (also accepted: {', '.join(others)})" if others else ""
            raise ApiError(404, f"the model {name!r} does not exist: this server serves {model_id!r}{also}",
                           code="model_not_found", param="model")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        check_model(name)
        return model_card()

    @app.get("/health")
    async def health():
        c = engine.counters
        return {"status": "ok", "model": model_id, "running": engine.running is not None, "waiting": engine.waiting,
                "queue_size": engine.queue_size, "served": c.served, "cancelled": c.cancelled, "rejected": c.rejected,
                "failed": c.failed, "last_cancelled_tokens": c.last_cancelled_tokens}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        check_model(body.model)
        for name in ("logprobs", "top_logprobs"):
            if (body.model_extra or {}).get(name):
                raise ApiError(400, f"{name} is not supported by this server", param=name)
        messages = chat_messages(body.messages)
        return await answer(request, body, messages, "chat")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        for name in ("echo", "logprobs", "suffix"):
            if getattr(body, name):
                raise ApiError(400, f"{name} is not supported by this server", param=name)
        if body.best_of not in (None, 1):
            raise ApiError(400, "best_of is not supported by this server", param="best_of")
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, "give one prompt per request (a string, or a list of one string)", param="prompt")
            prompt = prompt[0]
        return await answer(request, body, prompt, "completion")

    async def next_event(job: Job, request: Request) -> tuple[str, Any] | None:
        """The job's next event; None if the client left meanwhile (the job is then cancelled).

        The client is checked at least every POLL_S, whether events keep coming (tokens) or not.
        """
        while True:
            if time.monotonic() - job.checked_at >= POLL_S:
                job.checked_at = time.monotonic()
                if await request.is_disconnected():
                    job.cancel.set()
                    return None
            try:
                return await asyncio.wait_for(job.events.get(), POLL_S)
            except asyncio.TimeoutError:
                continue

    async def answer(request: Request, body: _SamplingRequest, prompt, kind: Literal["chat", "completion"]):
        settings = request_settings(body, defaults)
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        exchange = Exchange(kind, model_id, settings, include_usage)
        job = Job(prompt, settings, asyncio.get_running_loop())
        engine.submit(job)
        try:
            first = await next_event(job, request)
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        if first is None:  # the client is gone; nobody reads this
            return error_response(499, "client closed the request")
        kind_, payload = first
        if kind_ == "error":
            job.cancel.set()
            return payload.response()
        started: Started = payload
        if body.stream:
            return EventSourceResponse(stream(job, request, exchange, started), sep="\n")
        parts: list[str] = []
        try:
            while True:
                event = await next_event(job, request)
                if event is None:
                    return error_response(499, "client closed the request")
                what, payload = event
                if what == "text":
                    parts.append(payload)
                elif what == "done":
                    tail, result = payload
                    return exchange.body("".join(parts) + tail, started, result)
                elif what == "error":
                    return payload.response()
                else:  # cancelled: only when the server stops
                    return error_response(503, "the generation was stopped: the server is stopping", "server_error")
        finally:
            job.cancel.set()  # harmless once done; stops the worker if this coroutine was cancelled

    async def stream(job: Job, request: Request, exchange: Exchange, started: Started) -> AsyncIterator[dict]:
        try:
            yield sse(exchange.chunk(first=True) if exchange.kind == "chat" else exchange.chunk(""))
            while True:
                what, payload = await job.events.get()
                if await request.is_disconnected():
                    return
                if what == "text":
                    yield sse(exchange.chunk(payload))
                elif what == "done":
                    tail, result = payload
                    if tail:
                        yield sse(exchange.chunk(tail))
                    last = exchange.chunk(finish=FINISH_REASONS[result.stop_reason])
                    last["blendin"] = blendin_stats(started, result, exchange.settings)
                    if not exchange.include_usage:
                        last["usage"] = usage(started, result)
                    yield sse(last)
                    if exchange.include_usage:  # OpenAI's form: one more chunk, with no choices
                        usage_chunk = exchange.chunk()
                        usage_chunk["choices"] = []
                        usage_chunk["usage"] = usage(started, result)
                        yield sse(usage_chunk)
                    yield sse("[DONE]")
                    return
                elif what == "error":
                    yield sse({"error": {"message": payload.message, "type": payload.type, "param": None,
                                         "code": payload.code}})
                    return
                else:
                    return
        finally:
            job.cancel.set()  # the client left (or the stream ended): the worker stops at the next token

    return app
