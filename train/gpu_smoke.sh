#!/usr/bin/env bash
# GPU smoke test of full SDL training: TResNet-M (random init), K=7, D=300, 925 tags,
# AMP, a few hundred steps on synthetic batches. Prints images/s and peak GPU memory
# and writes them to $OUT/gpu_smoke.json (or ./gpu_smoke.json).
# Usage: train/gpu_smoke.sh [STEPS] [BATCH]      (defaults: 300 steps, batch 32)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-300}"
BATCH="${2:-32}"
RESULT="${OUT:-.}/gpu_smoke.json"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
python -m train smoke --backbone tresnet_m --k 7 --dim 300 --tags 925 --steps "$STEPS" --batch-size "$BATCH" \
    --image-size 224 --device cuda --amp on --json "$RESULT"
