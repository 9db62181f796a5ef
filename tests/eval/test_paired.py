"""Rows against a reference row item by item (eval/paired.py), on hand-made scores and records."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blendin_local.eval.paired import item_scores, paired_difference, paired_table
from blendin_local.eval.report import load_rows, write_report
from blendin_local.eval.runs import RunFolder


def test_identical_rows_differ_by_nothing():
    p = paired_difference([1, 0, 1, 0.5], [1, 0, 1, 0.5])
    assert (p.n, p.difference, p.low, p.high, p.better, p.worse) == (4, 0.0, 0.0, 0.0, 0, 0)


def test_a_row_that_wins_every_item_wins_by_its_margin():
    p = paired_difference([1.0] * 10, [0.0] * 10)
    assert (p.difference, p.low, p.high, p.better, p.worse) == (1.0, 1.0, 1.0, 10, 0)


def test_one_win_in_twenty_is_not_told_apart_from_none():
    p = paired_difference([1] + [0] * 19, [0] * 20)
    assert p.difference == 0.05 and p.low == 0.0 and p.high > 0.05 and (p.better, p.worse) == (1, 0)


def test_the_same_scores_give_the_same_interval_every_time():
    a, b = [1, 0, 1, 1, 0, 0, 1], [0, 0, 1, 0, 1, 0, 0]
    assert paired_difference(a, b) == paired_difference(a, b)


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError):
        paired_difference([1, 0], [1])
    with pytest.raises(ValueError):
        paired_difference([], [])


SCORES = st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=60)


@given(SCORES)
def test_the_difference_is_the_mean_difference_inside_its_interval(pairs):
    row, reference = [a for a, _ in pairs], [b for _, b in pairs]
    p = paired_difference(row, reference)
    assert math.isclose(p.difference, sum(row) / len(row) - sum(reference) / len(reference), abs_tol=1e-9)
    assert -1 <= p.low <= p.difference + 1e-9 and p.difference - 1e-9 <= p.high <= 1
    assert p.better + p.worse <= p.n == len(pairs)


def ifeval_record(i: int, loose: bool, strict: bool) -> dict:
    return {"id": f"ifeval-{i}", "score": float(strict), "scoring": {"prompt_loose": loose, "prompt_strict": strict}}


def test_ifeval_is_compared_on_its_prompt_level_scores_over_the_common_items():
    by_method = {
        "guide": [ifeval_record(i, loose=i < 2, strict=i < 1) for i in range(4)],
        "blendin": [ifeval_record(i, loose=i < 3, strict=i < 1) for i in range(3)],  # one item fewer so far
    }
    assert item_scores("ifeval", by_method["guide"])["prompt loose"] == {
        "ifeval-0": 1.0,
        "ifeval-1": 1.0,
        "ifeval-2": 0.0,
        "ifeval-3": 0.0,
    }
    table = paired_table("ifeval", by_method, "guide", ["guide", "blendin"])
    assert "| blendin | prompt loose | 3 | +0.333 |" in table and "| blendin | prompt strict | 3 | +0.000 |" in table
    assert "| guide |" not in table
    assert paired_table("ifeval", by_method, "nudging", ["guide", "blendin"]) == ""  # no such row


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_the_report_compares_with_the_guide_where_it_ran(tmp_path):
    run = tmp_path / "run"
    folder = RunFolder.open(run, {"dataset": "gsm8k"}, resume=False)
    for i in range(5):
        base = {"id": f"g-{i}", "score": float(i < 4), "stop_reason": "eos", "n_tokens": 3, "output": "x"}
        guide = {**base, "score": float(i < 1)}
        for method, rec in (("base", base), ("guide", guide)):
            folder.append(method, {**rec, "method": method, "intervention_rate": 0.0, "tokens_per_s": 1.0})
    text = write_report(*load_rows([run]), tmp_path / "report").read_text()
    assert "Against `guide`" in text and "| base | score | 5 | +0.600 |" in text
    text = write_report(*load_rows([run]), tmp_path / "report", against="base").read_text()
    assert "| guide | score | 5 | -0.600 |" in text


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_a_named_reference_that_did_not_run_is_one_line(tmp_path, capsys):
    from blendin_local.interfaces.cli import main

    run = tmp_path / "run"
    folder = RunFolder.open(run, {"dataset": "gsm8k"}, resume=False)
    folder.append(
        "base",
        {
            "id": "g",
            "method": "base",
            "score": 1.0,
            "stop_reason": "eos",
            "n_tokens": 1,
            "output": "x",
            "intervention_rate": 0.0,
            "tokens_per_s": 1.0,
        },
    )
    main(["eval", "report", str(run), "--out", str(tmp_path / "report")])  # the default, absent: no comparison
    assert "Against" not in (tmp_path / "report" / "report.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "report", str(run), "--out", str(tmp_path / "report"), "--against", "gude"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and err == ["blendin: error: --against 'gude': no such row in these runs (rows: base)"]
