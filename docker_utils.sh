#!/usr/bin/env bash
# Docker helpers. Usage: bash docker_utils.sh [--dry-run] build|run|demo|test|shell [cpu|cuda|sglang] [command ...]
#   build KIND         build docker/Dockerfile{.cpu,,.sglang} as specforge_het:KIND
#   run KIND CMD...    run CMD in the image: GPUs (cuda/sglang), ./output and the HF cache mounted, HF_TOKEN
#                      passed through from your environment (never written into an image), port 30000 for sglang
#   demo | test        the README's main job / tests in the CPU image
#   shell KIND         an interactive shell in the image
# --dry-run (or DRY_RUN=1) prints the docker commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")"
DRY_RUN=${DRY_RUN:-0}
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
ACTION=${1:-}; shift || true
KIND=cpu
case "${1:-}" in cpu|cuda|sglang) KIND=$1; shift ;; esac
IMAGE=${SPECFORGE_HET_IMAGE:-specforge_het:$KIND}
case "$KIND" in
  cpu) DOCKERFILE=docker/Dockerfile.cpu ;;
  cuda) DOCKERFILE=docker/Dockerfile ;;
  sglang) DOCKERFILE=docker/Dockerfile.sglang ;;
esac
HF_CACHE=${HF_HOME:-$HOME/.cache/huggingface}

do_cmd() {
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

run_args() {
  local args=(docker run --rm -v "$PWD/output:/workspace/specforge_het/output" -v "$HF_CACHE:/root/.cache/huggingface"
              -e HF_TOKEN -e HF_HUB_OFFLINE)
  if [ -t 0 ] && [ -t 1 ]; then args+=(-it); fi
  if [ "$KIND" != cpu ]; then args+=(--gpus all --ipc=host --shm-size 16g); fi
  if [ "$KIND" = sglang ]; then args+=(-p 30000:30000); fi
  printf '%s\n' "${args[@]}"
}

mapfile -t RUN < <(run_args)
case "$ACTION" in
  build) do_cmd docker build -f "$DOCKERFILE" -t "$IMAGE" . ;;
  run)   [ $# -gt 0 ] || { echo "docker_utils.sh run KIND needs a command" >&2; exit 2; }
         do_cmd "${RUN[@]}" "$IMAGE" "$@" ;;
  demo)  do_cmd "${RUN[@]}" "$IMAGE" bash demo/run_pipeline.sh "$@" ;;
  test)  do_cmd "${RUN[@]}" "$IMAGE" python -m pytest -q tests ;;
  shell) do_cmd "${RUN[@]}" "$IMAGE" bash ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
