"""`blendin generate`: one answer to one prompt, streamed, with its statistics on stderr."""

from __future__ import annotations

import json
import sys

import click

from blendin_local.engine.generation import GenerationResult
from blendin_local.engine.settings import GenerationSettings
from blendin_local.engine.speculation import SpeculationStats
from blendin_local.errors import BlendinError
from blendin_local.interfaces.cli.options import (
    SOURCE_COLOURS,
    checked_settings,
    generation_options,
    model_options,
)
from blendin_local.pair import BlendPair


@click.command()
@click.argument("prompt_arg", metavar="[PROMPT]", required=False)
@click.option("-p", "--prompt", help="The prompt (or give it as the argument, or on stdin).")
@generation_options()
@click.option(
    "--trace",
    is_flag=True,
    help="Colour tokens by who decided them (base plain, blend yellow, guide green);"
    " a per-token table on stderr at the end.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option("--no-stream", is_flag=True, help="Print the text at the end instead of as it comes.")
@model_options
def generate(
    prompt_arg,
    prompt,
    settings_values,
    trace,
    as_json,
    no_stream,
    models,
):
    """Generate an answer to PROMPT with one of the paper's methods."""
    text = read_prompt(prompt_arg, prompt)
    settings = checked_settings(settings_values, models.anti)
    pair = models.load()
    streaming = not (no_stream or as_json)
    result = run_generation(pair, text, settings, stream=streaming, trace=trace)
    if streaming and not result.text.endswith("\n"):
        click.echo()
    if trace:
        print_trace(result)
    if as_json:
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False))
    elif no_stream:
        click.echo(result.text)
    click.echo(stats_line(result), err=True)
    if result.stop_reason == "interrupted":
        sys.exit(130)


def read_prompt(argument: str | None, option: str | None) -> str:
    if argument is not None and option is not None:
        raise BlendinError("give the prompt once: as the argument or with -p, not both")
    text = argument if argument is not None else option
    if text is None:
        if sys.stdin.isatty():
            raise BlendinError("no prompt: give it as an argument, with -p, or on stdin")
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BlendinError(f"stdin is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    if not text.strip():
        raise BlendinError("the prompt is empty")
    return text


def run_generation(
    pair: BlendPair, prompt: str, settings: GenerationSettings, stream: bool, trace: bool
) -> GenerationResult:
    generation = pair.start(prompt, settings)
    try:
        for event in generation.steps():
            emit(event.text, event.entry.source if trace else None, stream)
        finished = generation.finish()
    except KeyboardInterrupt:
        finished = generation.finish("interrupted")
    emit(finished.text, None, stream)
    return finished.result


def emit(text: str, source: str | None, stream: bool) -> None:
    # click.echo's own stdout writes UTF-8 where Python's stdout is ASCII (PYTHONIOENCODING,
    # LC_ALL=C), and flushes after each piece.
    if stream and text:
        click.echo(click.style(text, fg=SOURCE_COLOURS.get(source)) if source else text, nl=False)


def print_trace(result: GenerationResult) -> None:
    click.echo("    #  source  base top-1  alpha  piece", err=True)
    rounds = {r.at: r for r in result.speculation}
    for i, e in enumerate(result.trace):
        if i in rounds:
            r = rounds[i]
            click.echo(f"       speculative round: {r.drafted} drafted, {r.accepted} accepted, {r.ended}", err=True)
        top = "    -" if e.base_top_p is None else f"{e.base_top_p:5.3f}"
        alpha = "    -" if e.alpha is None else f"{e.alpha:5.3f}"
        line = f"{i:5}  {e.source:6}  {top:>10}  {alpha}  {e.piece!r}"
        if e.logprob is not None:  # --top-logprobs: the piece's log-probability, then the most likely ones
            shown = ", ".join(f"{a.token!r} {a.logprob:.2f}" for a in e.logprob.top_logprobs)
            line += f"  {e.logprob.logprob:.3f}" + (f"  ({shown})" if shown else "")
        click.echo(click.style(line, fg=SOURCE_COLOURS[e.source]), err=True)


def stats_line(r: GenerationResult) -> str:
    alpha = "-" if r.alpha_mean is None else f"{r.alpha_mean:.2f}"
    speculation = SpeculationStats.of(r.speculation)
    return (
        f"\n[{r.method}] {r.n_tokens} tokens, {r.n_interventions} from the guide ({100 * r.intervention_rate:.1f}%),"
        f" mean alpha {alpha}, {r.tokens_per_s:.1f} tokens/s, stop: {r.stop_reason}"
        + (f"; {speculation.line()}" if speculation else "")
    )
