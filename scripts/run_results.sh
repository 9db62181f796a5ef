#!/usr/bin/env bash
# The runs behind docs/results.md: the default pair, every method it can run (proxy tuning
# needs the guide's untuned counterpart, which has no PyPI package), greedy, 100 items of
# each dataset (the paper's seeded subset, seed 609). At most 256 new tokens where the answer
# is the whole text (gsm8k, ifeval); 64 where it is decided in the first words (the option of
# arc_easy and truthfulqa, complying or refusing on xstest), to fit the runs into one session.
# Resumable: run it again after an interruption and it continues where it stopped.
# Usage: scripts/run_results.sh [OUT_DIR] [extra blendin eval options, e.g. -t 1]
set -euo pipefail
DATA_DIR=${BLENDIN_DATA_DIR:-../shared/data}
OUT=${1:-runs}
shift || true
for spec in gsm8k:256 ifeval:256 xstest:64 arc_easy:64 truthfulqa:64; do
    dataset=${spec%%:*} max_tokens=${spec##*:}
    resume=""
    [ -f "$OUT/$dataset/config.json" ] && resume="--resume"
    blendin eval --dataset "$dataset" --limit 100 --methods base,guide,nudging,blendin,ensemble \
        --max-tokens "$max_tokens" --data-dir "$DATA_DIR" --out "$OUT/$dataset" $resume "$@"
done
blendin eval report "$OUT"/gsm8k "$OUT"/ifeval "$OUT"/xstest "$OUT"/arc_easy "$OUT"/truthfulqa --out docs/results
