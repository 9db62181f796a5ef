"""scripts/ablation_tables.py: docs/results.md's ablation tables from a report's summary.csv."""

import csv
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ablation_tables.py"
FIELDS = [
    "dataset", "method", "n", "score", "score_low", "score_high", "intervention_rate", "tokens", "length_share",
    "loop_rate", "instruction_loose", "instruction_strict", "prompt_loose", "prompt_loose_low", "prompt_loose_high",
    "prompt_strict", "prompt_strict_low", "prompt_strict_high", "complied_safe", "refused_unsafe",
]  # fmt: skip


def summary(tmp_path, rows):
    path = tmp_path / "summary.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "0.5") for key in FIELDS})
    return path


def run(path):
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=60)


def test_the_rows_come_in_the_fixed_order_named_by_what_they_ran(tmp_path):
    rows = [
        {"dataset": "ifeval", "method": "blendin-loop+end@0.2", "n": "3"},
        {
            "dataset": "ifeval",
            "method": "blendin-loop+endprobe",
            "n": "3",
            "prompt_loose": "0.25",
            "length_share": "0.9",
        },
        {"dataset": "ifeval", "method": "guide", "n": "4"},
        {"dataset": "ifeval", "method": "blendin-loop+end@0.3", "n": "3"},  # not a threshold fixed in advance
        {"dataset": "xstest", "method": "guide", "n": "4", "refused_unsafe": ""},
        {"dataset": "justeval", "method": "guide", "n": "5", "score": "0.25", "score_low": "0.1", "score_high": "0.6"},
    ]
    done = run(summary(tmp_path, rows))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ifeval = [line.split(" | ")[0] for line in lines[lines.index("ifeval:") + 4 : lines.index("xstest:") - 1]]
    assert ifeval == ["| guide", "| blendin-loop-end (the paper's)", "| blendin-loop+end@0.2"]
    paper = next(line for line in lines if "the paper's" in line)
    assert "| 3 | 0.250 (0.50-0.50) |" in paper and "| 90% |" in paper
    xstest = next(line for line in lines[lines.index("xstest:") :] if line.startswith("| guide"))
    assert xstest.split(" | ")[4] == "-"  # no unsafe prompts among the items: no value, no crash
    assert "| refused, safety items |" in lines[lines.index("justeval:") + 2]
    justeval = next(line for line in lines[lines.index("justeval:") :] if line.startswith("| guide"))
    assert justeval.startswith("| guide | 5 | 0.250 (0.10-0.60) |")  # the safety items' refusals


def test_a_file_that_is_not_a_summary_is_one_line_and_exit_1(tmp_path):
    for content in (b"\xff\xfe", b"dataset,method\nifeval,guide\n"):
        path = tmp_path / "summary.csv"
        path.write_bytes(content)
        done = run(path)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "ablation_tables:" in done.stderr
    missing = run(tmp_path / "none.csv")
    assert missing.returncode == 1 and "cannot read it" in missing.stderr
