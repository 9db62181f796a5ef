"""Method variants for an ablation: a method name with switches, e.g. `blendin+loop-end+fewshot`.

`+name` turns a switch on and `-name` off; a switch not named keeps the run's setting. The
name, as written, is the variant's row in the run folder and the report, so that a row keeps
its meaning when a default changes: `blendin-loop-end` is the paper's BlendIn whatever the
defaults say.
"""

from __future__ import annotations

import re
from typing import Any

from blendin_local.engine.methods import METHODS
from blendin_local.engine.prompts import preview
from blendin_local.errors import BlendinError

# switch -> the settings it gives when on, and when off
SWITCHES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "loop": ({"loop_trigger": True}, {"loop_trigger": False}),
    "end": ({"end_trigger": True}, {"end_trigger": False}),
    # The ending trigger measuring only (a threshold above 1 never ends an answer): the row is
    # BlendIn without it, and eval/ending_sweep.py derives the row of every threshold from it.
    "endprobe": ({"end_trigger": True, "end_threshold": 2.0}, {"end_trigger": False}),
    "fewshot": ({"base_prompt": "fewshot"}, {"base_prompt": "plain"}),
}
# Switches that take a number: `+spec4` drafts 4 guide tokens per speculative round, `-spec` is off.
NUMBERED: dict[str, str] = {"spec": "speculative"}
_SWITCH = re.compile(r"([+-])([a-z]+)([0-9]{0,2})")


def parse_variant(name: str) -> tuple[str, dict[str, Any]]:
    """(the method, the settings its switches give) for a variant name; a BlendinError if it is not one."""
    method = re.match(r"[a-z]+", name)
    if method is None or method.group() not in METHODS:
        raise BlendinError(
            f"unknown method {preview(name)}; known: {', '.join(METHODS)}, each with +/- {', '.join(SWITCHES)}"
            f" and +specK/-spec"
        )
    overrides: dict[str, Any] = {}
    position = method.end()
    for switch in _SWITCH.finditer(name, position):
        sign, word, number = switch.groups()
        if switch.start() != position:
            break
        if word in NUMBERED and (sign == "-") == (number == ""):
            overrides[NUMBERED[word]] = int(number or 0)
        elif word in SWITCHES and not number:
            on, off = SWITCHES[word]
            overrides.update(on if sign == "+" else off)
        else:
            break
        position = switch.end()
    if position != len(name):
        raise BlendinError(
            f"{preview(name)}: after the method come switches +NAME or -NAME, where NAME is one of {', '.join(SWITCHES)},"
            " and +specK (K drafted tokens) or -spec"
        )
    return method.group(), overrides


def method_of(name: str) -> str:
    """The method a variant name runs (a plain method name is its own)."""
    return parse_variant(name)[0]
