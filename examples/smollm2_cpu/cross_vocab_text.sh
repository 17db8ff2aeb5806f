#!/usr/bin/env bash
# Round two of the cross-tokenizer drafter (cross_vocab.sh's output): sequence-level distillation added — CE of the
# 3.8M draft LM on the base's self-distilled text in the draft's own 8k tokenization (algorithm.sequence_weight) —
# on top of the loss on the shared tokens, 300 steps from cross_vocab.sh's drafter; then the same held-out MT-bench
# decode drafting through the shared tokens (TLI) and through text (inference.proposer string), chain depth 3.
# Needs cross_vocab.sh's outputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
X=output/smollm2/xvocab
P=(--@smollm2 --@classic_draft --modeling.draft_model_path $X/init --data.dataset_dir output/smollm2/dataset_eagle3)
$PY -m specforge_het.train "${P[@]}" --training.output_dir $X/drafter_seq --modeling.init_from_drafter $X/drafter \
  --algorithm.sequence_weight 1.0 --training.learning_rate 0.001 --training.max_steps 300 --training.warmup_steps 10 \
  --training.eval_steps 100 --training.save_steps 100 --training.eval_depth 3 "$@"
for proposer in tree string; do
  $PY -m specforge_het.inference.benchmark "${P[@]}" --inference.drafter_path $X/drafter_seq \
    --inference.proposer $proposer --benchmark.output_dir $X/benchmark_seq_$proposer --inference.depth 3 \
    --inference.strategy chain --benchmark.max_samples 20 --benchmark.humaneval None "$@"
done
