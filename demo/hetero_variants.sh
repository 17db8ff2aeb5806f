#!/usr/bin/env bash
# Heterogeneous drafters on the demo base, same training budget each: same family (baseline), another family
# (Qwen3), half width, reduced vocabulary. Needs the demo dataset (run demo/run_pipeline.sh first).
# Prints a τ table; extra arguments go to every train and inference call.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
VARIANTS=${VARIANTS:-"demo_same_family demo_draft_qwen3 demo_half_width demo_reduced_vocab"}
dirs=()
for v in $VARIANTS; do
  $PY -m specforge_het.train --@demo --@eagle2 --@"$v" "$@"
  $PY -m specforge_het.inference --@demo --@eagle2 --@"$v" "$@"
  dirs+=("$($PY -c "from specforge_het.config.cli import resolve_config; print(resolve_config(['--@demo', '--@eagle2', '--@$v'])[0].inference.output_dir)")")
done
$PY -m specforge_het.bench.variants --bench.reports "$(IFS=,; echo "${dirs[*]}")"
