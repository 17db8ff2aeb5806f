#!/usr/bin/env bash
# Llama-3.1-8B-Instruct + EAGLE-3 on one 8-GPU node (hub access and a HF token for the gated base assumed).
#   pip install -e ".[all]" (after your CUDA torch), then: bash examples/llama31_8b_gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
P=(--@examples/llama31_8b_gpu/llama31_8b_eagle3.yaml)
# self-distillation then the dump, in one process (regeneration is single-process; split big jobs with
# --data.ds_range and merge them with --data.merge_from)
specforge-het data-gen "${P[@]}" "$@"
accelerate launch --num_processes 8 -m specforge_het.train "${P[@]}" "$@"
specforge-het benchmark "${P[@]}" "$@"
specforge-het export "${P[@]}" --export.to vllm --export.out output/llama31_8b/export_vllm "$@"
specforge-het export "${P[@]}" --export.to sglang --export.out output/llama31_8b/export_sglang "$@"
cat output/llama31_8b/export_vllm/README.md output/llama31_8b/export_sglang/README.md   # the launch commands
