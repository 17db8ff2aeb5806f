#!/usr/bin/env bash
# One drafting family on SmolLM2-135M-Instruct at the EAGLE-3 recipe's budget, for the families table: run.sh's data
# (1,600 prompts written by the base, its own answers, the dump of base layers {1, 14, 26} and the last hidden
# state — EAGLE-2, DFlash and DSpark read from it too, so no family needs its own dump), the family's SmolLM2 preset
# (configs/smollm2/smollm2_FAMILY.yaml: ≤ 45 minutes of training, chain depth 4 / 12-node tree), then the MT-bench /
# HumanEval benchmark in the CPU's best dtype (`auto`: bf16 on AVX512-BF16 / AMX, fp32 on AVX2), base-only and
# speculative side by side. Needs run.sh's data stages (run first if output/smollm2/dataset_eagle3 is missing).
#
#   bash examples/smollm2_cpu/family.sh eagle2|dflash|dspark|peagle|eagle3 [--section.key value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
FAMILY=${1:?usage: family.sh eagle2|dflash|dspark|peagle|eagle3 [--section.key value ...]}
shift
[ -d output/smollm2/dataset_eagle3 ] || { echo "output/smollm2/dataset_eagle3 is missing: run examples/smollm2_cpu/run.sh first" >&2; exit 2; }
P=(--@smollm2 "--@$FAMILY" "--@smollm2_$FAMILY")
$PY -m specforge_het.train "${P[@]}" "$@"
$PY -m specforge_het.inference.benchmark "${P[@]}" --benchmark.max_samples 20 --inference.dtype auto \
  --benchmark.output_dir "output/smollm2/$FAMILY/benchmark_bf16" "$@"
