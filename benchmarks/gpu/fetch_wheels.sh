#!/usr/bin/env bash
# Download what benchmarks/gpu/run.sh needs beyond PyTorch into benchmarks/gpu/wheels/ (git-ignored; carried to
# the GPU machine, 64 MiB at most): OpenCV headless and safetensors, ~57 MB. No onnxruntime-gpu: ~250 MB.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    -d wheels opencv-python-headless safetensors
du -sh wheels
