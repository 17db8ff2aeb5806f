#!/usr/bin/env bash
# More data for the SmolLM2-135M EAGLE-3 recipe, then a fine-tune of the previous round's drafter on all of it.
# Round 2 (the default): 1,200 more prompts written by the base (seed 1, held out from MT-bench and HumanEval like the
# first 1,600), answered by the base → both sets (2,800 conversations) dumped → output/smollm2/eagle3 fine-tuned on
# them for 900 steps (modeling.init_from_drafter: every weight and the draft vocabulary start from it) →
# output/smollm2/b/eagle3_ft. Round 3: 1,600 more (seed 2) merged after round 2's dump (4,400 conversations) →
# round 2's drafter fine-tuned for 1,100 steps → output/smollm2/c/eagle3_ft (about 75 min on 2 AMX cores). Round 4:
# 1,200 prompts steered by configs/varied_prompts.yaml's openers (code, math, role-play, extraction, ...: of round 3's
# plain Magpie prompts 37 % begin "Can" and 29 % "I'm") merged after round 3's (5,600 conversations) → round 3's
# drafter fine-tuned for 550 steps → output/smollm2/d/eagle3_ft, benchmarked over the preset's tree and the best.
# Round 5: 1,500 more steered prompts (seed 4) merged after round 4's (7,100 conversations) → round 4's drafter
# fine-tuned for 650 steps → output/smollm2/e/eagle3_ft, benchmarked over the preset's tree, round 4's best shape and
# two near it.
# A step budget (not a time budget), so a paused job (SIGSTOP while something else needs the cores) loses nothing.
# Needs run.sh's outputs (round 3: round 2's too). Every stage is cached: rerunning resumes or reuses.
#
#   bash examples/smollm2_cpu/more_data.sh [round2|round3|round4|round5] [--section.key value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
P=(--@smollm2 --@eagle3 --@smollm2_eagle3)
ROUND=round2
case "${1:-}" in round2|round3|round4|round5) ROUND=$1; shift ;; esac
SYNTH=()
if [ "$ROUND" = round2 ]; then  # the published round-2 drafter's settings
  B=output/smollm2/b SEED=1 NUM=1200 BEFORE=output/smollm2/dataset_eagle3 INIT=output/smollm2/eagle3 STEPS=900
  BENCH=(--benchmark.output_dir $B/eagle3_ft/benchmark)
elif [ "$ROUND" = round3 ]; then
  B=output/smollm2/c SEED=2 NUM=1600 BEFORE=output/smollm2/b/dataset INIT=output/smollm2/b/eagle3_ft STEPS=1100
  # MT-bench in the CPU's best dtype over the shapes round 2's drafter did best with (docs/results)
  BENCH=(--benchmark.max_samples 20 --inference.dtype auto --benchmark.humaneval None
         --benchmark.shapes "['chain:3','tree:2:4:8','tree:3:8:24']" --benchmark.output_dir $B/eagle3_ft/benchmark_bf16)
elif [ "$ROUND" = round4 ]; then
  B=output/smollm2/d SEED=3 NUM=1200 BEFORE=output/smollm2/c/dataset INIT=output/smollm2/c/eagle3_ft STEPS=550
  SYNTH=(--@varied_prompts)
  # the preset's tree (4:4:12) beside the two best shapes of earlier rounds, in one run
  BENCH=(--benchmark.max_samples 20 --inference.dtype auto --benchmark.humaneval None
         --benchmark.shapes "['tree:4:4:12','tree:2:4:8','tree:3:8:24']"
         --benchmark.output_dir $B/eagle3_ft/benchmark_bf16)
else
  B=output/smollm2/e SEED=4 NUM=1500 BEFORE=output/smollm2/d/dataset INIT=output/smollm2/d/eagle3_ft STEPS=650
  SYNTH=(--@varied_prompts)
  BENCH=(--benchmark.max_samples 20 --inference.dtype auto --benchmark.humaneval None
         --benchmark.shapes "['tree:4:4:12','tree:2:4:8','tree:2:3:6','tree:3:4:12']"
         --benchmark.output_dir $B/eagle3_ft/benchmark_bf16)
fi
[ -f "$INIT/model.safetensors" ] || { echo "$INIT is missing: run the previous round first" >&2; exit 2; }
$PY -m specforge_het.synthesize "${P[@]}" ${SYNTH[@]+"${SYNTH[@]}"} --synth.out $B/prompts.jsonl --synth.seed $SEED --synth.num_prompts $NUM "$@"
# The base answers the new prompts; they are dumped, then merged after the previous round's dump (round 2: the same
# 2,800 conversations in the same order as dumping both sets at once, which is how its drafter's data was made).
$PY -m specforge_het.data_gen "${P[@]}" --data.conversations $B/prompts.jsonl \
  --data.regenerate_to $B/self_distilled.jsonl --data.dataset_dir $B/dataset_new "$@"
$PY -m specforge_het.data_gen "${P[@]}" --data.merge_from "['$BEFORE', '$B/dataset_new']" \
  --data.dataset_dir $B/dataset "$@"
$PY -m specforge_het.train "${P[@]}" --data.dataset_dir $B/dataset --training.output_dir $B/eagle3_ft \
  --modeling.init_from_drafter $INIT --training.max_steps $STEPS --training.time_budget_s 7200 \
  --training.learning_rate 0.0003 --training.warmup_steps 10 --training.eval_steps 300 --training.save_steps 150 "$@"
$PY -m specforge_het.inference.benchmark "${P[@]}" --inference.drafter_path $B/eagle3_ft "${BENCH[@]}" "$@"
