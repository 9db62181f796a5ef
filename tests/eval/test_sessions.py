"""A run folder's sessions (eval/sessions.py): what each invocation ran on, which session each
record came from, the line a resume on another runtime prints and the report's word on it. Pure
parts on hand-made runtimes and with hypothesis; the command end to end in test_eval_runs.py."""

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendin_local.errors import BlendinError
from blendin_local.eval.report import load_rows, write_report
from blendin_local.eval.runs import RunFolder, read_records
from blendin_local.eval.sessions import (
    MAX_SESSIONS_BYTES,
    SESSIONS_FILE,
    read_sessions,
    runtime_changes,
    runtime_differences,
    sessions_line,
    start_session,
)

ONE = {"llama_cpp_python": "0.3.36", "jobs": 1, "base": {"threads": 2, "repacked_kernels": True}}
TWO = {"llama_cpp_python": "0.3.36", "jobs": 2, "base": {"threads": 1, "repacked_kernels": True}}


def test_changes_name_each_setting_with_both_values():
    assert runtime_changes(ONE, ONE) == []
    assert runtime_changes(ONE, TWO) == ["base.threads 2 there, 1 now", "jobs 1 there, 2 now"]
    assert runtime_changes({"a": 1}, {"b": {"c": 2}}) == ["a 1 there, None now", "b None there, {'c': 2} now"]
    long = runtime_changes({"build": "x" * 500}, {"build": "y"})[0]
    assert len(long) < 100 and "…" in long  # a build string is shown cut


def test_sessions_are_kept_in_order_and_compared_with_the_last(tmp_path):
    when = datetime(2026, 12, 2, 7, 0, tzinfo=timezone.utc)
    assert start_session(tmp_path, ONE, when) == (0, [])
    assert start_session(tmp_path, ONE) == (1, [])
    assert start_session(tmp_path, TWO) == (2, ["base.threads 2 there, 1 now", "jobs 1 there, 2 now"])
    assert start_session(tmp_path, TWO)[1] == []  # against the last session, not the first
    sessions = read_sessions(tmp_path)
    assert [s["runtime"] for s in sessions] == [ONE, ONE, TWO, TWO]
    assert sessions[0]["started"] == "2026-12-02T07:00:00Z"
    assert [p.name for p in tmp_path.iterdir()] == [SESSIONS_FILE]  # no partial file left behind


def test_a_folder_without_sessions_has_none(tmp_path):
    assert read_sessions(tmp_path) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"{}", b"[1]", b'[{"runtime": 3}]', b"\xff\xfe", b"[" * 100_000, b" " * (MAX_SESSIONS_BYTES + 1)],
)
def test_a_broken_session_file_is_one_error_naming_it(tmp_path, content):
    (tmp_path / SESSIONS_FILE).write_bytes(content)
    with pytest.raises(BlendinError, match=f"{SESSIONS_FILE}: not a readable session list"):
        read_sessions(tmp_path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["runtime", "started", "x"]), inner),
    max_leaves=12,
)
FILES = st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode())


