#!/usr/bin/env python
"""Print the ablation's tables in docs/results.md from a report's summary.csv.

`blendin eval report` writes summary.csv with a row per dataset and method; this picks the rows
the ablation compares, in its order, names the measuring-only rows by what they ran (a
`+endprobe` row is BlendIn without the ending trigger: `-end`), and prints one Markdown table
per dataset with the columns docs/results.md shows:

    python scripts/ablation_tables.py docs/results/ablation/summary.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

THRESHOLDS = ("0.2", "0.02", "0.005")  # the ending thresholds docs/results.md fixed in advance
ROWS = (
    "base",
    "guide",
    "nudging",
    "blendin-loop+endprobe",
    *(f"blendin-loop+end@{t}" for t in THRESHOLDS),
    "blendin+loop+endprobe",
    "blendin+loop+end@0.005",
    "blendin+loop+endprobe+fewshot",
    "blendin+loop+end+fewshot@0.005",
)


def row_name(method: str) -> str:
    name = method.replace("+endprobe", "-end")
    return f"{name} (the paper's)" if name == "blendin-loop-end" else name


def number(row: dict, key: str, form: str = ".3f") -> str:
    """A cell; "-" where the report has no value (no unsafe prompts among the items, say)."""
    return format(float(row[key]), form) if row.get(key) not in (None, "") else "-"


def interval(row: dict, key: str) -> str:
    if row.get(key) in (None, ""):
        return "-"
    return f"{number(row, key)} ({number(row, key + '_low', '.2f')}-{number(row, key + '_high', '.2f')})"


def share(row: dict, key: str) -> str:
    return number(row, key, ".0%")


def ending_cells(row: dict) -> list[str]:
    """How the answers end, what they cost: the columns every dataset's table has."""
    return [
        share(row, "length_share"),
        share(row, "loop_rate"),
        f"{float(row['tokens']):.0f}",
        share(row, "intervention_rate"),
    ]


COLUMNS = {
    "ifeval": (
        ["prompt loose", "prompt strict", "inst. loose", "inst. strict"],
        lambda r: [
            interval(r, "prompt_loose"),
            interval(r, "prompt_strict"),
            number(r, "instruction_loose"),
            number(r, "instruction_strict"),
        ],
    ),
    "xstest": (
        ["score (interval)", "complied, safe", "refused, unsafe"],
        lambda r: [interval(r, "score"), number(r, "complied_safe"), number(r, "refused_unsafe")],
    ),
    # No judge here: JustEval's score is its safety items' refusal rate (scoring.py), the rest
    # are only generated; how every answer ends is in the shared columns.
    "justeval": (["refused, safety items"], lambda r: [interval(r, "score")]),
}


def table(dataset: str, rows: dict[str, dict]) -> str:
    heads, cells = COLUMNS.get(dataset, ([], lambda r: []))
    lines = [
        "| " + " | ".join(["row", "n", *heads, "length", "loops", "tokens", "interventions"]) + " |",
        "|" + "---|" * (len(heads) + 6),
    ]
    for method in ROWS:
        if method in rows:
            r = rows[method]
            lines.append("| " + " | ".join([row_name(method), r["n"], *cells(r), *ending_cells(r)]) + " |")
    return "\n".join(lines)


def read_summary(path: Path, program: str) -> dict[str, dict[str, dict]]:
    """dataset -> method -> row of a report's summary.csv; one line and exit 1 if unreadable."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            found = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        sys.exit(f"{program}: {path}: cannot read it: {e}")
    by_dataset: dict[str, dict[str, dict]] = {}
    for row in found:
        by_dataset.setdefault(row.get("dataset", ""), {})[row.get("method", "")] = row
    return by_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="summary.csv of blendin eval report")
    args = parser.parse_args()
    by_dataset = read_summary(args.summary, "ablation_tables")
    try:
        for dataset, rows in by_dataset.items():
            print(f"{dataset}:\n\n{table(dataset, rows)}\n")
    except (KeyError, ValueError) as e:
        sys.exit(f"ablation_tables: {args.summary}: not a summary.csv of blendin eval report ({e})")


if __name__ == "__main__":
    main()
