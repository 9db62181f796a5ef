#!/usr/bin/env bash
# The ablation behind docs/results.md's "Answers that end and don't loop": the default pair,
# greedy, the paper's methods and BlendIn with each addition of issue 14 switched on alone and
# together (eval/variants.py names them: +loop the loop trigger, +fewshot the few-shot base
# prompt, +endprobe the ending trigger measuring only). A +endprobe row is BlendIn without the
# ending trigger, and scripts/ending_sweep.py derives from it the row of every ending threshold
# (eval/ending_sweep.py says why that is exact), so three BlendIn rows give all of them.
# IFEval: 300 items at 1024 new tokens (its longest length instructions need several hundred
# words); XSTest and JustEval: 100 items each at 256 and 512.
# Items go one at a time through every row, so an interrupted run has every row at the same
# depth. Resumable: run it again and it continues where it stopped (kill -9 loses at most the
# samples in flight). The run folders live in the repository (docs/results/ablation/<dataset>)
# and are committed as they grow: the run spans sessions and machines, and a folder outside the
# checkout was lost with its machine once (81 IFEval items).
# Usage: scripts/run_ablation.sh [OUT_DIR] [extra blendin eval options, e.g. -t 2 --jobs 2: on 2
# cores, two single-threaded pairs, the fastest split measured (docs/results.md, "--jobs")]
set -euo pipefail
DATA_DIR=${BLENDIN_DATA_DIR:-../shared/data}
OUT=${1:-docs/results/ablation}
shift || true
ROWS=base,guide,nudging,blendin-loop+endprobe,blendin+loop+endprobe,blendin+loop+endprobe+fewshot
for spec in ifeval:300:1024 xstest:100:256 justeval:100:512; do
    IFS=: read -r dataset limit max_tokens <<<"$spec"
    resume=""
    [ -f "$OUT/$dataset/config.json" ] && resume="--resume"
    blendin eval --dataset "$dataset" --limit "$limit" --methods "$ROWS" --max-tokens "$max_tokens" \
        --data-dir "$DATA_DIR" --out "$OUT/$dataset" $resume "$@"
done
# the ending thresholds of the candidates that scripts/ablation_choice.py names
python scripts/ending_sweep.py "$OUT"/ifeval "$OUT"/xstest "$OUT"/justeval --thresholds 0.005,0.02,0.2 --data-dir "$DATA_DIR"
blendin eval report "$OUT"/ifeval "$OUT"/xstest "$OUT"/justeval --out "$OUT"
python scripts/ablation_tables.py "$OUT"/summary.csv
python scripts/ablation_choice.py "$OUT"/summary.csv
