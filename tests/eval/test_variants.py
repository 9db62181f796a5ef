"""Method variants for ablations (eval/variants.py) and the report's loop measure (eval/loops.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blendin_local.engine.methods import METHODS
from blendin_local.errors import BlendinError
from blendin_local.eval.loops import loops
from blendin_local.eval.report import _row_order
from blendin_local.eval.variants import NUMBERED, SWITCHES, parse_variant


def test_a_plain_method_is_its_own_variant():
    for method in METHODS:
        assert parse_variant(method) == (method, {})


def test_switches_turn_settings_on_and_off_in_order():
    assert parse_variant("blendin+loop-end+fewshot") == (
        "blendin",
        {"loop_trigger": True, "end_trigger": False, "base_prompt": "fewshot"},
    )
    assert parse_variant("blendin-loop+loop") == ("blendin", {"loop_trigger": True})  # the last word wins
    assert parse_variant("blendin+spec4+loop") == ("blendin", {"speculative": 4, "loop_trigger": True})
    assert parse_variant("base-spec") == ("base", {"speculative": 0})


@pytest.mark.parametrize(
    "name",
    [
        "",
        "magic",
        "blendin+",
        "blendin+sing",
        "blendin loop",
        "+loop",
        "blendin+loop!",
        "blendin+spec",
        "blendin-spec4",
        "blendin+loop2",
        "blendin+spec100",
    ],
)
def test_anything_else_is_one_clear_error(name):
    with pytest.raises(BlendinError):
        parse_variant(name)


@given(st.text(max_size=30) | st.from_regex(r"blendin([+-](loop|end|spec)[0-9]{0,3})*", fullmatch=True))
def test_any_text_is_a_variant_or_a_blendin_error(name):
    try:
        method, overrides = parse_variant(name)
    except BlendinError:
        return
    known = {k for on, off in SWITCHES.values() for k in {**on, **off}} | set(NUMBERED.values())
    assert method in METHODS and set(overrides) <= known


def test_report_rows_keep_each_method_before_its_variants():
    names = ["blendin+loop", "guide", "blendin", "base", "nudging", "mystery", "blendin-loop-end"]
    assert sorted(names, key=_row_order) == [
        "base",
        "guide",
        "nudging",
        "blendin",
        "blendin+loop",
        "blendin-loop-end",
        "mystery",
    ]


def test_an_answer_loops_when_a_word_4gram_comes_three_times():
    assert loops("Add the milk. Add the milk! add THE milk, Add the milk.")
    assert not loops("Add the milk. Add the milk. Then stir.")
    assert not loops("one two three four five six seven eight nine ten")


@pytest.mark.parametrize("name", ["x" * 100_000, "blendin" + "+loop" * 20_000 + "!"])
def test_a_huge_name_gets_a_short_error(name):
    with pytest.raises(BlendinError) as error:
        parse_variant(name)
    assert len(str(error.value)) < 200 and "\n" not in str(error.value)
