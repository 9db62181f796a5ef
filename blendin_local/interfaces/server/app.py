"""An OpenAI-compatible HTTP API over one loaded pair (FastAPI + sse-starlette, run by uvicorn).

    app = create_app(pair, queue_size=16)      # then uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions
(streamed as server-sent events with "stream": true), GET /health; /docs, /redoc and
/openapi.json only with `docs=True`.

One pair, one generation at a time: a single worker thread owns the pair (its models are not
thread-safe) and takes requests from a bounded queue; a request that finds the queue full gets
503 at once. A streaming client that disconnects stops its generation at the next token; a
waiting client that disconnects leaves the queue. Stopping the server (`Engine.begin_stop`,
called from the signal handler by `blendin serve`) ends the running generation at its next
token and fails the waiting ones with 503, so that a shutdown takes seconds, not a generation.

Request fields honoured: temperature, top_p, max_tokens (or max_completion_tokens), stop (a
string or a list), seed; extra body fields: method, gamma, alpha (a number or "auto"),
base_prompt, guide_prompt, top_k, min_p, nudging_chunk, stop_at_new_turn. A field that is
absent takes the server's default (`blendin serve` options: greedy unless --temp). Every
response carries OpenAI's `usage` plus a `blendin` object (method, interventions, intervention
rate, ...) that OpenAI clients ignore.

Everything a request supplies is hostile until checked, and bounded before it is acted on:
- the body: at most `max_request_bytes`, refused with 413 before the rest is read;
- every string in it, keys and ignored fields included, must be text that UTF-8 can encode (a
  lone surrogate such as "\\ud800" is a 400 naming the field);
- prompt formats are parsed by prompts.py (exactly {prompt} and {system}), and a prompt longer in
  bytes than the context could hold is refused there before it is tokenized;
- the answer: max_tokens is clamped to the room left in the context and to `max_tokens_limit`,
  and the generation ends after `request_timeout` seconds (stop reason "time"); the response
  reports both in `blendin` (`max_tokens_clamped`, `max_tokens_limit`, `time_limit_s`);
- stop strings: at most MAX_STOPS, of at most MAX_STOP_CHARS characters each.
Access: with `api_key`, /v1/* needs `Authorization: Bearer KEY` (401 without); with
`allowed_hosts` (a loopback server), a request whose Host header names another host is refused
(403): a page on another site whose name was rebound to 127.0.0.1 cannot reach the API.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import re
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, AsyncIterator, Literal, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from blendin_local.errors import BlendinError
from blendin_local.engine.generation import Finished, Generation, GenerationResult, GenerationSettings
from blendin_local.pair import as_messages
from blendin_local.engine.prompts import Message, PromptFormatError, check_style

# Fields a request may set, beyond OpenAI's own, and the GenerationSettings field each one sets.
EXTRA_FIELDS = ("method", "gamma", "alpha", "base_prompt", "guide_prompt", "top_k", "min_p", "nudging_chunk",
                "stop_at_new_turn")
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "context": "length", "time": "length",
                  "interrupted": "stop"}
POLL_S = 0.25  # how often a request waiting for its turn checks that its client is still there
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
DEFAULT_MAX_TOKENS_LIMIT = 2048
DEFAULT_REQUEST_TIMEOUT_S = 300.0
# OpenAI allows 4 stop strings. The text stream compares every stop string's prefixes with the
# end of the text at each token: their number and length bound the time each token takes.
MAX_STOPS = 16
MAX_STOP_CHARS = 256
# How long a stopping server waits for the worker to end its token (one llama.cpp call: at most
# a batch of a prompt); with uvicorn's 2 s for open connections, a stop takes under 5 s.
STOP_WAIT_S = 2.0
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SHOWN_CHARS = 60  # of a request's value quoted in an error message
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.code, self.param)


def _as_text(value: str | None) -> str | None:
    """`value` with any lone surrogate written as an escape: an error may quote a request."""
    return None if value is None else value.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body; a 503 also says when to retry (OpenAI clients honour Retry-After)."""
    headers = {**({"Retry-After": "1"} if status == 503 else {}), **(headers or {})}
    return JSONResponse({"error": {"message": _as_text(message), "type": type_, "param": _as_text(param),
                                   "code": code}}, status_code=status, headers=headers or None)


