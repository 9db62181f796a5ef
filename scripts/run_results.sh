#!/usr/bin/env bash
# The runs behind docs/results.md: the default pair, every method it can run (proxy tuning
# needs the guide's untuned counterpart, which has no PyPI package), greedy, 100 items of
# each dataset (the paper's seeded subset, seed 609), at most 256 new tokens.
# Resumable: run it again after an interruption and it continues where it stopped.
# Usage: scripts/run_results.sh [OUT_DIR] [extra blendin eval options, e.g. -t 1]
set -euo pipefail
DATA_DIR=${BLENDIN_DATA_DIR:-../shared/data}
OUT=${1:-runs}
shift || true
for dataset in gsm8k ifeval xstest arc_easy truthfulqa; do
    resume=""
    [ -f "$OUT/$dataset/config.json" ] && resume="--resume"
    blendin eval --dataset "$dataset" --limit 100 --methods base,guide,nudging,blendin,ensemble \
        --max-tokens 256 --data-dir "$DATA_DIR" --out "$OUT/$dataset" $resume "$@"
done
blendin eval report "$OUT"/gsm8k "$OUT"/ifeval "$OUT"/xstest "$OUT"/arc_easy "$OUT"/truthfulqa --out docs/results
