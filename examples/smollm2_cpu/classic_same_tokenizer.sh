#!/usr/bin/env bash
# A same-tokenizer classic draft for SmolLM2-135M-Instruct: SmolLM2's own first 4 of 30 layers (+ its final norm and
# tied head), i.e. an early-exit copy of the base, as a plain HF LM (`--@classic_draft --modeling.draft_model_path`),
# benchmarked as it is, then distilled toward the full base for TIME_S seconds and benchmarked again (chain depth 3,
# 10 MT-bench questions, both turns, fp32). vLLM serves it (10 prompts) with `draft_model` (bench.serving, last command).
# Needs examples/smollm2_cpu/run.sh's outputs (output/smollm2/base, dataset_eagle3).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
C=output/smollm2/classic
LAYERS=${LAYERS:-4}
TIME_S=${TIME_S:-600}
if [ ! -f $C/init/config.json ]; then
  LAYERS=$LAYERS $PY - <<'PYEOF'
import os
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

n = int(os.environ["LAYERS"])
full = LlamaForCausalLM.from_pretrained("output/smollm2/base", dtype=torch.float32)
config = LlamaConfig.from_pretrained("output/smollm2/base", num_hidden_layers=n)
small = LlamaForCausalLM(config)
kept = {k: v for k, v in full.state_dict().items()
        if not k.startswith("model.layers.") or int(k.split(".")[2]) < n}
missing, unexpected = small.load_state_dict(kept, strict=False)
assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
small.save_pretrained("output/smollm2/classic/init")
AutoTokenizer.from_pretrained("output/smollm2/base").save_pretrained("output/smollm2/classic/init")
PYEOF
fi
P=(--@smollm2 --@classic_draft --modeling.draft_model_path $C/init --data.dataset_dir output/smollm2/dataset_eagle3)
BENCH=(--benchmark.humaneval None --benchmark.max_samples 10 --inference.depth 3 --inference.strategy chain)
if [ ! -f $C/before/model.safetensors ]; then  # one step at learning rate 1e-12: the early-exit copy as it is
  $PY -m specforge_het.train "${P[@]}" --training.output_dir $C/before --training.max_steps 1 \
    --training.learning_rate 1e-12 --training.warmup_steps 0 --training.eval_fraction 0
fi
$PY -m specforge_het.inference.benchmark "${P[@]}" "${BENCH[@]}" --inference.drafter_path $C/before \
  --benchmark.output_dir $C/benchmark_before
$PY -m specforge_het.train "${P[@]}" --training.output_dir $C/distilled --training.learning_rate 0.0002 \
  --training.time_budget_s "$TIME_S" --training.eval_steps 100 --training.save_steps 100 --training.eval_depth 3
$PY -m specforge_het.inference.benchmark "${P[@]}" "${BENCH[@]}" --inference.drafter_path $C/distilled \
  --benchmark.output_dir $C/benchmark_distilled
$PY -m specforge_het.bench.serving "${P[@]}" --inference.drafter_path $C/distilled --inference.depth 3 \
  --inference.num_prompts 10 --benchmark.serving_drafters "['$C/distilled']" --benchmark.output_dir $C/serving
