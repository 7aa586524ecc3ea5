#!/usr/bin/env bash
# GPU smoke test of the paper's NUS-WIDE recipe (train/recipes/sdl_nus_wide.json): TResNet-M 224
# (random init), K=7, D=300, 925 seen tags, batch 32, AMP, EMA, a few hundred steps on synthetic
# batches. Prints training and inference images/s, the data loader's decode + augmentation images/s
# with WORKERS processes, peak GPU memory, and a GPU-hour estimate for the full run; writes
# $OUT/gpu_smoke.json (or ./gpu_smoke.json).
# Usage: train/gpu_smoke.sh [STEPS] [BATCH] [WORKERS]      (defaults: 300 steps, batch 32, 8 workers;
#        PYTHON=python3 to pick the interpreter)
#
# Estimate (one GPU, 10 epochs, validation on the test list every epoch):
#   hours = 10 * (N_train / min(train img/s, loader img/s) + N_val / inference img/s) / 3600
#   N_train = 161,789 listed training images (fewer after missing downloads and images without a tag)
#   N_val   = 107,859 listed test images (or the --val-fraction share of N_train)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-300}"
BATCH="${2:-32}"
WORKERS="${3:-8}"
RESULT="${OUT:-.}/gpu_smoke.json"
PY="${PYTHON:-python}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
"$PY" -m train smoke --recipe sdl_nus_wide --dim 300 --tags 925 --steps "$STEPS" --batch-size "$BATCH" \
    --device cuda --loader-workers "$WORKERS" --json "$RESULT"
"$PY" - "$RESULT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
train = min(r["images_per_s"], r["loader_images_per_s"] or r["images_per_s"])
hours = 10 * (161_789 / train + 107_859 / r["eval_images_per_s"]) / 3600
print(f"train {r['images_per_s']:.0f} img/s (GPU), loader {r['loader_images_per_s']} img/s "
      f"({r['loader_workers']} workers), inference {r['eval_images_per_s']:.0f} img/s, "
      f"peak {r['peak_memory_mb']:.0f} MiB")
print(f"estimate: 10 epochs = 10 * (161,789 / {train:.0f} + 107,859 / {r['eval_images_per_s']:.0f}) / 3600 "
      f"= {hours:.2f} GPU-hours on {r['device_name']}")
PY
