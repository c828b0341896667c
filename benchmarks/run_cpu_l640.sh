#!/usr/bin/env bash
# The maefuse-l640 CPU side by side of benchmarks/README.md, as a user runs it: `maefuse-bench --latency` with no
# --backends, so every backend that runs on this CPU is measured at batch 1 in one process, one after the other:
# release-style, torch float32, torch bfloat16, onnxruntime fp32 and dynamic int8 (one temporary fp32 graph exported
# from the same weights), OpenVINO fp32, bf16 (precision hint) and int8 (NNCF, calibrated on 4 real RoadScene pairs).
# Every timed output is checked against torch float32 on 3 real MSRS pairs (fused-image PSNR); the summary line
# names the fastest row with >= 40 dB. Target (issue 18): <= 4.0 s/pair at >= 40 dB.
#
# Cost on a quiet 2-core Zen 5 machine: about 10 minutes (export ~100 s, int8 quantization and calibration ~2 min,
# 1 first call + 3 timed calls per row), peak memory ~7 GB at the export and an estimated 9-11 GB during OpenVINO
# int8's NNCF calibration (never completed on l640 yet: see docs/cpu_inference.md). Run it when nothing else uses
# the CPU: the script records the load average at the start, and numbers taken above a load of ~0.5 are not speeds.
#
# The floors are docs/model.md §6's (197 GFLOP/s FP32, 810 GFLOP/s BF16, measured with torch's matmul on the Zen 5);
# int8 rows (int8, int8-bf16) are held to the int8 probe's rate, measured in the run (OpenVINO, NNCF). On another
# CPU drop --peak-tflops so that every floor is measured there. onnxruntime (MLAS) and OpenVINO run FP32 at about twice MKL's rate on Zen 5 (MKL takes its
# AVX2 path on AMD; see docs/cpu_inference.md), so their FP32 rows can sit below 1x of that floor.
#
# Usage: benchmarks/run_cpu_l640.sh [OUTPUT_DIR]   (default /tmp/maefuse-bench-l640)
#        MODEL=random:maefuse-micro benchmarks/run_cpu_l640.sh /tmp/smoke   (a one-minute check that the script works)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/maefuse-bench-l640}"
mkdir -p "$out"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; quiet means < 0.5)"
grep -m1 -E '^cpu family' /proc/cpuinfo
# Accuracy on the MSRS pairs, int8 calibration on RoadScene: they never share a pair (shipped samples otherwise).
ivif="$(cd .. && pwd)/shared/data/ivif"
pairs=()
if [ -d "$ivif/MSRS6/ir" ] && [ -d "$ivif/RoadScene/ir" ]; then
  pairs=(--pairs-dir "$ivif/MSRS6" --int8-calibration "$ivif/RoadScene")
fi
start=$(date +%s)
.venv/bin/maefuse-bench --latency --model "${MODEL:-random:maefuse-l640}" \
    --batches 1 --iterations 3 --warmup 0 --pairs 3 --int8-calibration-pairs 4 "${pairs[@]}" \
    --peak-tflops float32=0.197,bfloat16=0.81 \
    --json "$out/cpu_l640.json" --markdown "$out/cpu_l640.md" --plot "$out/cpu_l640.png" --overwrite
echo "took $(( $(date +%s) - start )) s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
