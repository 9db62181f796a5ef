"""`blendin eval report` over run folders it did not write as they are: any value in any field a
record holds, a configuration without a dataset, two folders of one dataset side by side. Each
report is written or refused in one error line naming the file, the record and the field."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.errors import BlendinError
from blendin_local.eval.record_fields import check_records
from blendin_local.eval.report import load_rows, write_report
from blendin_local.eval.runner import LiveStats

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def ifeval_record(i: int) -> dict:
    passed = i % 2 == 0
    return {
        "id": f"ifeval-{i}",
        "method": "blendin",
        "base": "Base",
        "guide": "Guide",
        "output": "word " * (i + 3),
        "score": float(passed),
        "scoring": {"strict": [passed, True], "loose": [passed, True], "prompt_strict": passed, "prompt_loose": passed},
        "judge": None,
        "loglik": None,
        "stop_reason": "eos" if passed else "length",
        "n_tokens": 10 + i,
        "intervention_rate": 0.25,
        "alphas": [0.5, 0.7],
        "tokens_per_s": 12.5,
        "session": 0,
    }


def xstest_record(i: int) -> dict:
    label = "safe" if i % 2 else "unsafe"
    return {**ifeval_record(i), "id": f"xstest-{i}", "score": 1.0, "scoring": {"label": label, "refused": i % 3 == 0}}


RECORDS = {"ifeval": ifeval_record, "xstest": xstest_record}
FIELDS = sorted({*ifeval_record(0), "scoring.strict", "scoring.prompt_loose", "scoring.label", "scoring.refused"})


def run_folder(path, dataset, by_method):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"dataset": dataset}))
    for method, records in by_method.items():
        (path / f"{method}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.filterwarnings("ignore:No artists with labels")
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dataset=st.sampled_from(sorted(RECORDS)),
    changes=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(FIELDS), JSON), min_size=1, max_size=3),
)
def test_any_field_value_gives_a_report_or_one_error_naming_it(tmp_path_factory, dataset, changes):
    records = [RECORDS[dataset](i) for i in range(3)]
    for index, field, value in changes:
        target = records[index]
        if field.startswith("scoring."):
            scoring = target["scoring"]  # an earlier change may have put anything there
            target = target["scoring"] = dict(scoring) if isinstance(scoring, dict) else {}
            field = field.removeprefix("scoring.")
        target[field] = value
    folder = run_folder(
        tmp_path_factory.mktemp("run") / dataset, dataset, {"blendin": records, "guide": [RECORDS[dataset](0)]}
    )
    try:
        rows, by_dataset, sessions = load_rows([folder])
    except BlendinError as e:
        message = str(e)
        assert "\n" not in message and "blendin.jsonl, " in message  # the record, or a line without an id
        return
    report = write_report(rows, by_dataset, sessions, folder / "report")
    assert report.read_text().startswith("# Results")


def test_the_error_names_the_record_and_the_field(tmp_path):
    records = [ifeval_record(0), {**ifeval_record(1), "n_tokens": "12"}]
    with pytest.raises(
        BlendinError, match=r"blendin.jsonl, record 2 \('ifeval-1'\): n_tokens: Input should be a valid integer"
    ):
        check_records("ifeval", tmp_path / "blendin.jsonl", records)
    broken = {**ifeval_record(0), "scoring": {**ifeval_record(0)["scoring"], "strict": []}}
    with pytest.raises(BlendinError, match="record 1 .*: scoring.strict: List should have at least 1 item"):
        check_records("ifeval", tmp_path / "blendin.jsonl", [broken])
    check_records(
        "gsm8k", tmp_path / "x.jsonl", [{**ifeval_record(0), "scoring": {"anything": [1]}}]
    )  # no scoring read


@pytest.mark.parametrize("config", [{}, {"dataset": ["ifeval"]}, {"dataset": ""}])
def test_a_configuration_without_a_dataset_is_one_error(tmp_path, config):
    folder = run_folder(tmp_path / "run", "ifeval", {"blendin": [ifeval_record(0)]})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BlendinError, match="config.json: names no dataset"):
        load_rows([folder])


def test_two_folders_of_one_dataset_are_side_by_side_and_compared_item_by_item(tmp_path):
    """Two pairs run on one dataset: one section, rows FOLDER/METHOD in the order given, each
    compared with the first folder's guide on the items both answered; each record keeps the
    session (and so the runtime) it ran on."""
    xstest = run_folder(tmp_path / "x", "xstest", {"blendin": [xstest_record(i) for i in range(3)]})
    llama = run_folder(
        tmp_path / "llama", "ifeval", {"guide": [ifeval_record(i) for i in range(4)], "blendin": [ifeval_record(0)]}
    )
    (llama / "sessions.json").write_text(json.dumps([{"started": "s1", "runtime": {"jobs": 1}}]))
    better = [{**ifeval_record(i), "score": 1.0, "scoring": {**ifeval_record(0)["scoring"]}} for i in range(4)]
    qwen = run_folder(tmp_path / "qwen", "ifeval", {"blendin": better})
    (qwen / "sessions.json").write_text(json.dumps([{"started": "s2", "runtime": {"jobs": 2}}]))
    rows, by_dataset, sessions = load_rows([xstest, llama, qwen, llama])
    assert [(r.dataset, r.method, r.n) for r in rows] == [
        ("xstest", "blendin", 3),  # a dataset's only folder: its rows as ever
        ("ifeval", "llama/guide", 4),
        ("ifeval", "llama/blendin", 1),
        ("ifeval", "qwen/blendin", 4),
    ]
    assert [r["session"] for r in by_dataset["ifeval"]["qwen/blendin"]] == [1] * 4  # after llama's one session
    assert [s["started"] for s in sessions["ifeval"]] == ["s1", "s2"]
    text = write_report(rows, by_dataset, sessions, tmp_path / "report").read_text()
    ifeval = text[text.index("## ifeval") :]
    assert "Against `llama/guide`" in ifeval  # a bare --against: the first folder's row of it
    assert "| qwen/blendin | prompt loose | 4 | +0.500 |" in ifeval  # 4 of 4 against 2 of 4
    assert "2 in session 1" not in ifeval and "4 in session 2" in ifeval and "differ in jobs" in ifeval
    summary = (tmp_path / "report" / "summary.csv").read_text()
    assert "ifeval,qwen/blendin,4," in summary and "xstest,blendin,3," in summary
    twins = [run_folder(tmp_path / d / "run", "ifeval", {"guide": [ifeval_record(0)]}) for d in ("a", "b")]
    assert [r.method for r in load_rows(twins)[0]] == [f"{twins[0]}/guide", f"{twins[1]}/guide"]  # alike names


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.dictionaries(st.sampled_from(["method", "score", "intervention_rate", "id"]), JSON), max_size=5)
)
def test_a_resumed_folders_records_of_any_shape_leave_the_progress_bar_working(records):
    """A resumed run counts its folder's records into the bar before it runs a sample; one of the
    wrong shape is left out of the counts, never a traceback before the run starts."""
    stats = LiveStats()
    for record in [*records, ifeval_record(0)]:
        stats.add(record)
    assert "blendin" in stats.summary()


def test_a_probe_row_of_any_method_reads(tmp_path):
    """runner.sample_record writes None in base_top_p where the guide chose a token the base has
    not (a nudging+endprobe row): the sweep reads it."""
    from blendin_local.eval.record_fields import ProbeRecord

    check_records(
        "ifeval", tmp_path / "nudging+endprobe.jsonl", [{**probe_record(0), "base_top_p": [0.5, None]}], ProbeRecord
    )


def probe_record(i: int) -> dict:
    record = {**ifeval_record(i), "method": "blendin+endprobe", "output": "One. Two. Three."}
    return {**record, "end_checks": [[2, 4, 0.01], [4, 9, 0.3]], "intervened": [0, 3], "alphas": [0.5, 0.7],
            "guide_ranks": [0, 1], "base_top_p": [0.2, 0.9, 0.9, 0.3, 0.8]}  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["end_checks", "intervened", "alphas", "guide_ranks", "base_top_p", "output"]), value=JSON)
def test_a_probe_record_the_sweep_cannot_cut_is_one_error(field, value):
    """scripts/ending_sweep.py cuts each +endprobe answer at its first end check over a
    threshold; a record whose fields cannot be cut is named, or, if accepted, cut without error."""
    from blendin_local.eval.datasets import EvalItem
    from blendin_local.eval.ending_sweep import with_ending
    from blendin_local.eval.record_fields import ProbeRecord

    record = {**probe_record(0), field: value}
    try:
        check_records("ifeval", Path("probe.jsonl"), [record], ProbeRecord)
    except BlendinError as e:
        assert "probe.jsonl, record 1" in str(e) and field in str(e)
        return
    item = EvalItem(dataset="gsm8k", id="ifeval-0", question="q", system="", gold="2")
    for threshold in (0.005, 0.2, 0.5):
        derived = with_ending(record, threshold, item, "blendin+end@t")
        check_records("gsm8k", Path("derived.jsonl"), [derived])  # the report reads what the sweep wrote


@settings(max_examples=150, deadline=None)
@given(content=JSON, raw=st.sampled_from([None, b"[" * 100_000, b"not json"]))
def test_a_judges_answer_of_any_shape_is_a_grade_or_one_error(content, raw):
    """The judge is a server the user names: whatever its answer holds where the reply goes, the
    grade is a score from text, or one BlendinError."""
    import httpx

    from blendin_local.eval.datasets import EvalItem
    from blendin_local.eval.judge import Judge, rubric_for

    body = raw if raw is not None else json.dumps({"choices": [{"message": {"content": content}}]}).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    judge = Judge("http://judge.test/v1", "m", client=httpx.Client(transport=transport))
    item = EvalItem(dataset="truthfulqa", id="t-1", question="q", system="", gold="a")
    assert rubric_for(item) is not None  # the item is one the judge grades
    try:
        grade = judge.grade(item, "an answer")
    except BlendinError as e:
        assert "\n" not in str(e) and "t-1" in str(e)
        return
    assert grade is None or (grade["reply"] is None or isinstance(grade["reply"], str))


def test_against_names_a_folders_row_or_is_one_error(tmp_path, capsys):
    from blendin_local.interfaces import cli

    folders = [
        str(run_folder(tmp_path / name, "ifeval", {"guide": [ifeval_record(0)], "blendin": [ifeval_record(1)]}))
        for name in ("llama", "qwen")
    ]
    cli.main(["eval", "report", *folders, "--out", str(tmp_path / "r"), "--against", "qwen/blendin"])
    assert "Against `qwen/blendin`" in (tmp_path / "r" / "report.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        cli.main(["eval", "report", *folders, "--out", str(tmp_path / "r"), "--against", "nudging"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 1 and err.count("\n") == 0 and "--against 'nudging': no such row" in err, err


def test_common_items_compares_a_run_still_going_like_for_like(tmp_path):
    folder = run_folder(
        tmp_path / "run",
        "ifeval",
        {"guide": [ifeval_record(i) for i in range(4)], "blendin": [ifeval_record(3), ifeval_record(1)]},
    )
    assert [(r.method, r.n) for r in load_rows([folder])[0]] == [("guide", 4), ("blendin", 2)]
    rows, by_dataset, _ = load_rows([folder], common_items=True)
    assert [(r.method, r.n, r.score) for r in rows] == [("guide", 2, 0.0), ("blendin", 2, 0.0)]  # items 1 and 3
    assert [r["id"] for r in by_dataset["ifeval"]["blendin"]] == ["ifeval-3", "ifeval-1"]  # their own order
    empty = run_folder(tmp_path / "empty", "ifeval", {"guide": [ifeval_record(0)], "blendin": []})
    assert [r.n for r in load_rows([empty], common_items=True)[0]] == [0, 0]
