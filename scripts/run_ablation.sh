#!/usr/bin/env bash
# The ablation behind docs/results.md's "Answers that end and don't loop": the default pair,
# greedy, the paper's methods and BlendIn with each addition of issue 14 switched on alone and
# together (eval/variants.py names them: +loop the loop trigger, +end the ending trigger,
# +fewshot the few-shot base prompt). IFEval: 300 items at 1024 new tokens (its longest length
# instructions need several hundred words); JustEval and XSTest: 100 items each at 512 and 256.
# Items go one at a time through every row, so an interrupted run has every row at the same
# depth. Resumable: run it again and it continues where it stopped (kill -9 loses at most the
# samples in flight).
# Usage: scripts/run_ablation.sh [OUT_DIR] [extra blendin eval options, e.g. -t 1]
set -euo pipefail
DATA_DIR=${BLENDIN_DATA_DIR:-../shared/data}
OUT=${1:-runs/ablation}
shift || true
ROWS=base,guide,nudging,blendin-loop-end,blendin+loop-end,blendin-loop+end,blendin+loop+end,blendin+loop+end+fewshot
for spec in ifeval:300:1024 xstest:100:256 justeval:100:512; do
    IFS=: read -r dataset limit max_tokens <<<"$spec"
    resume=""
    [ -f "$OUT/$dataset/config.json" ] && resume="--resume"
    blendin eval --dataset "$dataset" --limit "$limit" --methods "$ROWS" --max-tokens "$max_tokens" \
        --data-dir "$DATA_DIR" --out "$OUT/$dataset" $resume "$@"
done
blendin eval report "$OUT"/ifeval "$OUT"/xstest "$OUT"/justeval --out docs/results/ablation
