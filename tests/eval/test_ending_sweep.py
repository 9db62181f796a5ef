"""eval/ending_sweep.py: the answer of any ending threshold, derived from one run that only
measured its endings, is the answer a run at that threshold gives, on the real default pair."""

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blendin_local.eval.datasets import EvalItem, load_dataset, sample_items
from blendin_local.eval.ending_sweep import derive_rows, derived_name, first_ending, with_ending
from blendin_local.eval.runner import run_samples

DATA = Path(os.environ.get("BLENDIN_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
THRESHOLD = 0.05  # low enough that the guide's end probability reaches it in short answers


class Collected:
    """A run folder that keeps the records in memory."""

    def __init__(self, dataset: str):
        self.config = {"dataset": dataset}
        self.earlier: list[dict] = []
        self.rows: dict[str, list[dict]] = {}

    def is_done(self, method: str, sample_id: str) -> bool:
        return False

    def append(self, method: str, record: dict) -> None:
        self.rows.setdefault(method, []).append(record)


@pytest.mark.skipif(not (DATA / "ifeval").exists(), reason="no benchmark data folder")
def test_derived_rows_are_the_rows_that_ran(default_pair):
    items = sample_items(load_dataset("ifeval", DATA), 3)
    folder = Collected("ifeval")
    rows = ["blendin-end", "blendin+endprobe", "blendin+end"]
    run_samples([default_pair], items, rows, {"max_tokens": 64, "end_threshold": THRESHOLD}, folder, progress=False)
    # Measuring the endings changes no answer (the guide, SmolLM2 Q4_1, gives the same logits
    # whatever the batch schedule: docs/design.md); with the loop trigger too, on scripted models
    # (tests/engine/test_triggers.py).
    fields = ("id", "output", "stop_reason", "n_tokens", "intervened", "score")
    probe, without = folder.rows["blendin+endprobe"], folder.rows["blendin-end"]
    assert [[r[f] for f in fields] for r in probe] == [[r[f] for f in fields] for r in without]
    fields += ("n_interventions", "alphas", "base_top_p", "scoring")
    derived = derive_rows(folder.rows, {item.id: item for item in items}, [THRESHOLD])
    got = derived[derived_name("blendin+endprobe", THRESHOLD)]
    assert [[r[f] for f in fields] for r in got] == [[r[f] for f in fields] for r in folder.rows["blendin+end"]]
    assert any(r["stop_reason"] == "eos" for r in got)  # the threshold was reached somewhere


def test_derived_name_keeps_the_other_switches():
    assert derived_name("blendin+loop+endprobe+fewshot", 0.3) == "blendin+loop+end+fewshot@0.3"


CHECKS = st.lists(st.tuples(st.integers(1, 50), st.integers(0, 200), st.floats(0.0, 1.0)), max_size=8).map(
    lambda checks: sorted(checks)
)


@given(CHECKS, st.floats(0.01, 1.0))
def test_the_cut_is_the_first_check_that_reaches_the_threshold(checks, threshold):
    cut = first_ending(checks, threshold)
    reached = [c for c in checks if c[2] >= threshold]
    assert cut == (None if not reached else reached[0][:2])


IN_FILE = {
    "key": 1,
    "prompt": "Answer in lowercase.",
    "instruction_id_list": ["change_case:english_lowercase"],
    "kwargs": [{}],
}


def test_a_record_cut_short_is_scored_again_and_counts_only_its_tokens():
    item = EvalItem(
        "ifeval",
        "x",
        "Answer in lowercase.",
        "",
        None,
        meta={"key": 1, "record": IN_FILE},
    )
    record = {
        "id": "x", "method": "blendin+endprobe", "output": 'this answer is written in lowercase letters only.\n' + "BUT THIS PART SHOUTS", "score": 0.0, "scoring": {},
        "judge": None, "stop_reason": "length", "n_tokens": 8, "n_interventions": 2, "intervention_rate": 0.25,
        "alpha_mean": 0.5, "alphas": [0.4, 0.6], "guide_ranks": [0, 3], "base_top_p": [0.9] * 8,
        "intervened": [1, 6], "end_checks": [[4, 50, 0.2], [8, 70, 0.9]],
    }  # fmt: skip
    cut = with_ending(record, 0.1, item, "blendin+end@0.1")
    assert (
        cut["output"] == "this answer is written in lowercase letters only.\n"
        and cut["stop_reason"] == "eos"
        and cut["n_tokens"] == 4
    )
    assert cut["n_interventions"] == 1 and cut["alphas"] == [0.4] and cut["guide_ranks"] == [0]
    assert cut["intervention_rate"] == 0.25 and cut["base_top_p"] == [0.9] * 4 and cut["judge"] is None
    assert cut["score"] == 1.0 and cut["derived_from"] == "blendin+endprobe"
    assert with_ending(record, 0.95, item, "blendin+end@0.95")["output"] == record["output"]
