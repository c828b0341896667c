#!/usr/bin/env bash
# One command for the GPU table of benchmarks/README.md (maefuse-l640, random weights, batch 1 and 8, torch
# fp16/bf16 x eager/CUDA graphs/torch.compile, onnxruntime-gpu where installed): about 5 minutes on an H100/H200.
#
# Usage: benchmarks/gpu/run.sh [OUT_DIR] [--dry-run]     (default OUT_DIR: benchmarks/gpu/out)
#
# The GPU machines have PyTorch, CUDA, CMake and nvcc but maybe not OpenCV or safetensors, and reach no registry:
# benchmarks/gpu/fetch_wheels.sh (run here, where PyPI is reachable) puts those two wheels (~57 MB) in
# benchmarks/gpu/wheels/, which the device call carries; this script installs them when the imports fail.
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
if [ ${#extra[@]} -eq 0 ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true; fi
exec "$python" benchmarks/gpu/gpu_bench.py --out "$out" "${extra[@]}"
