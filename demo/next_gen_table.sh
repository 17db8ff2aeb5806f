#!/usr/bin/env bash
# The next-generation drafter table on the demo base (issue 18): EAGLE-2 (forward KL and TV, the best loss of the
# menu), EAGLE-3 (TTT 5), EAGLE-3.1 (fc_norm + norm_output), P-EAGLE (2 layers, 7 parallel positions), DFlash and
# DSpark (B = 8), 150 training steps each.
# A drafter already trained (model.safetensors present) is reused; then every row is evaluated back to back, one
# inference run per row (chain and tree, greedy, lossless check), and bench.variants writes one table with its
# provenance to $TABLE.md and $TABLE.json (docs/results/demo_next_gen by default; docs/algorithms.md includes it).
# Run it alone on the machine: the speed columns are only comparable when nothing else shares the cores.
# Needs the demo base and dataset (demo/run_pipeline.sh); the EAGLE-3 dataset (aux layers) is made here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
OUT=${OUT:-output/demo/next_gen}
STEPS=${STEPS:-150}
TABLE=${TABLE:-docs/results/demo_next_gen}
E3="--@eagle3 --@demo_eagle3 --algorithm.ttt_length 5"
BLOCK="--data.dataset_dir output/demo/dataset_eagle3"
declare -A ROWS=(
  [eagle2_fkl]="--@eagle2 --algorithm.loss forward_kl"
  [eagle2_tv]="--@eagle2 --algorithm.loss tv"
  [eagle3]="$E3"
  [eagle3_1]="$E3 --modeling.fc_norm true --modeling.norm_output true"
  [peagle]="--@peagle $BLOCK --algorithm.parallel_depth 7"
  [dflash]="--@dflash $BLOCK"
  [dspark]="--@dspark $BLOCK"
)
ORDER=${ORDER:-"eagle2_fkl eagle2_tv eagle3 eagle3_1 peagle dflash dspark"}
dirs=()
if [ ! -f output/demo/dataset_eagle3/manifest.json ]; then
  $PY -m specforge_het.data_gen --@demo --@eagle3 --@demo_eagle3
fi
for row in $ORDER; do
  drafter="$OUT/$row"
  # shellcheck disable=SC2086  # the row's flags are meant to split
  if [ ! -f "$drafter/model.safetensors" ]; then
    $PY -m specforge_het.train --@demo ${ROWS[$row]} --training.max_steps "$STEPS" --training.output_dir "$drafter"
  fi
done
for row in $ORDER; do
  # shellcheck disable=SC2086
  $PY -m specforge_het.inference --@demo --inference.drafter_path "$OUT/$row" --inference.strategy both \
    --inference.depth 7 --inference.top_k 4 --inference.total_tokens 16 --inference.num_prompts 10 \
    --inference.max_new_tokens 64 --inference.prompts output/demo/eval_prompts.jsonl \
    --inference.output_dir "$OUT/inf_$row" "$@"
  dirs+=("$OUT/inf_$row")
done
$PY -m specforge_het.bench.variants --bench.reports "$(IFS=,; echo "${dirs[*]}")" --bench.out "$TABLE"
