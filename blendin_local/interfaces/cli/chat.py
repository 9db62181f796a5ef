"""`blendin chat`: a multi-turn chat in the terminal, a thin shell over chat.ChatSession."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import click

from blendin_local.engine.settings import REPORT_FIELDS
from blendin_local.interfaces.chat import ChatSession
from blendin_local.interfaces.cli.options import (
    SOURCE_COLOURS,
    checked_settings,
    generation_options,
    model_options,
)


class TerminalOutput:
    """Answers on stdout as they stream (coloured by source while /trace is on), the rest on stderr."""

    def __init__(self):
        self._line_open = False

    def answer(self, text: str, source: str | None) -> None:
        if not text:
            return
        # click.echo's own stdout: UTF-8 even where Python's is ASCII, flushed after each piece.
        click.echo(click.style(text, fg=SOURCE_COLOURS.get(source)) if source else text, nl=False)
        self._line_open = not text.endswith("\n")

    def info(self, line: str) -> None:
        click.echo(line, err=True)

    def end_line(self) -> None:
        if self._line_open:
            click.echo()
            self._line_open = False


def terminal_lines(interactive: bool) -> Iterator[str]:
    """Lines typed by the user until Ctrl-D; Ctrl-C at the prompt only clears the line."""
    # Input is UTF-8 whatever the locale says (LC_ALL=C would make it ASCII). Bytes that are not
    # UTF-8 arrive as lone surrogates, for the session to refuse that one line; strict decoding
    # would end the whole chat (and lose the conversation) with a traceback.
    if isinstance(sys.stdin, io.TextIOWrapper):  # a real stdin is; a test may put something else there
        sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
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
@generation_options(exclude=REPORT_FIELDS)
@click.option(
    "--trace",
    is_flag=True,
    help="Start with /trace on: pieces coloured by who decided them (base plain, blend yellow, guide green).",
)
@model_options
def chat(settings_values, trace, models):
    """Chat with a blended pair in the terminal, turn after turn.

    Type a question, or a command: /trace on|off, /method NAME, /gamma X, /alpha X|auto, /reset,
    /save FILE, /settings, /help, /exit. Ctrl-C stops the current answer (what was written stays
    in the history); Ctrl-D leaves. Lines can also be piped in on stdin.
    """
    settings = checked_settings(settings_values, models.anti)
    pair = models.load()
    interactive = sys.stdin.isatty()
    try:
        if interactive:
            click.echo(
                f"blendin chat: {pair.guide.name} -> {pair.base.name}, method {settings.method}."
                " /help lists the commands, Ctrl-D leaves.",
                err=True,
            )
        session = ChatSession(pair, settings, TerminalOutput(), trace=trace)
        session.run(terminal_lines(interactive))
    finally:
        pair.close()
