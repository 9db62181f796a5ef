"""`blendin pair check [BASE] [GUIDE]`: is this pair worth it, without benchmark files (eval/pair_check.py)."""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from blendin_local.engine.settings import GenerationSettings
from blendin_local.eval.diagnose import agreement_line, coverage_line, suggestion_line
from blendin_local.eval.pair_check import INSTRUCTIONS, LONG_RUN, PairCheck, check_pair, duration_text
from blendin_local.interfaces.cli.options import ModelChoice, generation_options, model_options


def with_positional_models(models: ModelChoice, base: str | None, guide: str | None) -> ModelChoice:
    """The model options with BASE and GUIDE in place of --base and --guide; naming a model both
    ways is a usage error unless both say the same."""
    for role, given, option in (("BASE", base, models.base), ("GUIDE", guide, models.guide)):
        if given is not None and option is not None and given != option:
            raise click.UsageError(f"{role} and --{role.lower()} name different models; give one of them")
    return dataclasses.replace(models, base=base or models.base, guide=guide or models.guide)


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def report_lines(check: PairCheck) -> list[str]:
    yes_no = {True: "yes", False: "no"}
    curve = "  ".join(f"{gamma:g}: {percent(rate)}" for gamma, rate in check.rate_curve.items())
    lines = [
        f"pair: {check.guide} -> {check.base}",
        coverage_line(check.as_dict()),
        f"guide has a chat template: {yes_no[check.guide_has_chat_template]}",
        f"base looks pre-trained: {yes_no[check.base_looks_pretrained]} ({check.base_form};"
        " pre-trained = no chat template and no instruct mark in its names)",
        f"sample: {check.n_instructions} built-in instructions, greedy, up to {check.max_tokens} tokens",
        f"BlendIn intervention rate at gamma {check.gamma:g}: {percent(check.blendin_rate)}",
        agreement_line(check.guide_in_base_top_k, check.mean_alpha),
        f"rate at each gamma (the base's own answers): {curve}",
        suggestion_line(check.suggested_gamma, check.suggested_gamma_note),
    ]
    if check.suggested_gamma is not None and check.suggested_gamma != check.gamma:
        lines.append(f"  (the rate moves when BlendIn's text does: measure it with --gamma {check.suggested_gamma:g})")
    if check.tokens_per_s and check.estimate:
        estimate = check.estimate
        lines.append(
            f"speed: BlendIn {check.tokens_per_s:.1f} tokens/s here: {estimate.items} items x {estimate.tokens}"
            f" tokens would take up to {duration_text(estimate.seconds)}"
        )
    lines.append(f"verdict: {check.verdict}: {check.reason}")
    return lines


@click.command("check")
# Not named base/guide: model_options' --base/--guide arrive under those names.
@click.argument("base_spec", metavar="[BASE]", required=False)
@click.argument("guide_spec", metavar="[GUIDE]", required=False)
@generation_options(include=("max_tokens", "gamma"), defaults={"max_tokens": 64})
@click.option(
    "--items",
    type=click.IntRange(1, 10**7),
    default=LONG_RUN[0],
    show_default=True,
    help="Items of the long run the time estimate is for.",
)
@click.option(
    "--tokens",
    type=click.IntRange(1, 10**7),
    default=LONG_RUN[1],
    show_default=True,
    help="Tokens per answer of that run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the check as one JSON object.")
@model_options
def check(base_spec, guide_spec, settings_values, items, tokens, as_json, models):
    """Is this pair worth it? Bridge coverage, the models' form, BlendIn's intervention rate on
    built-in instructions, a suggested gamma and a time estimate, with no benchmark file.
    BASE and GUIDE: registry names or GGUF paths [default: the default pair's].
    Exit code 0 worth it, 3 borderline, 4 not worth it."""
    settings = GenerationSettings.checked(**settings_values)  # before the models load
    pair = with_positional_models(models, base_spec, guide_spec).load()
    try:
        if not as_json:
            click.echo(f"checking on {len(INSTRUCTIONS)} built-in instructions, twice (base, BlendIn)", err=True)
        result = check_pair(pair, settings.max_tokens, settings.gamma, (items, tokens), progress=not as_json)
    finally:
        pair.close()
    click.echo(json.dumps(result.as_dict()) if as_json else "\n".join(report_lines(result)))
    sys.exit(result.exit_code)
