#!/usr/bin/env bash
# P-EAGLE on SmolLM2-135M-Instruct at the EAGLE-3 recipe's budget: run.sh's data (1,600 prompts written by the base,
# its own answers, the dump of base layers {1, 14, 26} — P-EAGLE reads the same three), a 2-layer P-EAGLE drafter
# trained over 5 parallel positions for run.sh's 6 epochs (≤ 45 minutes), then the MT-bench / HumanEval benchmark
# in fp32 and in the CPU's best dtype (`auto`: bf16 on AVX512-BF16 / AMX, fp32 on AVX2), and vLLM's CPU build serving
# the export (method eagle3 + parallel_drafting) beside our decoder.
# Needs run.sh's data stages (run first if output/smollm2/dataset_eagle3 is missing). Every stage is cached.
#
#   bash examples/smollm2_cpu/peagle.sh [--section.key value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
D=(--@smollm2 --@eagle3 --@smollm2_eagle3)  # the data stages, exactly as run.sh runs them
if [ ! -d output/smollm2/dataset_eagle3 ]; then
  $PY -m specforge_het.convert "${D[@]}" "$@"
  $PY -m specforge_het.synthesize "${D[@]}" "$@"
  $PY -m specforge_het.data_gen "${D[@]}" "$@"
fi
P=(--@smollm2 --@peagle --@smollm2_peagle)
$PY -m specforge_het.train "${P[@]}" "$@"
$PY -m specforge_het.inference.benchmark "${P[@]}" --benchmark.max_samples 20 --inference.dtype float32 "$@"
$PY -m specforge_het.bench.serving "${P[@]}" --inference.num_prompts 10 \
  --benchmark.output_dir output/smollm2/peagle/serving "$@"
$PY -m specforge_het.inference.benchmark "${P[@]}" --benchmark.max_samples 20 --inference.dtype auto \
  --benchmark.output_dir output/smollm2/peagle/benchmark_bf16 "$@"
