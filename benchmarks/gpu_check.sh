#!/usr/bin/env bash
# The GPU measurements of issue 5, in one device session (see benchmarks/README.md):
# packed vs padded Bradley-Terry training on a Gemma-2-2B-shaped model with random weights.
# Usage on the device machine: OUT=<dir> bash benchmarks/gpu_check.sh   (PRESET=tiny-gemma2 to rehearse)
set -uo pipefail
OUT=${OUT:-benchmarks/results}
PRESET=${PRESET:-gemma2-2b}
SCALE=${SCALE:-"--steps 4 --batch-pairs 16"}
TOKENS=${TOKENS:-16384}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
python3 -m pip install -q --no-index --find-links .wheels omegaconf 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# 1. music_flex: exact with gradients against eager? which Triton block sizes compile at head_dim 256?
timeout 130 python3 benchmarks/flex_probe.py --tokens "$TOKENS" --out "$OUT/flex_probe_${PRESET}" 2>&1 \
  | tee "$OUT/flex_probe.log" | grep -v "^ " | tail -40
BEST=$(grep -o 'BEST_KERNEL_OPTIONS=.*' "$OUT/flex_probe.log" | tail -1 | cut -d= -f2-)
echo "best kernel options: ${BEST:-probe did not finish}"
if [ -n "$BEST" ] && [ "$BEST" != "default" ] && [ "$BEST" != "none" ]; then
  export MUSIC_FLEX_KERNEL_OPTIONS="$BEST"
fi
ATTN=${ATTN:-"--packed-attn music_flex"}  # ATTN="--packed-attn music_varlen" to rehearse on a CPU
[ "$BEST" = "none" ] && ATTN="--packed-attn music_varlen"

BENCH="python3 benchmarks/train_throughput.py --preset $PRESET $SCALE --budget 16384 --checkpointing"  # split on purpose
# 2. the padded recipe (eager attention: HF's advice for Gemma-2 without flash-attn)
timeout 100 $BENCH --only padded --out "$OUT/train_throughput_${PRESET}_padded" 2>&1 | grep -v "^ " | tail -9
# 3. packed through music_flex
timeout 170 $BENCH $ATTN --only packed --out "$OUT/train_throughput_${PRESET}_packed_flex" 2>&1 | grep -v "^ " | tail -9
# 4. packed with every layer compiled (train.compile): the norms, GeLU and residual adds fused
timeout 170 $BENCH $ATTN --only packed --compile --out "$OUT/train_throughput_${PRESET}_packed_flex_compiled" 2>&1 \
  | grep -v "^ " | tail -9
ls -la "$OUT"