def shown(value: Any) -> str:
    """A request's value quoted for a one-line message, cut if long."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


# -- requests --------------------------------------------------------------------------------

def lone_surrogate(data: Any) -> tuple[str, int] | None:
    """The first string in a JSON value (dict keys included) that holds a lone surrogate, as (its
    path, like messages[0].content, and the character's index); None if there is none.

    Iterative: JSON nests as deep as the parser allowed, and a path is built only when one is found.
    """
    stack: list[tuple[Any, tuple | None]] = [(data, None)]  # (value, its path as (parent path, key))
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            found = _LONE_SURROGATE.search(value)
            if found:
                return _path(where), found.start()
        elif isinstance(value, dict):
            for key in value:
                found = _LONE_SURROGATE.search(key) if isinstance(key, str) else None
                if found:
                    return _path((where, key)), found.start()
            stack.extend(reversed([(item, (where, key)) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(item, (where, i)) for i, item in enumerate(value)]))
    return None


def _path(where: tuple | None) -> str:
    keys = []
    while where is not None:
        where, key = where
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path += f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
    return path or "body"


class RequestBody(BaseModel):
    """A request's JSON body. Fields this server has no use for (OpenAI clients send user, store,
    ...) are allowed and ignored; but every string anywhere in the body must be text: a lone
    surrogate (JSON allows "\\ud800") fails wherever the text is encoded, so it is refused here, once
    for every field, rather than field by field."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _all_strings_are_text(cls, data: Any) -> Any:
        found = lone_surrogate(data) if isinstance(data, dict) else None
        if found is not None:
            where, index = found
            # The path may hold the surrogate (a key): pydantic itself must be able to encode it.
            raise PydanticCustomError("lone_surrogate", "a lone surrogate at character {index} is not text"
                                      " (UTF-8 cannot encode it)", {"param": _as_text(where), "index": index})
        return data


def _whole_float_as_int(value: Any) -> Any:
    # pydantic takes 5.0 for an int but not 1e30 (beyond 64 bits); a count that large is clamped later.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole_float_as_int)]


class _SamplingRequest(RequestBody):
    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: WholeNumber | None = None
    max_completion_tokens: WholeNumber | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: WholeNumber | None = None
    n: WholeNumber | None = None
    # BlendIn's own, as extra body fields
    method: str | None = None
    gamma: float | None = None
    alpha: float | Literal["auto"] | None = None
    base_prompt: str | None = None
    guide_prompt: str | None = None
    top_k: WholeNumber | None = None
    min_p: float | None = None
    nudging_chunk: WholeNumber | None = None
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


def request_stops(stop: str | list[str]) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"stop has {len(stops)} strings; at most {MAX_STOPS} are allowed", param="stop")
    for i, s in enumerate(stops):
        if len(s) > MAX_STOP_CHARS:
            raise ApiError(400, f"stop[{i}] is {len(s)} characters long; at most {MAX_STOP_CHARS} are allowed",
                           param="stop")
    return stops


