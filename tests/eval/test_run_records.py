"""A run folder's record files survive a crash at any byte (issue 12, defect 7).

Removing the last byte of base.jsonl used to break the folder for good: the resume appended the
next record on the same line, and every later --resume and `eval report` failed. Here the last
record is cut at every kind of point; resuming loses at most that record, duplicates nothing,
and the report reads the folder. No models: records are written as the runner writes them.
"""

import errno
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendin_local.errors import BlendinError
from blendin_local.eval.report import load_rows, markdown_table
from blendin_local.eval.runs import RunFolder, read_records, read_run
from blendin_local.interfaces.cli import main

CONFIG = {"dataset": "gsm8k", "settings": {"gamma": 0.4}}
N_SAMPLES = 6


def record(i: int) -> dict:
    """A record shaped like runner.sample_record's, with multi-byte text for cuts inside a character."""
    return {
        "id": f"sample-{i}",
        "method": "base",
        "question": "Wie viel ist 2+2? 🙂",
        "output": f"Ça fait {i} — voilà",
        "score": i % 2,
        "scoring": {},
        "judge": None,
        "loglik": None,
        "stop_reason": "eos",
        "n_tokens": 3 + i,
        "n_interventions": 0,
        "intervention_rate": 0.0,
        "alpha_mean": None,
        "alphas": [],
        "guide_ranks": [],
        "base_top_p": [0.5],
        "tokens_per_s": 10.0,
        "seconds": 0.1,
    }


def resume_and_finish(path) -> RunFolder:
    """What `eval --resume` does with the folder: the samples not on disk are run and appended."""
    with RunFolder.open(path, CONFIG, resume=True) as folder:
        for i in range(N_SAMPLES):
            if not folder.is_done("base", f"sample-{i}"):
                folder.append("base", record(i))
    return folder


@settings(max_examples=400, deadline=None, database=None)
@given(written=st.integers(1, N_SAMPLES), cut=st.integers(0, 10_000))
def test_a_record_torn_anywhere_costs_that_record_alone(tmp_path_factory, written, cut):
    path = tmp_path_factory.mktemp("run")
    with RunFolder.open(path, CONFIG, resume=False) as folder:
        for i in range(written):
            folder.append("base", record(i))
    method_file = path / "base.jsonl"
    raw = method_file.read_bytes()
    last_start = raw.rfind(b"\n", 0, len(raw) - 1) + 1
    cut = last_start + cut % (len(raw) - last_start + 1)  # anywhere in the last record, its newline included
    method_file.write_bytes(raw[:cut])

    whole_last = cut >= len(raw) - 1  # only the newline (or nothing) was lost: the record is whole
    kept = {f"sample-{i}" for i in range(written - 1)} | ({f"sample-{written - 1}"} if whole_last else set())
    with RunFolder.open(path, CONFIG, resume=True) as reopened:
        assert reopened.done.get("base", set()) == kept

    resume_and_finish(path)
    data = method_file.read_bytes()
    assert data.endswith(b"\n") and all(line for line in data.split(b"\n")[:-1])  # every line whole
    ids = [r["id"] for r in read_records(method_file)]
    assert sorted(ids) == sorted(f"sample-{i}" for i in range(N_SAMPLES))  # nothing lost, nothing twice
    rows, _, _ = load_rows([path])
    assert [row.n for row in rows] == [N_SAMPLES] and "| base | 6 |" in markdown_table(rows)


@pytest.mark.filterwarnings("ignore:No artists with labels")  # a figure of one method has no legend
def test_the_issues_reproducer_and_eval_report(tmp_path, capsys):
    run = tmp_path / "run"
    with RunFolder.open(run, CONFIG, resume=False) as folder:
        for i in range(4):
            folder.append("base", record(i))
    method_file = run / "base.jsonl"
    method_file.write_bytes(method_file.read_bytes()[:-1])  # a crash between the record and its newline
    resume_and_finish(run)
    resume_and_finish(run)  # and again: the folder stays usable
    assert [r["id"] for r in read_records(method_file)] == [f"sample-{i}" for i in range(N_SAMPLES)]
    main(["eval", "report", str(run), "--out", str(tmp_path / "report")])  # returns: no error exit
    assert "| base | 6 |" in capsys.readouterr().out


def test_a_failed_write_leaves_no_torn_line(tmp_path, monkeypatch):
    folder = RunFolder.open(tmp_path, CONFIG, resume=False)
    folder.append("base", record(0))
    before = (tmp_path / "base.jsonl").read_bytes()
    real_write = os.write

    def disk_full_midway(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full_midway)
    with pytest.raises(OSError):
        folder.append("base", record(1))
    monkeypatch.setattr(os, "write", real_write)
    assert (tmp_path / "base.jsonl").read_bytes() == before
    folder.append("base", record(1))
    assert [r["id"] for r in read_records(tmp_path / "base.jsonl")] == ["sample-0", "sample-1"]


@pytest.mark.parametrize(
    "bad_line, needle",
    [
        (b'{"id": "x", "sco', "line 2: not a JSON record"),
        (b"[1, 2]", "line 2: not a JSON record with an id"),
        (b'{"id": 7}', "line 2"),
        (b"[" * 100_000 + b"]" * 100_000, "line 2"),
        (b"\xff\xfe", "line 2"),
    ],
)
def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path, bad_line, needle):
    with RunFolder.open(tmp_path, CONFIG, resume=False) as folder:
        folder.append("base", record(0))
    with (tmp_path / "base.jsonl").open("ab") as f:
        f.write(bad_line + b"\n" + json.dumps(record(1)).encode() + b"\n")
    with pytest.raises(BlendinError, match=needle):
        RunFolder.open(tmp_path, CONFIG, resume=True)
    with pytest.raises(BlendinError, match=needle):
        read_run(tmp_path)


@pytest.mark.parametrize("config", [b"", b"[1]", b"{" * 100_000, b"\xff"])
def test_an_unreadable_configuration_is_one_error(tmp_path, config):
    (tmp_path / "config.json").write_bytes(config)
    with pytest.raises(BlendinError, match="not a readable run configuration"):
        read_run(tmp_path)
    with pytest.raises(BlendinError, match="not a readable run configuration"):
        RunFolder.open(tmp_path, CONFIG, resume=True)


def test_a_lone_surrogate_in_a_record_is_written_and_read_back(tmp_path):
    folder = RunFolder.open(tmp_path, CONFIG, resume=False)
    folder.append("base", {**record(0), "judge": {"reason": "odd \ud800 text", "score": 1}})  # from a judge's JSON
    assert read_records(tmp_path / "base.jsonl")[0]["judge"]["reason"] == "odd \ud800 text"


@pytest.mark.filterwarnings("ignore:No artists with labels")
@pytest.mark.parametrize("where", ["file", "file/report"])
def test_a_report_folder_that_cannot_be_one_is_one_error(tmp_path, capsys, where):
    run = tmp_path / "run"
    with RunFolder.open(run, CONFIG, resume=False) as folder:
        folder.append("base", record(0))
    (tmp_path / "file").write_text("mine")
    with pytest.raises(SystemExit) as ended:
        main(["eval", "report", str(run), "--out", str(tmp_path / where)])
    assert ended.value.code == 1
    said = capsys.readouterr().err
    assert "cannot write the report there" in said and said.count("\n") == 1 and "Traceback" not in said
    assert (tmp_path / "file").read_text() == "mine"
