"""`blendin chat`: a multi-turn chat in the terminal, a thin shell over chat.ChatSession."""

from __future__ import annotations

import copy
import sys
from typing import Iterator

import click

from blendin_local.interfaces.chat import ChatSession
from blendin_local.interfaces.cli import SOURCE_COLOURS, generate, load_pair, model_options
from blendin_local.errors import BlendinError
from blendin_local.engine.generation import GenerationSettings

# The sampling and blending options of `generate`, taken from its command so that they stay the same.
GENERATION_OPTIONS = ("system", "method", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "gamma",
                      "alpha", "nudging_chunk", "stop", "stop_new_turn", "base_prompt", "guide_prompt")


def generation_options(exclude: tuple[str, ...] = ()):
    """Decorator: `generate`'s sampling and blending options on another command."""
    def decorate(f):
        params = [p for p in generate.params if p.name in GENERATION_OPTIONS and p.name not in exclude]
        # click.command reverses the decorators' list (they run bottom-up): add them last-first.
        f.__click_params__ = getattr(f, "__click_params__", []) + [copy.copy(p) for p in reversed(params)]
        return f
    return decorate


def settings_from_options(options: dict) -> GenerationSettings:
    """GenerationSettings from the values of generation_options (one readable error if a value is bad)."""
    values = {name: options[name] for name in GENERATION_OPTIONS if name in options}
    values["stop"] = list(values.get("stop") or ())
    values["stop_at_new_turn"] = values.pop("stop_new_turn", True)
    return GenerationSettings.checked(**values)


class TerminalOutput:
    """Answers on stdout as they stream (coloured by source while /trace is on), the rest on stderr."""

    def __init__(self):
        self._line_open = False
        self._out = click.get_text_stream("stdout")

    def answer(self, text: str, source: str | None) -> None:
        if not text:
            return
        click.echo(click.style(text, fg=SOURCE_COLOURS.get(source)) if source else text, nl=False, file=self._out)
        self._out.flush()
        self._line_open = not text.endswith("\n")

    def info(self, line: str) -> None:
        click.echo(line, err=True)

    def end_line(self) -> None:
        if self._line_open:
            click.echo(file=self._out)
            self._line_open = False


def terminal_lines(interactive: bool) -> Iterator[str]:
    """Lines typed by the user until Ctrl-D; Ctrl-C at the prompt only clears the line."""
    # Bytes that are not UTF-8 arrive as lone surrogates, for the session to refuse that one line;
    # strict decoding would end the whole chat (and lose the conversation) with a traceback.
    sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            if interactive:
                click.echo()
            return
        except KeyboardInterrupt:
            click.echo("\n(Ctrl-D or /exit to leave)", err=True)
            continue
        yield line


@click.command()
@generation_options()
@click.option("--trace", is_flag=True, help="Start with /trace on: pieces coloured by who decided them"
              " (base plain, blend yellow, guide green).")
@model_options
def chat(trace, base, guide, anti, ctx_size, threads, gpu_layers, repack, **options):
    """Chat with a blended pair in the terminal, turn after turn.

    Type a question, or a command: /trace on|off, /method NAME, /gamma X, /alpha X|auto, /reset,
    /save FILE, /settings, /help, /exit. Ctrl-C stops the current answer (what was written stays
    in the history); Ctrl-D leaves. Lines can also be piped in on stdin.
    """
    settings = settings_from_options(options)
    if settings.method == "proxy" and anti is None:
        raise BlendinError("--method proxy needs the guide's untuned counterpart: pass --anti PATH|NAME")
    pair = load_pair(base, guide, anti, ctx_size, threads, gpu_layers, repack)
    interactive = sys.stdin.isatty()
    try:
        if interactive:
            click.echo(f"blendin chat: {pair.guide.name} -> {pair.base.name}, method {settings.method}."
                       " /help lists the commands, Ctrl-D leaves.", err=True)
        session = ChatSession(pair, settings, TerminalOutput(), trace=trace)
        session.run(terminal_lines(interactive))
    finally:
        pair.close()
