#!/usr/bin/env bash
# The GPU measurements of issue 5, in one device session (see benchmarks/README.md):
# packed vs padded Bradley-Terry training on a Gemma-2-2B-shaped model with random weights.
# Usage on the device machine: OUT=<dir> bash benchmarks/gpu_check.sh   (PRESET=tiny-gemma2 to rehearse)
set -uo pipefail
OUT=${OUT:-benchmarks/results}
PRESET=${PRESET:-gemma2-2b}
SCALE=${SCALE:-"--steps 4 --batch-pairs 16"}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --find-links .wheels omegaconf 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
BENCH="python3 benchmarks/train_throughput.py --preset $PRESET $SCALE"  # split on purpose: timeout runs no functions

# 1. packed (flex attention) vs the padded recipe (eager: HF's advice for Gemma-2 without
#    flash-attn), both with gradient checkpointing, 16k-token budget
timeout 320 $BENCH --budget 16384 --checkpointing --out "$OUT/train_throughput_${PRESET}" 2>&1 | tail -12
if [ ! -f "$OUT/train_throughput_${PRESET}.json" ]; then
  echo "flex attention failed: packed falls back to per-sequence attention (music_varlen)"
  timeout 200 $BENCH --budget 16384 --checkpointing --packed-attn music_varlen --out "$OUT/train_throughput_${PRESET}" 2>&1 | tail -12
fi
# 2. packed without checkpointing (8k budget fits in memory): the MFU the trainer reaches
timeout 150 $BENCH --budget 8192 --only packed --out "$OUT/train_throughput_${PRESET}_packed_no_ckpt" 2>&1 | tail -6
ls -la "$OUT"
