#!/usr/bin/env python
"""How often each method opens its answer the way the guide alone does, per dataset.

A style measure for docs/results.md where scores sit near chance: it shows whose voice an answer
is in (the aligned guide's or the pre-trained base's) without any judge.

    python scripts/opening_agreement.py runs/gsm8k runs/ifeval runs/xstest runs/arc_easy runs/truthfulqa
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("base", "nudging", "blendin", "ensemble")


def opening(text: str, words: int) -> tuple[str, ...]:
    return tuple(text.split()[:words])


def agreement(run_dir: Path, method: str, words: int) -> float | None:
    def outputs(name: str) -> dict[str, str]:
        path = run_dir / f"{name}.jsonl"
        if not path.exists():
            return {}
        rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return {r["id"]: r["output"] for r in rows}

    guide, other = outputs("guide"), outputs(method)
    shared = [i for i in other if i in guide and opening(guide[i], words)]
    if not shared:
        return None
    return sum(opening(other[i], words) == opening(guide[i], words) for i in shared) / len(shared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--words", type=int, default=3, help="words of the opening compared (default 3)")
    args = ap.parse_args()
    print("| dataset | " + " | ".join(METHODS) + " |")
    print("|---|" + "---:|" * len(METHODS))
    for run in args.runs:
        cells = [agreement(run, m, args.words) for m in METHODS]
        print(f"| {run.name} | " + " | ".join("-" if c is None else f"{100 * c:.0f}%" for c in cells) + " |")


if __name__ == "__main__":
    main()
