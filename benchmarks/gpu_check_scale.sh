#!/usr/bin/env bash
# The GPU measurements of issue 14 in one device session (benchmarks/README.md), most important first:
# Gemma-2-9B scoring packed vs padded, 9B full fine-tune with 8-bit AdamW, ZeRO-3 one-process
# export equality, 9B LoRA packed and the padded LoRA recipe, 2B scoring, 9B with Adafactor; then the two
# measured in no session yet (run only those with STEPS="8 9"): 9B QLoRA, and the 2B training MFU with
# compiled layers on rows of varying length against rows fixed at the budget (train.fixed_row_shape).
# Random weights at the real shapes: the device machine cannot download Gemma.
# Prepare here: python benchmarks/zero3_check.py --make-toy .zero3, and wheels in .whl (benchmarks/README.md).
# Usage there: OUT=<dir> bash benchmarks/gpu_check_scale.sh   (carry .whl and .zero3; results land in
# $OUT/results.tgz, refreshed after every step, and the log in $OUT/log.txt)
# Rehearse on a CPU: BIG=tiny-gemma2 SMALL=tiny SEQS=16 TRAIN="--steps 1 --batch-pairs 2 --budget 4096
#   --checkpointing --median 200 --cap 512" TRAIN2="$TRAIN --warmup 1" OUT=/tmp/x bash benchmarks/gpu_check_scale.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results}
R=${R:-/tmp/scale_results}
BIG=${BIG:-gemma2-9b}
SMALL=${SMALL:-gemma2-2b}
SEQS=${SEQS:-96}
TRAIN=${TRAIN:-"--steps 2 --batch-pairs 8 --budget 16384 --checkpointing"}
TRAIN2=${TRAIN2:-"--steps 3 --batch-pairs 16 --budget 16384 --checkpointing --warmup 2"}  # the 2B MFU rows
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$R"
exec > >(tee -a "$OUT/log.txt") 2>&1
if ls .whl/*.whl >/dev/null 2>&1 && command -v nvidia-smi >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, transformers, accelerate, peft, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)" 2>&1 | tail -1
start=$(date +%s)
STEPS=${STEPS:-"1 2 3 4 5 6 7 8 9"}  # a subset reruns only those
step() { tar czf "$OUT/results.tgz" -C "$R" . 2>/dev/null; echo "=== $1 (t=$(( $(date +%s) - start ))s)"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }
EAGER=${EAGER:---eager}
TT="python3 benchmarks/train_throughput.py --preset $BIG $TRAIN --warmup 2"   # split on purpose
ROWS='^{\|^|\|Error\|error'

if want 1; then
  step "1. scoring $BIG: packed (flex) vs padded length-sorted (sdpa, eager)"
  timeout 150 python3 benchmarks/score_throughput.py --preset "$BIG" --sequences "$SEQS" --repeats 1 $EAGER \
    --out "$R/score_throughput_$BIG" 2>&1 | grep "$ROWS\|speedup" | tail -8
fi
if want 2; then
  step "2. train $BIG packed, full fine-tune, bf16 weights, 8-bit AdamW"
  timeout 110 $TT --only packed --optimizer adamw_8bit --out "$R/train_memory_${BIG}_full_adamw8bit" 2>&1 | grep "$ROWS" | tail -3
fi
if want 3 && [ -d .zero3 ]; then
  step "3. ZeRO-3 one process vs plain, export equality"
  timeout 90 python3 benchmarks/zero3_check.py --backbone .zero3/dec --train .zero3/d.jsonl \
    --held .zero3/h.jsonl --attention sdpa --out "$R/zero3_check_gpu" 2>&1 | grep -v "^\[" | tail -12
fi
if want 4; then
  step "4. train $BIG packed, LoRA r=16"
  timeout 80 $TT --only packed --lora 16 --out "$R/train_memory_${BIG}_lora" 2>&1 | grep "$ROWS" | tail -3
fi
if want 5; then
  step "5. train $BIG padded recipe, LoRA r=16, sdpa, length-sorted"
  timeout 80 $TT --only padded --lora 16 --padded-attn sdpa --length-sorted --out "$R/train_memory_${BIG}_lora_padded" 2>&1 \
    | grep "$ROWS" | tail -3
  if grep -q "error" "$R/train_memory_${BIG}_lora_padded.md" 2>/dev/null; then  # sdpa refused for this model: eager
    timeout 60 $TT --only padded --lora 16 --padded-attn eager --length-sorted --out "$R/train_memory_${BIG}_lora_padded_eager" \
      2>&1 | grep "$ROWS" | tail -3
  fi
fi
if want 6; then
  step "6. scoring $SMALL"
  timeout 70 python3 benchmarks/score_throughput.py --preset "$SMALL" --sequences "$SEQS" --repeats 1 \
    --out "$R/score_throughput_$SMALL" 2>&1 | grep "$ROWS\|speedup" | tail -6
fi
if want 7; then
  step "7. train $BIG packed, full fine-tune, bf16 weights, Adafactor"
  timeout 80 $TT --only packed --optimizer adafactor --out "$R/train_memory_${BIG}_full_adafactor" 2>&1 | grep "$ROWS" | tail -3
fi
if want 8; then
  step "8. train $BIG packed, QLoRA r=16 (NF4 backbone)"
  timeout 120 $TT --only packed --lora 16 --qlora --out "$R/train_memory_${BIG}_qlora" 2>&1 | grep "$ROWS\|NF4" | tail -4
fi
if want 9; then
  # the 2B training MFU (40.9% with compiled layers, rows of varying length): the same run with every
  # row filled to the budget (train.fixed_row_shape), so the compiled layers keep one static shape
  for fixed in "" "--fixed-rows"; do
    step "9. train $SMALL packed, music_flex, compiled layers ${fixed:-(rows vary)}"
    timeout 150 python3 benchmarks/train_throughput.py --preset "$SMALL" $TRAIN2 --only packed --compile $fixed \
      --out "$R/train_throughput_${SMALL}_compiled${fixed:+_fixed_rows}" 2>&1 | grep "$ROWS" | tail -3
  done
fi
step "done"
ls "$R"
