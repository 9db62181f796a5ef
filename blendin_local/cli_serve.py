"""`blendin serve`: an OpenAI-compatible HTTP endpoint for a pair (server.py), run by uvicorn."""

from __future__ import annotations

import ipaddress
import signal
import socket

import click

from .cli import load_pair, model_options
from .cli_chat import generation_options, settings_from_options
from .errors import BlendinError

SERVER_EXTRA_HINT = "blendin serve needs the server extra: pip install 'blendin-local[server]'"


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
    raise _Stopped


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (no authentication:"
              " keep it on loopback unless the network is yours).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--queue-size", type=click.IntRange(0), default=16, show_default=True,
              help="Requests that may wait while one runs; beyond that the server answers 503.")
@click.option("--cors-origin", "cors_origins", multiple=True, help="A web origin whose pages may call the API from"
              " a browser, e.g. http://localhost:3000 (repeatable; * for any).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level (info shows one line per request).")
@generation_options(exclude=("system",))
@model_options
def serve(host, port, queue_size, cors_origins, log_level, base, guide, anti, ctx_size, threads, gpu_layers, **options):
    """Serve the pair with an OpenAI-compatible API: /v1/models, /v1/completions, /v1/chat/completions.

    The sampling and blending options are the defaults for requests that do not set a field;
    a request may set temperature, top_p, max_tokens, stop and seed, and method, gamma, alpha,
    base_prompt and guide_prompt as extra body fields.
    """
    try:
        import uvicorn

        from .server import create_app, model_id_for
    except ImportError:
        raise BlendinError(SERVER_EXTRA_HINT) from None
    defaults = settings_from_options(options)
    if defaults.method == "proxy" and anti is None:
        raise BlendinError("--method proxy needs the guide's untuned counterpart: pass --anti PATH|NAME")
    sock = listen(host, port)
    try:
        pair = load_pair(base, guide, anti, ctx_size, threads, gpu_layers)
        try:
            aliases = ["blendin", f"blendin:{guide or 'default'}->{base or 'default'}"]
            if base is None and guide is None:
                aliases.append("default")
            app = create_app(pair, queue_size=queue_size, defaults=defaults, aliases=aliases,
                             cors_origins=cors_origins)
            shown = f"[{host}]" if ":" in host else host
            click.echo(f"blendin serve: {model_id_for(pair)} on http://{shown}:{port}/v1"
                       f" (one request at a time, {queue_size} may wait)", err=True)
            if not is_loopback(host):
                click.echo(f"blendin serve: warning: {host} is not a loopback address and the server has no"
                           " authentication", err=True)
            config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for
            # its caller: a stop asked for is a normal end here (exit 0), not an interruption.
            previous = signal.signal(signal.SIGTERM, _stop)
            try:
                uvicorn.Server(config).run(sockets=[sock])
            except (KeyboardInterrupt, _Stopped):
                pass
            finally:
                signal.signal(signal.SIGTERM, previous)
            click.echo("blendin serve: stopped", err=True)
        finally:
            pair.close()
    finally:
        sock.close()