@settings(max_examples=200, deadline=None)
@given(content=FILES)
def test_any_session_file_reads_as_sessions_or_one_error(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("run")
    (folder / SESSIONS_FILE).write_bytes(content)
    try:
        sessions = read_sessions(folder)
    except BlendinError as e:
        assert "\n" not in str(e) and SESSIONS_FILE in str(e)
    else:
        assert all(isinstance(s["runtime"], dict) for s in sessions)
        index, _ = start_session(folder, ONE)  # and a session can follow them
        assert index == len(sessions)


# -- the report's word -----------------------------------------------------------------------------

SESSIONS = [
    {"started": "2026-12-01T05:00:00Z", "runtime": ONE},
    {"started": "2026-12-02T05:00:00Z", "runtime": ONE},
    {"started": "2026-12-02T07:00:00Z", "runtime": TWO},
]


def records(*sessions):
    return [{"id": str(i), "session": s} if s != "none" else {"id": str(i)} for i, s in enumerate(sessions)]


def test_one_runtime_says_nothing():
    assert sessions_line([], records("none", "none")) == ""
    assert sessions_line(SESSIONS, records(0, 0, 1, 1)) == ""  # two sessions, one runtime
    assert sessions_line(SESSIONS, []) == ""


def test_several_runtimes_are_counted_and_what_differs_is_named():
    line = sessions_line(SESSIONS, records(0, 1, 2, 2))
    assert "1 in session 1 (started 2026-12-01T05:00:00Z); 1 in session 2" in line
    assert "2 in session 3" in line and "differ in base.threads, jobs" in line


def test_a_setting_is_named_whole_whatever_its_name_holds():
    odd = [{"runtime": {"cpu model": "a", "base": {"n threads": 1}}}, {"runtime": {"cpu model": "b", "base": {}}}]
    assert runtime_differences(odd[0]["runtime"], odd[1]["runtime"]) == [
        ("base.n threads", 1, None),
        ("cpu model", "a", "b"),
    ]
    assert "differ in base.n threads, cpu model." in sessions_line(odd, records(0, 1))


def test_records_from_before_sessions_are_said_to_be_unknown():
    line = sessions_line(SESSIONS, records("none", "none", 2))
    assert "2 from before sessions were kept; 1 in session 3" in line and "differ in" not in line


@settings(max_examples=200, deadline=None)
@given(
    sessions=st.lists(st.fixed_dictionaries({"runtime": st.dictionaries(st.text(max_size=3), JSON)}), max_size=4),
    values=st.lists(JSON, max_size=6),
)
def test_any_sessions_and_records_give_a_line_or_nothing(sessions, values):
    line = sessions_line(sessions, [{"id": str(i), "session": v} for i, v in enumerate(values)])
    assert line == "" or (line.startswith("Runtimes:") and line.endswith(".\n\n"))


# -- in a run folder ---------------------------------------------------------------------------------


def test_records_carry_the_session_that_wrote_them(tmp_path):
    config = {"dataset": "x"}
    with RunFolder.open(tmp_path, config, resume=False, runtime=ONE) as first:
        first.append("base", {"id": "a"})
    with RunFolder.open(tmp_path, config, resume=True, runtime=ONE) as again:
        assert again.runtime_changes == []
        again.append("base", {"id": "b"})
    with RunFolder.open(tmp_path, config, resume=True, runtime=TWO) as moved:
        assert moved.runtime_changes == ["base.threads 2 there, 1 now", "jobs 1 there, 2 now"]
        moved.append("base", {"id": "c"})
    assert [(r["id"], r["session"]) for r in read_records(tmp_path / "base.jsonl")] == [("a", 0), ("b", 1), ("c", 2)]
    assert len(read_sessions(tmp_path)) == 3
    untracked = RunFolder.open(tmp_path / "other", config, resume=False)  # no runtime: no session (diagnose)
    untracked.append("base", {"id": "a"})
    assert "session" not in read_records(tmp_path / "other" / "base.jsonl")[0]
    assert not (tmp_path / "other" / SESSIONS_FILE).exists()


def test_a_broken_session_file_refuses_the_resume_before_anything_is_written(tmp_path):
    with RunFolder.open(tmp_path, {"dataset": "x"}, resume=False, runtime=ONE) as folder:
        folder.append("base", {"id": "a"})
    (tmp_path / SESSIONS_FILE).write_text("not json")
    with pytest.raises(BlendinError, match="not a readable session list"):
        RunFolder.open(tmp_path, {"dataset": "x"}, resume=True, runtime=ONE)
    assert (tmp_path / SESSIONS_FILE).read_text() == "not json"


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_the_report_says_when_a_run_spans_runtimes(tmp_path):
    run = tmp_path / "run"
    config = {"dataset": "gsm8k"}
    fields = {"score": 1.0, "output": "x", "stop_reason": "eos", "n_tokens": 3, "intervention_rate": 0.0}
    for runtime, item in ((ONE, "a"), (TWO, "b")):
        with RunFolder.open(run, config, resume=runtime is TWO, runtime=runtime) as folder:
            for method in ("base", "guide"):
                folder.append(method, {"id": item, "method": method, "tokens_per_s": 1.0, **fields})
    text = write_report(*load_rows([run]), tmp_path / "report").read_text()
    assert "Runtimes:" in text and "2 in session 1" in text and "differ in base.threads, jobs" in text
