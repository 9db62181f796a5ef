"""The benchmark (scripts/bench.py) runs end to end in its smoke mode: structure only.

Nothing here looks at a timing: the numbers of a shared CI machine mean nothing, and the
benchmark's figures live in docs/performance.md with the commands that produced them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.models  # the benchmark runs the default pair

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("base", "guide", "nudging", "blendin", "ensemble", "reference")
PARTS = ("base forward", "guide forward", "bridge + blend math", "tokenization/sync", "the rest")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    # The benchmark's prompts come from the evaluation data, as in the eval tests that skip without it.
    data = Path(os.environ.get("BLENDIN_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not data.is_dir():
        pytest.skip(f"benchmark data not found at {data}")
    out = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench.py"),
        "--smoke",
        "-t",
        "1",
        "--out",
        str(out / "bench.json"),
        "--md",
        str(out / "bench.md"),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_every_method_ran_on_every_prompt(smoke):
    results, _ = smoke
    prompts = results["config"]["prompt_ids"]
    assert len(prompts) == 2 and results["config"]["threads"] == 1
    assert {(r["method"], r["prompt"]) for r in results["runs"]} == {(m, p) for m in METHODS for p in prompts}
    for r in results["runs"]:
        assert isinstance(r["text"], str) and 0 < r["n_tokens"] <= results["config"]["max_tokens"]
        assert len(r["gaps_s"]) == r["n_tokens"] - 1 and r["ttft_s"] is not None


def test_summary_has_every_figure_the_issue_asks_for(smoke):
    results, md = smoke
    for method in METHODS:
        s = results["summary"][method]
        for key in (
            "tokens_per_s_median",
            "tokens_per_s_p10",
            "tokens_per_s_p90",
            "latency_p50_ms",
            "latency_p95_ms",
            "ttft_median_ms",
            "intervention_rate",
            "engine_overhead_share",
        ):
            assert isinstance(s[key], float), (method, key)
        assert set(PARTS) <= set(s["parts_s"])
    assert results["summary"]["base"]["intervention_rate"] == 0.0
    assert results["summary"]["ensemble"]["intervention_rate"] == 1.0
    memory = results["memory"]
    assert memory["peak_rss"] > 0 and memory["files_plus_kv"] > 0
    assert list(memory["phases"]) == ["imports", "base model", "guide model", "bridge", "generation"]
    assert memory["phases"]["guide model"]["VmRSS"] > memory["phases"]["imports"]["VmRSS"]
    assert {"load_s", "bridge_scratch_s"} <= set(results["cold"])
    assert results["micro"]["per_intervention_ms"] > 0
    assert len(results["targets"]) == 7 and all(isinstance(t["met"], bool) for t in results["targets"])
    assert "| target | goal | measured | met |" in md


def test_compare_finds_identical_texts(smoke, tmp_path):
    results, _ = smoke
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    same = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--compare", str(path), str(path)],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0 and "0 differ" in same.stdout


def test_thread_split_tries_every_split(smoke):
    results, md = smoke
    split = results["thread_split"]
    configs = {(r["method"], r["base_threads"], r["guide_threads"]) for r in split["rows"]}
    assert configs == {("base", 1, None), ("base", 2, None)} | {("blendin", b, g) for b in (1, 2) for g in (1, 2)}
    base_at_1 = next(r for r in split["rows"] if r["method"] == "base" and r["base_threads"] == 1)
    assert base_at_1["over_base_1"] == 1.0
    assert "### Thread split between the two models" in md


def test_speculative_mode_runs_every_k_and_fills_the_cost_model(tmp_path):
    data = Path(os.environ.get("BLENDIN_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not data.is_dir():
        pytest.skip(f"benchmark data not found at {data}")
    out = tmp_path / "speculative.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--speculative", "2,4"]
    cmd += ["--speculative-threads", "1/1", "--out", str(out), "--md", str(tmp_path / "speculative.md")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    results = json.loads(out.read_text())
    (setup,) = results["setups"]
    assert set(setup["summary"]) == {"base", "blendin", "blendin+spec2", "blendin+spec4"}
    assert setup["costs"]["c_g"] > 0 and {1, 3, 5} <= {int(n) for n in setup["costs"]["c_b"]}
    for k in (2, 4):
        row = setup["summary"][f"blendin+spec{k}"]
        assert 0.0 <= row["acceptance"] <= 1.0 and row["tokens_per_round"] >= 1.0
        assert row["predicted_tokens_per_s"] > 0 and len(row["projected_speedup"]) == 4
        assert row["same_text_as_sequential"] in (0, 1, 2)
    assert "| blendin+spec4 |" in (tmp_path / "speculative.md").read_text()
