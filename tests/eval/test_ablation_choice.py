"""scripts/ablation_choice.py: docs/results.md's rule for the defaults, on hand-made summaries."""

import csv
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ablation_choice.py"
FIELDS = ["dataset", "method", "n", "score", "prompt_loose", "instruction_loose", "length_share"]
# candidate: IFEval prompt loose, instruction loose, length share; XSTest score (100 items)
RESULTS = {
    "guide": (0.20, 0.30, 0.50, 0.59),
    "blendin-loop+endprobe": (0.18, 0.30, 0.80, 0.58),  # the paper's BlendIn
    "blendin-loop+end@0.2": (0.20, 0.30, 0.60, 0.58),  # qualifies
    "blendin-loop+end@0.02": (0.21, 0.29, 0.40, 0.57),  # qualifies: one XSTest item below is allowed
    "blendin-loop+end@0.005": (0.21, 0.31, 0.30, 0.56),  # the best scores, but two XSTest items below
    "blendin+loop+endprobe": (0.22, 0.35, 0.85, 0.58),  # more length endings than the paper's
    "blendin+loop+end@0.005": (0.19, 0.40, 0.05, 0.58),  # below the guide
    "blendin+loop+end+fewshot@0.005": (0.21, 0.29, 0.40, 0.58),  # ties @0.02 but for more additions
}


def summary(tmp_path, results, n="300", datasets=("ifeval", "xstest")):
    path = tmp_path / "summary.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for method, (loose, inst, length, xstest) in results.items():
            if "ifeval" in datasets:
                row = {"prompt_loose": loose, "instruction_loose": inst, "length_share": length, "score": loose}
                writer.writerow({"dataset": "ifeval", "method": method, "n": n, **row})
            if "xstest" in datasets:
                writer.writerow({"dataset": "xstest", "method": method, "n": "100", "score": xstest})
    return path


def run(path):
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=60)


def test_the_rule_picks_the_best_qualifying_candidate_and_says_why_others_fail(tmp_path):
    done = run(summary(tmp_path, RESULTS))
    assert done.returncode == 0, done.stderr
    standing = {line.split(" | ")[0][2:]: line.split(" | ")[-1][:-2] for line in done.stdout.splitlines()[2:9]}
    assert standing == {
        "blendin-loop+endprobe": "prompt loose below the guide's",  # the first condition it fails
        "blendin-loop+end@0.2": "qualifies",
        "blendin-loop+end@0.02": "qualifies",
        "blendin-loop+end@0.005": "XSTest more than one item below the paper's BlendIn",
        "blendin+loop+endprobe": "not fewer length endings than the paper's BlendIn",
        "blendin+loop+end@0.005": "prompt loose below the guide's",
        "blendin+loop+end+fewshot@0.005": "qualifies",
    }
    assert done.stdout.strip().endswith(
        "Default: blendin-loop+end@0.02 (end_threshold=0.02, end_trigger=True, loop_trigger=False)."
    )
    assert "preview" not in done.stdout
    loop_wins = {**RESULTS, "blendin+loop+endprobe": (0.22, 0.35, 0.70, 0.58)}
    assert (
        run(summary(tmp_path, loop_wins))
        .stdout.strip()
        .endswith("Default: blendin+loop+endprobe (end_trigger=False, loop_trigger=True).")
    )


def test_none_qualifying_keeps_the_papers_and_a_partial_run_is_a_preview(tmp_path):
    below = {name: (0.10, *rest) if name != "guide" else (0.2, *rest) for name, (_, *rest) in RESULTS.items()}
    done = run(summary(tmp_path, below, n="63"))
    assert done.returncode == 0, done.stderr
    assert "(a preview: the rule is for 300 IFEval items, these rows have 63)" in done.stdout
    assert done.stdout.strip().endswith("No candidate qualifies: the defaults stay the paper's.")


def test_missing_rows_or_a_bad_file_are_one_line_and_exit_1(tmp_path):
    for path in (summary(tmp_path, RESULTS, datasets=("ifeval",)), tmp_path / "none.csv"):
        done = run(path)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "ablation_choice:" in done.stderr, done.stderr
    assert "for blendin-loop+endprobe on xstest" in run(summary(tmp_path, RESULTS, datasets=("ifeval",))).stderr
