"""An OpenAI-compatible HTTP API over one loaded pair (FastAPI + sse-starlette, run by uvicorn).

    app = create_app(pair, queue_size=16)      # then uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions
(streamed as server-sent events with "stream": true), GET /health; /docs, /redoc and
/openapi.json only with `docs=True`; the web page at GET / (with /web/app.js and /web/style.css,
files of the package: web/) unless `web=False`. One generation at a time, by the GenerationWorker
(worker.py); a streaming client that disconnects stops its generation at the next token, a
waiting client that disconnects leaves the queue.

Request fields honoured: temperature, top_p, max_tokens (or max_completion_tokens), stop (a
string or a list), seed, presence_penalty, frequency_penalty; extra body fields: every other
generation setting (engine/settings.py: method, gamma, alpha as a number or "auto", top_k, min_p,
repeat_penalty, repeat_last_n, the loop and ending triggers, base_prompt, guide_prompt, ...;
schemas.py). A field
that is absent takes the server's default (`blendin serve` options: greedy unless --temp). Every
response carries OpenAI's `usage` plus a `blendin` object (responses.py).

Everything a request supplies is hostile until checked, and bounded before it is acted on:
- the body: at most `max_request_bytes`, refused with 413 before the rest is read (BodyLimit);
- every string in it must be text, and stop strings are bounded (schemas.py);
- prompt formats are parsed by prompts.py (exactly {prompt} and {system}), and a prompt longer in
  bytes than the context could hold is refused there before it is tokenized;
- the answer: max_tokens is clamped to the room left in the context and to `max_tokens_limit`,
  and the generation ends after `request_timeout` seconds (worker.py); the response reports both
  in `blendin` (`max_tokens_clamped`, `max_tokens_limit`, `time_limit_s`).
Access: with `api_key`, /v1/* needs `Authorization: Bearer KEY` (401 without); with
`allowed_hosts` (a loopback server), a request whose Host header names another host is refused
(403): a page on another site whose name was rebound to 127.0.0.1 cannot reach the API.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from blendin_local.engine.generation import TraceEntry
from blendin_local.engine.methods import METHODS
from blendin_local.engine.prompts import Message
from blendin_local.engine.settings import METHODS_WITH_ANTI, GenerationSettings, MissingAnti, check_anti
from blendin_local.interfaces.server.errors import (
    ApiError,
    documented_errors,
    error_response,
    generation_stopped,
    shown,
)
from blendin_local.interfaces.server.responses import Exchange, error_chunk, sse
from blendin_local.interfaces.server.schemas import (
    ChatRequest,
    CompletionRequest,
    SamplingRequest,
    chat_messages,
    request_settings,
)
from blendin_local.interfaces.server.worker import GenerationWorker, Job, Started

POLL_S = 0.25  # how often a request waiting for its turn checks that its client is still there
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
DEFAULT_MAX_TOKENS_LIMIT = 2048
DEFAULT_REQUEST_TIMEOUT_S = 300.0
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


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
        return error_response(
            413,
            f"the request body is larger than this server takes ({self.max_bytes} bytes;"
            " blendin serve --max-request-bytes)",
            code="request_too_large",
            headers={"Connection": "close"},
        )

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
                response = error_response(
                    401,
                    f"{missing}: this server needs the header Authorization: Bearer KEY"
                    " with the key given to blendin serve --api-key",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "[::1]", "Localhost:80" -> "localhost"."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 and host[end + 1 : end + 2] in ("", ":") else host
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
                    403,
                    f"the Host header {shown(host.decode('latin-1'))} is not a name of this server, which answers"
                    f" to {', '.join(sorted(self.allowed))} (blendin serve --host and --cors-origin add names)",
                    code="host_not_allowed",
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


# -- error handlers: every error in OpenAI's shape --------------------------------------------


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI's description less the 422 it gives every route with a body or parameters: this
    server answers an invalid request with OpenAI's 400 (on_invalid_request), never 422."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


async def on_api_error(request: Request, e: ApiError):
    return e.response()


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


async def on_http_error(request: Request, e: StarletteHTTPException):
    message = {
        404: f"no such endpoint: {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(e.status_code, str(e.detail))
    # a 405 keeps the Allow header the router gave it: HTTP requires it
    return error_response(e.status_code, message, code="not_found" if e.status_code == 404 else None, headers=e.headers)


# -- the served pair ---------------------------------------------------------------------------


def model_id_for(pair) -> str:
    return f"blendin:{pair.guide.name}->{pair.base.name}"


@dataclass
class ServedPair:
    """What the routes serve: the pair, the names it answers to, the defaults of a request, and the
    worker that runs its generations."""

    pair: Any
    model_id: str
    accepted: frozenset[str]  # model_id and its aliases
    defaults: GenerationSettings
    worker: GenerationWorker

    def model_card(self) -> dict:
        return {
            "id": self.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "blendin_local",
            "blendin": {
                "base": self.pair.base.name,
                "guide": self.pair.guide.name,
                "aliases": sorted(self.accepted - {self.model_id}),
                "n_ctx": min(self.pair.base.n_ctx, self.pair.guide.n_ctx),
                # What a request that sets nothing gets, and the methods it may ask for (the web page's controls).
                "defaults": self.defaults.model_dump(exclude={"system"}),
                "methods": [m for m in METHODS if m not in METHODS_WITH_ANTI or self.pair.anti is not None],
                "max_tokens_limit": self.worker.max_tokens_limit,
            },
        }

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.accepted:
            others = sorted(self.accepted - {self.model_id})
            also = f" (also accepted: {', '.join(others)})" if others else ""
            raise ApiError(
                404,
                f"the model {shown(name)} does not exist: this server serves {self.model_id!r}{also}",
                code="model_not_found",
                param="model",
            )


def served(request: Request) -> ServedPair:
    return request.app.state.served


# -- routes ------------------------------------------------------------------------------------


async def list_models(request: Request):
    return {"object": "list", "data": [served(request).model_card()]}


async def get_model(name: str, request: Request):
    service = served(request)
    service.check_model(name)
    return service.model_card()


async def health(request: Request):
    service = served(request)
    worker, c = service.worker, service.worker.counters
    return {
        "status": "stopping" if worker.stopping else "ok",
        "model": service.model_id,
        "running": worker.running is not None,
        "waiting": worker.waiting,
        "queue_size": worker.queue_size,
        "served": c.served,
        "cancelled": c.cancelled,
        "rejected": c.rejected,
        "failed": c.failed,
        "timed_out": c.timed_out,
        "last_cancelled_tokens": c.last_cancelled_tokens,
    }


async def chat_completions(body: ChatRequest, request: Request):
    served(request).check_model(body.model)
    messages = chat_messages(body.messages)
    return await answer(request, body, messages, "chat")


async def completions(body: CompletionRequest, request: Request):
    served(request).check_model(body.model)
    for name in ("echo", "suffix"):
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


# -- answering: a request's job, from the queue to the response ------------------------------------


async def next_event(worker: GenerationWorker, job: Job, request: Request) -> tuple[str, Any] | None:
    """The job's next event; None if the client left meanwhile (the job is then cancelled).

    The client is checked at least every POLL_S, whether events keep coming (tokens) or not;
    so is the server: one that is stopping answers 503 without waiting for the worker.
    """
    while True:
        if time.monotonic() - job.checked_at >= POLL_S:
            job.checked_at = time.monotonic()
            if worker.stopping:
                job.cancel.set()
                return "error", generation_stopped()
            if await request.is_disconnected():
                job.cancel.set()
                return None
        try:
            return await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            continue


async def answer(
    request: Request, body: SamplingRequest, prompt: str | list[Message], kind: Literal["chat", "completion"]
):
    service = served(request)
    settings = request_settings(body, service.defaults)
    try:
        check_anti(settings.method, service.pair.anti is not None)
    except MissingAnti:  # said in the server's terms: the request cannot add the model
        raise ApiError(
            400,
            f"method {settings.method} needs the guide's untuned counterpart, and this server has"
            " none (blendin serve --anti)",
            param="method",
        ) from None
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    traced = bool(body.stream and body.trace)
    prompt_chars = len(prompt) if isinstance(prompt, str) else 0  # where a completion's text_offset starts
    exchange = Exchange(kind, service.model_id, settings, include_usage, traced, prompt_chars)
    job = Job(prompt, "messages" if kind == "chat" else "prompt", settings, asyncio.get_running_loop())
    # A stream's chunks carry their tokens' provenance or log-probabilities; a whole answer reads its result's.
    job.with_pieces = bool(body.stream) and (traced or settings.top_logprobs is not None)
    service.worker.submit(job)
    try:
        first = await next_event(service.worker, job, request)
    except asyncio.CancelledError:
        job.cancel.set()
        raise
    if first is None:  # the client is gone; nobody reads this
        return error_response(499, "client closed the request")
    what, payload = first
    if what == "error":
        job.cancel.set()
        return payload.response()
    started: Started = payload
    if body.stream:
        return EventSourceResponse(stream(job, request, exchange, started), sep="\n")
    parts: list[str] = []
    try:
        while True:
            event = await next_event(service.worker, job, request)
            if event is None:
                return error_response(499, "client closed the request")
            what, payload = event
            if what == "text":
                parts.append(payload)
            elif what == "pieces":  # only a stream's job posts them
                continue
            elif what == "done":
                tail, result = payload
                return exchange.body("".join(parts) + tail, started, result)
            elif what == "error":
                return payload.response()
            else:  # cancelled: only when the server stops
                return generation_stopped().response()
    finally:
        job.cancel.set()  # harmless once done; stops the worker if this coroutine was cancelled


async def stream(job: Job, request: Request, exchange: Exchange, started: Started) -> AsyncIterator[dict]:
    pieces: list[TraceEntry] | None = None  # a traced stream's: the tokens of the next text
    try:
        yield sse(exchange.opening_chunk())
        while True:
            what, payload = await job.events.get()
            if what == "pieces":  # the text event follows at once; the client is checked there
                pieces = payload
                continue
            if await request.is_disconnected():
                return
            if what == "text":
                yield sse(exchange.chunk(payload, pieces=pieces))
                pieces = None
            elif what == "done":
                tail, result = payload
                for chunk in exchange.closing_chunks(tail, started, result, pieces):
                    yield sse(chunk)
                return
            else:  # an error, or cancelled (the server is stopping): say so, and end the stream
                yield sse(error_chunk(payload if what == "error" else generation_stopped()))
                return
    finally:
        job.cancel.set()  # the client left (or the stream ended): the worker stops at the next token


# -- the web page: three files of the package, read once -------------------------------------------

WEB_FILES = {  # URL path -> (file in web/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/style.css": ("style.css", "text/css; charset=utf-8"),
}
# Nothing but this server's own script, styles and API: model text that slipped into the page as
# markup could neither run a script nor send anything anywhere.
WEB_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def web_file(content: bytes, media_type: str):
    async def page() -> Response:  # no parameters: FastAPI would read them from the query string
        return Response(content, media_type=media_type, headers=WEB_HEADERS)

    return page


def web_routes(app: FastAPI) -> None:
    folder = resources.files("blendin_local.interfaces.server") / "web"
    for path, (name, media_type) in WEB_FILES.items():
        app.get(path, include_in_schema=False)(web_file((folder / name).read_bytes(), media_type))


# -- the app -------------------------------------------------------------------------------------


def create_app(
    pair,
    *,
    queue_size: int = 16,
    defaults: GenerationSettings | None = None,
    model_id: str | None = None,
    aliases: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: int | None = DEFAULT_MAX_TOKENS_LIMIT,
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT_S,
    api_key: str | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    docs: bool = False,
    web: bool = True,
) -> FastAPI:
    """An ASGI app serving `pair`; its GenerationWorker is `app.state.worker`.

    `aliases` are other model ids accepted (say, a registry pair name); `cors_origins` are the web
    origins whose pages may call the API from a browser ("*" for any). `max_tokens_limit` and
    `request_timeout` (seconds) bound each generation (None: only by the context). `api_key`:
    required on /v1/*. `allowed_hosts`: the names the Host header may give (the default fits a
    server on loopback; None accepts any, for a server bound beyond loopback). `docs`: serve
    /docs, /redoc and /openapi.json. `web`: serve the web page at / (it calls /v1 as any client does).
    """
    model_id = model_id or model_id_for(pair)
    worker = GenerationWorker(pair, queue_size, max_tokens_limit, request_timeout)
    service = ServedPair(pair, model_id, frozenset({model_id, *aliases}), defaults or GenerationSettings(), worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        try:
            yield
        finally:
            await worker.stop()

    app = FastAPI(
        title="blendin_local",
        summary=f"OpenAI-compatible API for {model_id}",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.served = service
    app.state.worker = worker
    # add_middleware wraps: the last added sees a request first. Host, then CORS (a browser's
    # preflight carries no key), then the key, then the body's size, then the app.
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    if api_key is not None:
        app.add_middleware(ApiKeyCheck, api_key=api_key)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
        )
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    # Starlette types every handler as taking Exception; each of these is registered for its own class.
    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    everywhere = (403,) if allowed_hosts is not None else ()
    on_v1 = (*everywhere, *((401,) if api_key is not None else ()))
    app.get("/v1/models", responses=documented_errors(*on_v1))(list_models)
    app.get("/v1/models/{name:path}", responses=documented_errors(*on_v1, 404))(get_model)
    app.get("/health", responses=documented_errors(*everywhere))(health)
    generating = documented_errors(*on_v1, 400, 404, 413, 500, 503)
    app.post("/v1/chat/completions", responses=generating)(chat_completions)
    app.post("/v1/completions", responses=generating)(completions)
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    if web:
        web_routes(app)
    return app
