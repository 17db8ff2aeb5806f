#!/usr/bin/env bash
# The drafters bench.serving puts in front of the real engines, on the demo base (run demo/run_pipeline.sh first for
# the EAGLE-2 drafter): EAGLE-3 full vocabulary, reduced vocabulary, half width — same budget each — then the table.
# Extra arguments go to every call.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
$PY -m specforge_het.data_gen --@demo --@eagle3 --@demo_eagle3 "$@"
for v in demo_eagle3 demo_eagle3_reduced_vocab demo_eagle3_half_width; do
  $PY -m specforge_het.train --@demo --@eagle3 --@"$v" "$@"
done
$PY -m specforge_het.serving.env     # the vLLM + SGLang environment (built once per machine, ~4 minutes)
$PY -m specforge_het.bench.serving --@demo "$@"