def request_settings(body: _SamplingRequest, defaults: GenerationSettings) -> GenerationSettings:
    if body.n not in (None, 1):
        raise ApiError(400, f"n={shown(body.n)} is not supported: this server writes one choice per request", param="n")
    values = defaults.model_dump()
    names = {name: name for name in values}
    if body.max_completion_tokens is not None:
        values["max_tokens"], names["max_tokens"] = body.max_completion_tokens, "max_completion_tokens"
    elif body.max_tokens is not None:
        values["max_tokens"] = body.max_tokens
    for name in ("temperature", "top_p", "seed", *EXTRA_FIELDS):
        value = getattr(body, name)
        if value is not None:
            values[name] = value
    if values.get("alpha") == "auto":
        values["alpha"] = None
    if body.stop is not None:
        values["stop"] = request_stops(body.stop)
    try:
        settings = GenerationSettings(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = names.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else "settings"
        raise ApiError(400, f"invalid {where}: {first['msg']} (got {shown(first.get('input'))})", param=where) from None
    for name in ("base_prompt", "guide_prompt"):
        if getattr(body, name) is not None:
            try:
                check_style(getattr(settings, name), field=name)
            except PromptFormatError as e:
                raise ApiError(400, str(e), param=name) from None
    return settings


def chat_messages(messages: Sequence[ChatMessageIn]) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}]: role {shown(m.role)} is not supported (system, user, assistant)",
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
    prompt_param: str  # the request field the prompt came from: messages or prompt
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
    max_tokens_limit: int | None
    time_limit_s: float | None

    @property
    def clamped(self) -> bool:
        return self.max_tokens < self.max_tokens_requested


@dataclass
class Counters:
    served: int = 0
    cancelled: int = 0
    rejected: int = 0
    failed: int = 0
    timed_out: int = 0
    last_cancelled_tokens: int | None = None


