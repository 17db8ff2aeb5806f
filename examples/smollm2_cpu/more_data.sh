#!/usr/bin/env bash
# Round two of the SmolLM2-135M EAGLE-3 recipe: more data, then a fine-tune of run.sh's drafter on all of it.
# 1,200 more prompts written by the base (seed 1, held out from MT-bench and HumanEval like the first 1,600), answered
# by the base → both sets (2,800 conversations) dumped → output/smollm2/eagle3 fine-tuned on them for 900 steps
# (modeling.init_from_drafter: every weight and the draft vocabulary start from it) → output/smollm2/b/eagle3_ft.
# A step budget (not a time budget), so a paused job (SIGSTOP while something else needs the cores) loses nothing.
# Needs run.sh's outputs. Every stage is cached: rerunning resumes or reuses.
#
#   bash examples/smollm2_cpu/more_data.sh [--section.key value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
P=(--@smollm2 --@eagle3 --@smollm2_eagle3)
B=output/smollm2/b
$PY -m specforge_het.synthesize "${P[@]}" --synth.out $B/prompts.jsonl --synth.seed 1 --synth.num_prompts 1200 "$@"
# The base answers the new prompts; they are dumped, then merged after run.sh's dump (the same 2,800 conversations
# in the same order as dumping both sets at once, which is how the published drafter's data was made).
$PY -m specforge_het.data_gen "${P[@]}" --data.conversations $B/prompts.jsonl \
  --data.regenerate_to $B/self_distilled.jsonl --data.dataset_dir $B/dataset_new "$@"
$PY -m specforge_het.data_gen "${P[@]}" --data.merge_from "['output/smollm2/dataset_eagle3', '$B/dataset_new']" \
  --data.dataset_dir $B/dataset "$@"
$PY -m specforge_het.train "${P[@]}" --data.dataset_dir $B/dataset --training.output_dir $B/eagle3_ft \
  --modeling.init_from_drafter output/smollm2/eagle3 --training.max_steps 900 --training.time_budget_s 7200 \
  --training.learning_rate 0.0003 --training.warmup_steps 10 --training.eval_steps 300 --training.save_steps 150 "$@"
$PY -m specforge_het.inference.benchmark "${P[@]}" --inference.drafter_path $B/eagle3_ft \
  --benchmark.output_dir $B/eagle3_ft/benchmark "$@"
