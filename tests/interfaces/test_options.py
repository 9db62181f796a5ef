"""The generation options of every command are GenerationSettings' fields: each field is an option
with the model's default (or the command's declared override) and the model's range, so an option
written by hand that disagrees with the settings fails here."""

import math

import click
import pytest

from blendin_local.engine.settings import REPORT_FIELDS, GenerationSettings
from blendin_local.interfaces.cli import cli
from blendin_local.interfaces.cli.eval import EVAL_DEFAULTS, EVAL_FIXED_FIELDS
from blendin_local.interfaces.cli.options import AlphaType, FiniteFloat

FIELDS = GenerationSettings.model_fields
# command -> (the fields it takes, its declared default overrides)
COMMANDS = {
    "generate": (set(FIELDS), {}),
    "chat": (set(FIELDS) - set(REPORT_FIELDS), {}),  # a chat shows text, not log-probabilities
    "serve": (set(FIELDS) - {"system", *REPORT_FIELDS}, {}),  # requests ask for them
    "eval": (set(FIELDS) - set(EVAL_FIXED_FIELDS), EVAL_DEFAULTS),
    "diagnose": ({"max_tokens", "gamma"}, {"max_tokens": 128}),
}
CASES = [
    pytest.param(command, name, id=f"{command} {name}")
    for command, (names, _) in COMMANDS.items()
    for name in sorted(names)
]


def option_for(command: str, name: str) -> click.Option:
    found = [p for p in cli.commands[command].params if p.name == name]
    assert len(found) == 1, f"{command} has {len(found)} options for {name}"
    return found[0]


def model_range(name: str) -> dict:
    bounds = {}
    for rule in FIELDS[name].metadata:
        for key in ("ge", "gt", "le", "lt"):
            if hasattr(rule, key):
                bounds[key] = getattr(rule, key)
    return bounds


@pytest.mark.parametrize("command, name", CASES)
def test_each_field_is_an_option_with_the_models_default_and_range(command, name):
    option = option_for(command, name)
    field = FIELDS[name]
    default = COMMANDS[command][1].get(name, field.get_default(call_default_factory=True))
    assert option.default == default or (option.multiple and list(option.default) == default)
    assert option.help == field.description
    bounds = model_range(name)
    kind = option.type
    if isinstance(kind, (click.IntRange, FiniteFloat)):
        low, high = kind.min, kind.max
        if "ge" in bounds or "gt" in bounds:
            assert low == bounds.get("ge", bounds.get("gt")) and kind.min_open == ("gt" in bounds)
        else:
            assert low is None
        if "le" in bounds or "lt" in bounds:
            assert high == bounds.get("le", bounds.get("lt")) and kind.max_open == ("lt" in bounds)
        elif isinstance(kind, click.IntRange):  # the command line bounds counts by llama.cpp's int32
            assert high == 2**31 - 1
        else:  # a finite float with no upper bound (end_threshold: above 1 only measures)
            assert high is None
    else:  # alpha's range is the model's: AlphaType reads "auto" as well as numbers
        assert not bounds or isinstance(kind, AlphaType), (name, kind)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_has_no_generation_option_beyond_its_fields(command):
    names, _ = COMMANDS[command]
    taken = {p.name for p in cli.commands[command].params} & set(FIELDS)
    assert taken == names


def test_the_options_accept_what_the_model_accepts_at_its_edges():
    """Each range's edges: the option takes a value the model takes, and refuses one it refuses."""
    for name in FIELDS:
        kind = option_for("generate", name).type
        if not isinstance(kind, (click.IntRange, FiniteFloat)):
            continue
        for edge in (kind.min, kind.max):
            if edge is None or (isinstance(kind, click.IntRange) and edge == 2**31 - 1):
                continue
            for value in (
                edge,
                edge - 1 if isinstance(edge, int) else math.nextafter(edge, -math.inf),
                edge + 1 if isinstance(edge, int) else math.nextafter(edge, math.inf),
            ):
                try:
                    kind.convert(str(value), None, None)
                    option_ok = True
                except click.BadParameter:
                    option_ok = False
                try:
                    GenerationSettings(**{name: value})
                    model_ok = True
                except ValueError:
                    model_ok = False
                assert option_ok == model_ok, (name, value)