class Engine:
    """The pair, a worker thread that alone uses it, and the bounded queue in front of it.

    The worker is a daemon thread: if it is stuck in one long llama.cpp call when the server
    stops, the process can still exit (its caller must then not close the models under it).
    """

    def __init__(self, pair, queue_size: int, max_tokens_limit: int | None = None,
                 request_timeout: float | None = None):
        self.pair = pair
        self.queue_size = queue_size
        self.max_tokens_limit = max_tokens_limit
        self.request_timeout = request_timeout
        self.counters = Counters()
        self.running: Job | None = None
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending = 0  # jobs submitted and not finished: the running one and those waiting
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="blendin-pair", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        return max(0, self._pending - (self.running is not None))

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def worker_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def submit(self, job: Job) -> None:
        if self._worker is None:
            raise ApiError(503, "the server is not ready yet; retry later", type_="server_error")
        if self.stopping:
            raise ApiError(503, "the server is stopping", type_="server_error")
        with self._lock:
            # The running job is not waiting: queue_size more may wait (0: none may).
            if self._pending > self.queue_size:
                self.counters.rejected += 1
                raise ApiError(503, f"the server is busy: one request is running and {self._pending - 1} are waiting"
                                    f" (queue size {self.queue_size}); retry later",
                               type_="server_error", code="queue_full")
            self._pending += 1
        self._jobs.put(job)

    def begin_stop(self) -> None:
        """Take no more jobs and end the running one at its next token. It only sets an event, so a
        signal handler may call it."""
        self._stopping.set()

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """begin_stop, fail the waiting jobs with 503, and wait up to `wait_s` for the worker to end
        (worker_alive says whether it has)."""
        self.begin_stop()
        while True:  # the worker fails them too, once its job ends; this does not wait for that
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._refuse(job)
        if self._worker is None:
            return
        self._jobs.put(None)  # the worker's last item
        deadline = time.monotonic() + wait_s
        while self._worker.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def _refuse(self, job: Job) -> None:
        job.post("error", ApiError(503, "the server is stopping", type_="server_error"))
        with self._lock:
            self._pending -= 1

    # In the worker thread, from here on.

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self.stopping:
                self._refuse(job)
                continue
            try:
                if job.cancel.is_set():  # its client left while it waited
                    self.counters.cancelled += 1
                else:
                    self.running = job
                    self._run(job)
            except Exception as e:  # _run reports its own errors; this is a last resort that keeps the worker going
                job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
            finally:
                self.running = None
                with self._lock:
                    self._pending -= 1

    def _run(self, job: Job) -> None:
        deadline = None if self.request_timeout is None else time.monotonic() + self.request_timeout
        try:
            started, generation = self._start(job)
        except PromptFormatError as e:
            job.post("error", ApiError(400, str(e), param=e.field or job.prompt_param))
            return
        except BlendinError as e:  # the prompt: empty, too long for the context, refused by a chat template
            job.post("error", ApiError(400, str(e), param=job.prompt_param))
            return
        except Exception as e:  # an engine bug: the server stays up, the client hears about it
            self.counters.failed += 1
            job.post("error", ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error"))
            return
        job.post("started", started)
        events = iter(generation)
        try:
            for _ in range(started.max_tokens + 2):  # one event per token, then Finished
                if job.cancel.is_set() or self.stopping:
                    result = generation.result("interrupted")
                    self.counters.cancelled += 1
                    self.counters.last_cancelled_tokens = result.n_tokens
                    job.post("cancelled", result)
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    self.counters.timed_out += 1
                    event = generation.finish_early("time")
                else:
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

    def _start(self, job: Job) -> tuple[Started, Generation]:
        settings = job.settings
        # Tokenizes both prompts, each checked in bytes against its context first (prompts.py),
        # and raises a BlendinError when one does not fit.
        generation = Generation(self.pair, as_messages(job.prompt, settings.system), settings)
        used = {"base": settings.method != "guide", "guide": settings.method != "base"}
        lengths = {role: n for role, n in generation.prompt_lengths.items() if used[role]}
        models = {"base": self.pair.base, "guide": self.pair.guide}
        room = min(models[role].n_ctx - n for role, n in lengths.items())  # >= 1: Generation checked
        requested = settings.max_tokens
        generation.max_tokens = min(requested, room, self.max_tokens_limit or requested)
        started = Started(prompt_tokens=lengths.get("base", lengths.get("guide", 0)),
                          prompt_tokens_base=lengths.get("base"), prompt_tokens_guide=lengths.get("guide"),
                          max_tokens=generation.max_tokens, max_tokens_requested=requested,
                          max_tokens_limit=self.max_tokens_limit, time_limit_s=self.request_timeout)
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
        "max_tokens_requested": started.max_tokens_requested,
        "max_tokens_clamped": started.clamped,
        "max_tokens_limit": started.max_tokens_limit,
        "time_limit_s": started.time_limit_s,
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


# -- guards: pure ASGI middleware, ahead of anything that reads the request -------------------

def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class BodyLimit:
    """Refuses a request body of more than `max_bytes` with 413: a declared Content-Length at once,
    a chunked body as soon as it passes the limit, before the rest is read. The body is read here
    and handed to the app from memory."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> JSONResponse:
        return error_response(413, f"the request body is larger than this server takes ({self.max_bytes} bytes;"
                                   " blendin serve --max-request-bytes)", code="request_too_large",
                              headers={"Connection": "close"})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")  # a malformed one is the HTTP parser's to refuse
        if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > self.max_bytes):
            return await self.too_large()(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before its body was complete
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self.too_large()(scope, receive, send)
            if not message.get("more_body", False):
                break
        handed = False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: the client's disconnect

        await self.app(scope, replay, send)


class ApiKeyCheck:
    """/v1/* needs `Authorization: Bearer KEY`; the key is compared in constant time."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            scheme, _, token = (_header(scope, b"authorization") or b"").strip().partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                missing = "no API key" if not token.strip() else "a wrong API key"
                response = error_response(401, f"{missing}: this server needs the header Authorization: Bearer KEY"
                                               " with the key given to blendin serve --api-key", code="invalid_api_key",
                                          headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "[::1]", "Localhost:80" -> "localhost"."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 and host[end + 1:end + 2] in ("", ":") else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    """Refuses a request whose Host header names none of `allowed` (names as host_name gives them).
    For a server on loopback: a page on another site whose name its owner rebinds to 127.0.0.1
    (DNS rebinding) reaches the server with its own name in Host, and is refused."""

    def __init__(self, app, allowed: Sequence[str]):
        self.app, self.allowed = app, frozenset(host_name(h) for h in allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = _header(scope, b"host")
            if host is not None and host_name(host.decode("latin-1")) not in self.allowed:
                response = error_response(
                    403, f"the Host header {shown(host.decode('latin-1'))} is not a name of this server, which answers"
                         f" to {', '.join(sorted(self.allowed))} (blendin serve --host and --cors-origin add names)",
                    code="host_not_allowed")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


# -- the app ---------------------------------------------------------------------------------

def model_id_for(pair) -> str:
    return f"blendin:{pair.guide.name}->{pair.base.name}"


def create_app(pair, *, queue_size: int = 16, defaults: GenerationSettings | None = None,
               model_id: str | None = None, aliases: Sequence[str] = (), cors_origins: Sequence[str] = (),
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_tokens_limit: int | None = DEFAULT_MAX_TOKENS_LIMIT,
               request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT_S, api_key: str | None = None,
               allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS, docs: bool = False) -> FastAPI:
    """An ASGI app serving `pair`.

    `aliases` are other model ids accepted (say, a registry pair name); `cors_origins` are the web
    origins whose pages may call the API from a browser ("*" for any). `max_tokens_limit` and
    `request_timeout` (seconds) bound each generation (None: only by the context). `api_key`:
    required on /v1/*. `allowed_hosts`: the names the Host header may give (the default fits a
    server on loopback; None accepts any, for a server bound beyond loopback). `docs`: serve
    /docs, /redoc and /openapi.json.
    """
    defaults = defaults or GenerationSettings()
    model_id = model_id or model_id_for(pair)
    accepted = {model_id, *aliases}
    engine = Engine(pair, queue_size, max_tokens_limit, request_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="blendin_local", summary=f"OpenAI-compatible API for {model_id}", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.engine = engine
    app.state.model_id = model_id
    # add_middleware wraps: the last added sees a request first. Host, then CORS (a browser's
    # preflight carries no key), then the key, then the body's size, then the app.
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    if api_key is not None:
        app.add_middleware(ApiKeyCheck, api_key=api_key)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["*"])
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)

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
        if first.get("type") == "lone_surrogate":
            where = first["ctx"]["param"]
            return error_response(400, f"invalid {where}: {first['msg']}", param=where)
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
            raise ApiError(404, f"the model {shown(name)} does not exist: this server serves {model_id!r}{also}",
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
        return {"status": "stopping" if engine.stopping else "ok", "model": model_id,
                "running": engine.running is not None, "waiting": engine.waiting, "queue_size": engine.queue_size,
                "served": c.served, "cancelled": c.cancelled, "rejected": c.rejected, "failed": c.failed,
                "timed_out": c.timed_out, "last_cancelled_tokens": c.last_cancelled_tokens}

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

        The client is checked at least every POLL_S, whether events keep coming (tokens) or not;
        so is the server: one that is stopping answers 503 without waiting for the worker.
        """
        while True:
            if time.monotonic() - job.checked_at >= POLL_S:
                job.checked_at = time.monotonic()
                if engine.stopping:
                    job.cancel.set()
                    return "error", ApiError(503, "the generation was stopped: the server is stopping",
                                             type_="server_error")
                if await request.is_disconnected():
                    job.cancel.set()
                    return None
            try:
                return await asyncio.wait_for(job.events.get(), POLL_S)
            except asyncio.TimeoutError:
                continue

    async def answer(request: Request, body: _SamplingRequest, prompt, kind: Literal["chat", "completion"]):
        settings = request_settings(body, defaults)
        if settings.method == "proxy" and pair.anti is None:
            raise ApiError(400, "method proxy needs the guide's untuned counterpart, and this server has none"
                                " (blendin serve --anti)", param="method")
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        exchange = Exchange(kind, model_id, settings, include_usage)
        job = Job(prompt, "messages" if kind == "chat" else "prompt", settings, asyncio.get_running_loop())
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
                else:  # an error, or cancelled (the server is stopping): say so, and end the stream
                    error = payload if what == "error" else ApiError(
                        503, "the generation was stopped: the server is stopping", type_="server_error")
                    yield sse({"error": {"message": error.message, "type": error.type, "param": error.param,
                                         "code": error.code}})
                    return
        finally:
            job.cancel.set()  # the client left (or the stream ended): the worker stops at the next token

    return app
