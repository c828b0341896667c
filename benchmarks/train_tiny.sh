#!/usr/bin/env bash
# Reproduces the shipped maefuse-tiny (maefuse_deploy/weights/maefuse-tiny.safetensors), then scores it on
# RoadScene test50 next to mean and max fusion and draws the preview. Usage, from the repository root:
#   benchmarks/train_tiny.sh [RUN_DIR]            (DATA=... to point at another RoadScene copy)
# Data: RoadScene's 171 pairs outside test50.txt (held out automatically); the last 8 of those names are held out
# for validation, so 163 pairs train (326 single images in stages 1-3).
# The shipped run used --max-minutes guards on a shared 2-core CPU; the step counts below are where those guards
# stopped each stage. The learning rate is constant after warm-up, so --steps N gives the same run (resume and
# stop points are exact, see tests/test_train.py).
set -euo pipefail
DATA=${DATA:-../shared/data/ivif/RoadScene}
RUN=${1:-runs/tiny}
TRAIN="nice -n 10 maefuse-train --config maefuse-tiny --data $DATA --seed 0 --no-progress --crop --flip --amp bf16"

# 1. MAE pretraining, 75% masking, encoder + decoder from scratch.
$TRAIN --stage mae --out $RUN/1-mae --mask-ratio 0.75 --batch-size 32 --lr 3e-4 --warmup-steps 200 \
  --steps 300 --val-every 10 --checkpoint-every 100
# 2. Full-image reconstruction (mask ratio 0), encoder + decoder.
$TRAIN --stage mae --out $RUN/2-recon --init $RUN/1-mae/model.safetensors --mask-ratio 0 --batch-size 32 \
  --lr 3e-4 --warmup-steps 100 --steps 2304 --val-every 10 --checkpoint-every 100
# 3. The release's decoder stage: frozen encoder, full-image reconstruction.
$TRAIN --stage decoder --out $RUN/3-decoder --init $RUN/2-recon/model.safetensors --batch-size 32 --lr 1e-4 \
  --steps 996 --val-every 10 --checkpoint-every 100
# 4. Alignment: fusion layer output -> mean of the two encoder outputs.
$TRAIN --stage align --out $RUN/4-align --init $RUN/3-decoder/model.safetensors --batch-size 16 --lr 1e-4 \
  --steps 1418 --val-every 5 --checkpoint-every 50
# 5. Fusion: Sobel + Laplacian loss; encoder, decoder and fusion layer all train.
$TRAIN --stage fuse --out $RUN/5-fuse --init $RUN/4-align/model.safetensors --train encoder,decoder,fusion \
  --loss sobel-laplacian --batch-size 16 --lr 1e-4 --steps 1440 --val-every 3 --checkpoint-every 50

# Test50 report (default metric convention) and preview.
python - "$DATA" "$RUN/5-fuse/model.safetensors" "$RUN" <<'PY'
import sys
from maefuse_deploy.train.dataset import find_root_pairs, read_names
from maefuse_deploy.train.evaluate import test_report, write_preview

data, model, run = sys.argv[1:4]
test = set(read_names(f"{data}/test50.txt"))
pairs = [p for p in find_root_pairs(data) if p.name in test]
metrics = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"]
print("| fusion | " + " | ".join(metrics) + " |")
for policy in ("official", "native"):
    report = test_report(model, pairs, metrics, policy=policy)
    rows = [(f"maefuse-tiny ({policy})", report["model"])]
    if policy == "official":
        rows += [("mean (IR+VIS)/2", report["mean"]), ("max(IR, VIS)", report["max"])]
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
write_preview(model, [p for p in pairs if p.name in ("FLIR_04688", "FLIR_05893")], f"{run}/preview.png")
PY
