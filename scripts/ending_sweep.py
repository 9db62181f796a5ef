#!/usr/bin/env python
"""Write the rows of every ending threshold into run folders, derived from their `+endprobe` rows.

A `+endprobe` row ran BlendIn with the ending trigger measuring only; eval/ending_sweep.py says
why the answer of any threshold is that row's answer cut at its first end check that reaches the
threshold. For each run folder and threshold this writes `<row with +end>@<t>.jsonl` next to the
probe row (replaced whole, so it can be run again as the probe rows grow), re-scored offline, for
`blendin eval report` to show beside the rows that ran.

    python scripts/ending_sweep.py runs/ablation/ifeval runs/ablation/xstest \\
        --thresholds 0.05,0.1,0.2,0.3,0.5 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from blendin_local.errors import BlendinError  # noqa: E402
from blendin_local.eval.datasets import load_dataset, resolve_data_dir  # noqa: E402
from blendin_local.eval.ending_sweep import derive_rows, is_probe_row  # noqa: E402
from blendin_local.eval.record_fields import ProbeRecord, check_records  # noqa: E402
from blendin_local.eval.runs import read_run  # noqa: E402
from blendin_local.file_replace import replace_file  # noqa: E402


def thresholds(text: str) -> list[float]:
    values = [float(t) for t in text.split(",") if t.strip()]
    if not values or not all(0.0 < t <= 1.0 for t in values):
        raise argparse.ArgumentTypeError("thresholds are numbers in (0, 1], separated by commas")
    return values


def write_row(folder: Path, name: str, records: list[dict]) -> None:
    # ASCII escapes: a record read back may hold a lone surrogate, which UTF-8 cannot encode
    try:
        replace_file(folder / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    except OSError as e:
        raise BlendinError(f"{folder / name}.jsonl: cannot write it: {e.strerror or e}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--thresholds", type=thresholds, default=thresholds("0.05,0.1,0.2,0.3,0.5"))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    try:
        data_dir = resolve_data_dir(args.data_dir)
        for folder in args.run_dirs:
            config, rows = read_run(folder)
            probes = {name: records for name, records in rows.items() if is_probe_row(name)}
            for name, records in probes.items():
                check_records(str(config.get("dataset")), folder / f"{name}.jsonl", records, ProbeRecord)
            dataset = config.get("dataset")
            if not isinstance(dataset, str):
                raise BlendinError(f"{folder}/config.json: names no dataset")
            items = {item.id: item for item in load_dataset(dataset, data_dir)}
            for name, records in derive_rows(probes, items, args.thresholds).items():
                write_row(folder, name, records)
                print(f"{folder}: {name}: {len(records)} answers", file=sys.stderr)
    except BlendinError as e:
        sys.exit(f"ending_sweep: {e}")


if __name__ == "__main__":
    main()
