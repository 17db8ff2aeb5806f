#!/usr/bin/env bash
# Helpers around docker/Dockerfile.  Usage: bash docker_utils.sh build|demo|test|shell
# Mounts ./output so the demo base and results persist between runs.
set -euo pipefail
cd "$(dirname "$0")"
IMAGE=${SPECFORGE_HET_IMAGE:-specforge_het:latest}
RUN=(docker run --rm -it -v "$PWD/output:/workspace/specforge_het/output")
case "${1:-}" in
  build) docker build -f docker/Dockerfile -t "$IMAGE" . ;;
  demo)  shift; "${RUN[@]}" "$IMAGE" bash demo/run_pipeline.sh "$@" ;;
  test)  "${RUN[@]}" "$IMAGE" python -m pytest -q tests ;;
  shell) "${RUN[@]}" "$IMAGE" bash ;;
  *) echo "usage: bash docker_utils.sh build|demo|test|shell" >&2; exit 2 ;;
esac
