#!/usr/bin/env python
"""Apply docs/results.md's rule for the defaults, fixed before the 300 IFEval items were in, to a
report's summary.csv of the ablation, and print each candidate's standing and the choice:

    python scripts/ablation_choice.py docs/results/ablation/summary.csv

The rule: a candidate qualifies when its IFEval prompt-level loose score is at least the
guide's, fewer of its IFEval answers run to the length limit than the paper's BlendIn's, and
its XSTest score is at most one item below the paper's BlendIn's. The default is the qualifying
candidate with the highest prompt-level loose score, ties going to the higher instruction-level
loose score, then to fewer length endings, then to fewer additions. If none qualifies, the
defaults stay the paper's. Exit 0 with a choice (or none qualifying), 1 if rows are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablation_tables import read_summary

from blendin_local.errors import BlendinError
from blendin_local.eval.variants import parse_variant

PAPERS = "blendin-loop+endprobe"
# The candidates the rule names, each with how many additions it makes to the paper's BlendIn.
CANDIDATES = {
    PAPERS: 0,
    "blendin-loop+end@0.2": 1,
    "blendin-loop+end@0.02": 1,
    "blendin-loop+end@0.005": 1,
    "blendin+loop+endprobe": 1,
    "blendin+loop+end@0.005": 2,
    "blendin+loop+end+fewshot@0.005": 3,
}
FULL_IFEVAL = 300
TOLERANCE = 1e-9  # the report rounds to 4 places: scores of equal item counts compare equal


class MissingRows(Exception):
    pass


def value(rows: dict[str, dict], dataset: str, method: str, key: str) -> float:
    row = rows.get(dataset, {}).get(method)
    if row is None or row.get(key) in (None, ""):
        raise MissingRows(f"no {key} for {method} on {dataset}")
    return float(row[key])


def standing(rows: dict[str, dict], candidate: str) -> tuple[bool, str]:
    """Whether the candidate qualifies, and the first condition it fails."""
    if value(rows, "ifeval", candidate, "prompt_loose") < value(rows, "ifeval", "guide", "prompt_loose") - TOLERANCE:
        return False, "prompt loose below the guide's"
    if value(rows, "ifeval", candidate, "length_share") >= value(rows, "ifeval", PAPERS, "length_share") - TOLERANCE:
        return False, "not fewer length endings than the paper's BlendIn"
    one_item = 1 / value(rows, "xstest", PAPERS, "n")
    if value(rows, "xstest", candidate, "score") < value(rows, "xstest", PAPERS, "score") - one_item - TOLERANCE:
        return False, "XSTest more than one item below the paper's BlendIn"
    return True, "qualifies"


def preference(rows: dict[str, dict], candidate: str) -> tuple[float, float, float, int]:
    """Larger is preferred: prompt loose, instruction loose, fewer length endings, fewer additions."""
    return (
        round(value(rows, "ifeval", candidate, "prompt_loose"), 6),
        round(value(rows, "ifeval", candidate, "instruction_loose"), 6),
        -round(value(rows, "ifeval", candidate, "length_share"), 6),
        -CANDIDATES[candidate],
    )


def settings_of(candidate: str) -> dict:
    """The settings a candidate row ran with: its switches, and the ending threshold after @."""
    name, _, threshold = candidate.partition("@")
    _, overrides = parse_variant(name.replace("+endprobe", "-end"))  # measuring only: the trigger off
    if threshold:
        overrides["end_threshold"] = float(threshold)
    return overrides


def choose(rows: dict[str, dict]) -> tuple[list[tuple[str, bool, str]], str | None]:
    standings = [(c, *standing(rows, c)) for c in CANDIDATES]
    qualifying = [c for c, ok, _ in standings if ok]
    return standings, max(qualifying, key=lambda c: preference(rows, c)) if qualifying else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="summary.csv of blendin eval report over the ablation's folders")
    args = parser.parse_args()
    rows = read_summary(args.summary, "ablation_choice")
    try:
        standings, chosen = choose(rows)
        n = int(value(rows, "ifeval", "guide", "n"))
        lines = ["| candidate | prompt loose | inst. loose | length | XSTest | standing |", "|---|---|---|---|---|---|"]
        for candidate, _, why in standings:
            cells = [
                f"{value(rows, 'ifeval', candidate, 'prompt_loose'):.3f}",
                f"{value(rows, 'ifeval', candidate, 'instruction_loose'):.3f}",
                f"{value(rows, 'ifeval', candidate, 'length_share'):.0%}",
                f"{value(rows, 'xstest', candidate, 'score'):.3f}",
            ]
            lines.append(f"| {candidate} | {' | '.join(cells)} | {why} |")
    except MissingRows as e:
        sys.exit(f"ablation_choice: {args.summary}: {e}: the rule needs every candidate on IFEval and XSTest")
    except (ValueError, BlendinError) as e:
        sys.exit(f"ablation_choice: {args.summary}: not a summary.csv of the ablation ({e})")
    if n < FULL_IFEVAL:
        print(f"(a preview: the rule is for {FULL_IFEVAL} IFEval items, these rows have {n})\n")
    print("\n".join(lines) + "\n")
    if chosen is None:
        print("No candidate qualifies: the defaults stay the paper's.")
    else:
        changes = ", ".join(f"{k}={v}" for k, v in sorted(settings_of(chosen).items()))
        print(f"Default: {chosen} ({changes}).")


if __name__ == "__main__":
    main()
