#!/usr/bin/env bash
# The ONE command for everything GPU-only in this project (a lent GPU machine gives a session one call of at most
# 10 minutes): named, time-boxed steps that fail softly into OUT/steps.json and OUT/steps.md (benchmarks/gpu/steps.py
# has the list and the budgets, under 9 minutes in all): machine facts, the torch matrix of maefuse-l640
# (results.json/results.md), the Fuser's CUDA-tensor path, the C++ build for sm_90, ctest with the device tests,
# compute-sanitizer memcheck/racecheck/synccheck, and an AOTInductor package for CUDA (reported as not available
# while the exporter cannot target CUDA).
#
# Usage: benchmarks/gpu/run.sh [OUT_DIR] [--dry-run]     (default OUT_DIR: benchmarks/gpu/out)
#   device call: benchmarks/gpu/run.sh "$OUT"            (the C++ build goes to /tmp/maefuse-gpu-build)
#   --dry-run: on a CPU (CI): the CPU steps run small, every GPU-only step is listed as "would run: <command>".
#
# The GPU machines have PyTorch, CUDA, CMake and nvcc (and, as seen in 2026-11, OpenCV and safetensors) and reach no
# registry: where OpenCV or safetensors is missing, benchmarks/gpu/fetch_wheels.sh (run here, where PyPI is
# reachable) puts those two wheels (~57 MB) in benchmarks/gpu/wheels/, which the device call carries; this script
# installs them when the imports fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="benchmarks/gpu/out"
extra=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) extra+=(--dry-run) ;;
    *) out="$arg" ;;
  esac
done
python="${PYTHON:-python3}"
if ! "$python" -c "import cv2, safetensors" 2>/dev/null; then
  if compgen -G "benchmarks/gpu/wheels/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps benchmarks/gpu/wheels/*.whl
  else
    echo "error: OpenCV or safetensors is missing and benchmarks/gpu/wheels/ is empty (fix: run" \
         "benchmarks/gpu/fetch_wheels.sh where PyPI is reachable and carry benchmarks/gpu/wheels)" >&2
    exit 2
  fi
fi
exec "$python" benchmarks/gpu/steps.py --out "$out" "${extra[@]}"
