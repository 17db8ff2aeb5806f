#!/usr/bin/env bash
# The main job on the embedded default: build the demo base if missing → data_gen → train → inference → export.
# Each stage is its own entry point reading the same presets; every stage writes resolved_config.json beside its outputs.
# Extra arguments are passed to every stage, e.g.  bash demo/run_pipeline.sh --training.max_steps 50
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
$PY -m specforge_het.demo_base --@demo "$@"
$PY -m specforge_het.data_gen --@demo --@eagle2 "$@"
$PY -m specforge_het.train --@demo --@eagle2 "$@"
$PY -m specforge_het.inference --@demo --@eagle2 "$@"
$PY -m specforge_het.export --@demo --@eagle2 "$@"
