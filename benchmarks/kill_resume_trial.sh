#!/usr/bin/env bash
# `music run` (the offline default, shrunk) SIGKILLed at given delays, rerun each time, then run to
# the end; compare its outputs with one uninterrupted run. Results: benchmarks/results/kill_resume_trial.md
# Usage: DELAYS="30 45 20 60 90" bash benchmarks/kill_resume_trial.sh   (about 15 min on 2 cores)
set -u
ARGS=(run.progress=false seeds.limit=4 synth.turns=2 train.epochs=1 "eval.bon.n=[1,2]")
REF=${REF:-/tmp/kr_ref}; OUT=${OUT:-/tmp/kr_killed}
rm -rf "$REF" "$OUT"
music run run.output_dir="$REF" "${ARGS[@]}" > "$REF.log" 2>&1 || { echo "reference run failed: $REF.log"; exit 1; }
for delay in ${DELAYS:-30 45 20 60 90}; do
  setsid music run run.output_dir="$OUT" "${ARGS[@]}" > "$OUT.k$delay.log" 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 -- "-$pid"; echo "killed after ${delay}s during: $(grep '^\[' "$OUT.k$delay.log" | tail -1)"
  else
    echo "finished before ${delay}s"
  fi
  wait "$pid" 2>/dev/null
done
music run run.output_dir="$OUT" "${ARGS[@]}" > "$OUT.final.log" 2>&1; echo "final run rc=$?"
for f in synth/pairs.jsonl synth/pairs.errors.jsonl synth/pairs.filtered.jsonl mix/train.jsonl mix/eval.jsonl \
         rm/baseline/metrics.json rm/music/metrics.json eval/best-of-n/dialogues.jsonl eval/best-of-n/judgements.jsonl; do
  if [[ $f == rm/* ]]; then  # timings differ: compare the numbers that are not times
    python3 -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); k=[x for x in a if isinstance(a[x],(int,float)) and 'second' not in x and 'tok' not in x]; print('same' if all(a[x]==b.get(x) for x in k) else 'DIFFERENT', sys.argv[1].split('/',3)[-1])" "$REF/$f" "$OUT/$f"
  else
    cmp -s "$REF/$f" "$OUT/$f" && echo "same $f" || echo "DIFFERENT $f"
  fi
done
