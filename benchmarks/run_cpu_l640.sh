#!/usr/bin/env bash
# The maefuse-l640 CPU latency table of benchmarks/README.md: release-style baseline, torch float32, torch bfloat16
# and onnxruntime (a temporary fp32 graph exported from the same weights), batch 1, on this 2-core CPU.
#
# One l640 pass takes ~10-25 s here, so: 1 first call + 3 timed calls per row, rotating through 3 real MSRS pairs
# (every timed output is also checked against the torch float32 reference). Expect about 10 minutes and ~10 GB of
# memory at the export. Run it when nothing else uses the CPU: the numbers are meaningless under contention.
#
# The peak rates are DESIGN 2.6's measurements on this CPU (197 GFLOP/s FP32, 810 GFLOP/s BF16), given rather than
# probed so that the floor column does not move with the load of the moment.
#
# Usage: benchmarks/run_cpu_l640.sh [OUTPUT_DIR]   (default /tmp/maefuse-bench-l640)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/maefuse-bench-l640}"
mkdir -p "$out"
.venv/bin/maefuse-bench --latency --model maefuse-l640 \
    --backends release-style,torch,torch-bf16,onnxruntime \
    --batches 1 --iterations 3 --warmup 0 --pairs 3 \
    --peak-tflops float32=0.197,bfloat16=0.81 \
    --json "$out/cpu_l640.json" --markdown "$out/cpu_l640.md" --plot "$out/cpu_l640.png"
