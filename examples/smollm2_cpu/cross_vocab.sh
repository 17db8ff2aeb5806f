#!/usr/bin/env bash
# A drafter with its own tokenizer for SmolLM2-135M-Instruct, made here: a 3.8M-parameter Llama with an 8k-token BPE
# trained on the base's self-distilled answers, distilled toward the base on the token-level intersection
# (--@classic_draft with modeling.draft_model_path holding its own tokenizer), then decoded beside the base on
# held-out MT-bench and served by vLLM's CPU build (draft_model + use_heterogeneous_vocab).
# Needs examples/smollm2_cpu/run.sh's outputs (output/smollm2/base, self_distilled.jsonl, dataset_eagle3).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
X=output/smollm2/xvocab
$PY - <<'PYEOF'
import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specforge_het.demo_base import train_tokenizer

out = Path("output/smollm2/xvocab/init")
if not (out / "config.json").is_file():
    texts = [m["content"] for line in open("output/smollm2/self_distilled.jsonl") for m in json.loads(line)["messages"]]
    tok = train_tokenizer(texts, vocab_size=8192)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                                 eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.eos_token_id, tie_word_embeddings=True)).save_pretrained(out)
    tok.save_pretrained(out)
PYEOF
P=(--@smollm2 --@classic_draft --modeling.draft_model_path $X/init --data.dataset_dir output/smollm2/dataset_eagle3)
$PY -m specforge_het.train "${P[@]}" --training.output_dir $X/drafter --training.learning_rate 0.002 \
  --training.num_train_epochs 2 --training.time_budget_s 900 --training.eval_steps 100 --training.save_steps 100 \
  --training.eval_depth 3 "$@"
$PY -m specforge_het.inference.benchmark "${P[@]}" --inference.drafter_path $X/drafter \
  --benchmark.output_dir $X/benchmark_d3 --inference.depth 3 --inference.strategy chain --benchmark.max_samples 20 \
  --benchmark.humaneval None "$@"
$PY -m specforge_het.bench.serving "${P[@]}" --inference.drafter_path $X/drafter --inference.depth 3 \
  --inference.num_prompts 20 --benchmark.serving_drafters "['$X/drafter']" --benchmark.output_dir $X/serving "$@"
