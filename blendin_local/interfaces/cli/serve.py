"""`blendin serve`: an OpenAI-compatible HTTP endpoint for a pair (server.py), run by uvicorn."""

from __future__ import annotations

import ipaddress
import math
import signal
import socket
from urllib.parse import urlsplit

import click

from blendin_local.engine.settings import REPORT_FIELDS
from blendin_local.errors import BlendinError, install_hint
from blendin_local.interfaces.cli.options import checked_settings, generation_options, model_options

SERVER_EXTRA_HINT = f"blendin serve needs the server extra: {install_hint('server')}"
# server.py's DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TOKENS_LIMIT and DEFAULT_REQUEST_TIMEOUT_S,
# repeated: server.py imports FastAPI (the optional server extra), and `blendin --help` must not.
MAX_REQUEST_BYTES = 1 << 20
MAX_TOKENS_LIMIT = 2048
REQUEST_TIMEOUT_S = 300.0


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket before the models load, so that a taken port is one clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BlendinError(f"cannot resolve --host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise BlendinError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stop is under way: a repeated one must not interrupt it
    raise _Stopped


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def as_host_name(host: str) -> str:
    """A host as a Host header names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def implied_hosts(host: str, cors_origins) -> list[str]:
    """Names a loopback server answers to beyond localhost, 127.0.0.1 and [::1]: its --host, and
    the host of each --cors-origin (a UI served under a name calls the API under that name)."""
    names = [as_host_name(host)]
    for origin in cors_origins:
        name = urlsplit(origin).hostname if origin != "*" else None
        if name:
            names.append(as_host_name(name))
    return names


def check_timeout(ctx, param, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds (0 for no limit)", ctx, param)
    return value


def check_api_key(ctx, param, value: str | None) -> str | None:
    if value is not None and not (value and all("!" <= c <= "~" for c in value)):
        raise click.BadParameter("a key is one or more printable ASCII characters, without spaces", ctx, param)
    return value


def stopping_server(config, worker):
    """A uvicorn server whose stop signal also ends the running generation at its next token
    (uvicorn alone would wait for the request to finish, then for the application, without end)."""
    import uvicorn  # the server extra: imported when serving, so that `blendin --help` stays light

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            worker.begin_stop()
            super().handle_exit(sig, frame)

    return Server(config)


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (beyond loopback, set --api-key)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--queue-size",
    type=click.IntRange(0),
    default=16,
    show_default=True,
    help="Requests that may wait while one runs; beyond that the server answers 503.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="A web origin whose pages may call the API from"
    " a browser, e.g. http://localhost:3000 (repeatable; * for any).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="uvicorn's log level (info shows one line per request).",
)
@click.option(
    "--max-request-bytes",
    type=click.IntRange(1),
    default=MAX_REQUEST_BYTES,
    show_default=True,
    help="Largest request body; a larger one gets 413 before it is read.",
)
@click.option(
    "--max-tokens-limit",
    type=click.IntRange(0),
    default=MAX_TOKENS_LIMIT,
    show_default=True,
    help="Most tokens one answer may have, whatever max_tokens asks (0: only the context limits it).",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0),
    default=REQUEST_TIMEOUT_S,
    show_default=True,
    callback=check_timeout,
    help="Seconds one generation may take; then it ends, finish_reason length (0: no limit).",
)
@click.option(
    "--api-key",
    envvar="BLENDIN_API_KEY",
    show_envvar=True,
    callback=check_api_key,
    help="Require Authorization: Bearer KEY on /v1/*.",
)
@click.option("--docs", is_flag=True, help="Serve the API's documentation: /docs, /redoc, /openapi.json.")
@click.option(
    "--no-web", is_flag=True, help="Do not serve the web page at / (a chat that shows who decided each piece)."
)
@generation_options(exclude=("system", *REPORT_FIELDS))
@model_options
def serve(
    host,
    port,
    queue_size,
    cors_origins,
    log_level,
    max_request_bytes,
    max_tokens_limit,
    request_timeout,
    api_key,
    docs,
    no_web,
    settings_values,
    models,
):
    """Serve the pair with an OpenAI-compatible API: /v1/models, /v1/completions, /v1/chat/completions,
    and a web page at / that chats with it and shows who decided each piece (--no-web: none).

    The sampling and blending options, and the settings of --pair, are the defaults for requests
    that do not set a field; a request may set temperature, top_p, max_tokens, stop, seed,
    presence_penalty and frequency_penalty, and any other generation setting (method, gamma, alpha,
    top_k, min_p, repeat_penalty, loop_trigger, end_trigger, base_prompt, ...) as an extra body field.
    """
    try:
        import uvicorn

        from blendin_local.interfaces.server.app import LOOPBACK_HOSTS, create_app, model_id_for
    except ImportError:
        raise BlendinError(SERVER_EXTRA_HINT) from None
    defaults = checked_settings(settings_values, models.anti)
    sock = listen(host, port)
    try:
        pair = models.load()
        worker = None
        try:
            named = models.pair_entry.name  # --pair's or the default pair's: also a model id requests may use
            aliases = ["blendin", f"blendin:{models.guide or named}->{models.base or named}"]
            if models.base is None and models.guide is None:
                aliases.append(named)
            loopback = is_loopback(host)
            app = create_app(
                pair,
                queue_size=queue_size,
                defaults=defaults,
                aliases=aliases,
                cors_origins=cors_origins,
                max_request_bytes=max_request_bytes,
                max_tokens_limit=max_tokens_limit or None,
                request_timeout=request_timeout or None,
                api_key=api_key,
                docs=docs,
                web=not no_web,
                allowed_hosts=[*LOOPBACK_HOSTS, *implied_hosts(host, cors_origins)] if loopback else None,
            )
            worker = app.state.worker
            click.echo(
                f"blendin serve: {model_id_for(pair)} on http://{as_host_name(host)}:{port}/v1"
                f" (one request at a time, {queue_size} may wait)",
                err=True,
            )
            if not no_web:
                click.echo(f"blendin serve: the web page is http://{as_host_name(host)}:{port}/", err=True)
            if not loopback and api_key is None:
                click.echo(
                    f"blendin serve: warning: {host} is not a loopback address and there is no --api-key:"
                    " whoever reaches it can use the server",
                    err=True,
                )
            config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2)
            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for
            # its caller: a stop asked for is a normal end here (exit 0), not an interruption.
            signal.signal(signal.SIGTERM, _stop)
            try:
                stopping_server(config, worker).run(sockets=[sock])
            except (KeyboardInterrupt, _Stopped):
                pass
            finally:
                # A stop repeated while the models close would kill the process mid-way: this one is under way.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            click.echo("blendin serve: stopped", err=True)
        finally:
            if worker is not None and worker.alive:  # stuck in one llama.cpp call: do not free the models under it
                click.echo(
                    "blendin serve: the generation did not stop in time; exiting without closing the models", err=True
                )
            else:
                pair.close()
            # SIGTERM stays ignored: serve's return ends the process, and a repeated stop that
            # arrives after the shutdown must not turn a clean exit into death by a signal.
    finally:
        sock.close()
