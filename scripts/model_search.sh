#!/usr/bin/env bash
# The model search of docs/model-search.md, reproducible: the same data for every
# candidate, the same budget, scored on the independent generator (style b).
#
#   scripts/model_search.sh data                 # training data, validation data (once)
#   scripts/model_search.sh run NAME             # train one candidate (resumable: run it again)
#   scripts/model_search.sh score NAME           # tune on style a val, evaluate on a and b val, 3 sizes
#   scripts/model_search.sh table                # docs/model-search.md's table from the scores
#
# Budget: about 30 minutes of this 2-core machine per candidate, as a fixed number of
# optimizer steps (batch 8), so the result does not depend on what else ran on the
# cores meanwhile. The steps come from quiet throughput (docs/model-search.md says how
# each was measured). Candidates run with one torch thread each, two at a time, from a
# frozen copy of the code when SNAP points at one (PYTHONPATH).
# WORK (default runs) gets the data and the runs.
set -euo pipefail
WORK=${WORK:-runs}
PY=${PY:-.venv/bin/python}
export OMP_WAIT_POLICY=PASSIVE
T="$PY -m satsam_training.cli"
if [ -n "${SNAP:-}" ]; then  # run the code of that checkout (python -m puts the working directory first)
  WORK=$(realpath -s "$WORK"); PY=$(realpath -s "$PY"); T="$PY -m satsam_training.cli"
  export PYTHONPATH="$SNAP:$SNAP/training"
  cd "$SNAP"
fi

# name | steps (30 quiet minutes) | fit arguments
candidates() {
  cat <<'EOF'
c1-vit|4165|--base tiny --base-config hidden=128 layers=4 decoder_hidden=96
c2-vit-p8|600|--base tiny --base-config hidden=128 layers=4 decoder_hidden=96 patch=8
c3-vit-deep|2435|--base tiny --base-config hidden=128 layers=6 decoder_hidden=96
c4-sam2|2994|--base tiny-sam2 --base-config widths=32,64,128,256 blocks=1,1,2,1 heads=1,1,2,4 fpn=64
c5-sam2-wide|1870|--base tiny-sam2 --base-config widths=48,96,192,384 blocks=1,1,2,1 heads=1,2,4,8 fpn=96
c6-sam2-focal|2994|--base tiny-sam2 --base-config widths=32,64,128,256 blocks=1,1,2,1 heads=1,1,2,4 fpn=64 --loss dicefocal
EOF
}

data() {
  $T synth --out "$WORK/d512" --n-train 4000 --n-val 0 --n-test 0 --seed 11 --workers 2
  $T synth --out "$WORK/d1024" --n-train 2000 --n-val 0 --n-test 0 --seed 12 --workers 2
  $T synth --out "$WORK/d2048" --n-train 800 --n-val 0 --n-test 0 --seed 13 --workers 2
  $T synth --out "$WORK/aval100" --n-train 0 --n-val 100 --n-test 0 --seed 21
  $T synth --style b --out "$WORK/bval" --n-train 0 --n-val 150 --n-test 0 --seed 22 --workers 2
  $T patches "$WORK/d512" --size 512 --split train --keep-empty 0.35 --seed 1 --out "$WORK/p512"
  $T patches "$WORK/d1024" --size 1024 --split train --keep-empty 0.12 --seed 2 --out "$WORK/p1024"
  $T patches "$WORK/d2048" --size 2048 --split train --keep-empty 0.05 --seed 3 --out "$WORK/p2048"
  for S in 512 1024 2048; do
    $T patches "$WORK/aval100" --size "$S" --split val --keep-empty 0.1 --seed 4 --out "$WORK/pv$S"
  done
}

run() {
  local name=$1 line steps args epochs=5
  line=$(candidates | grep "^$name|") || { echo "unknown candidate $name" >&2; exit 2; }
  steps=$(echo "$line" | cut -d'|' -f2)
  args=$(echo "$line" | cut -d'|' -f3)
  local resume=()
  if [ -d "$WORK/search/$name/last" ]; then resume=(--resume); fi
  # shellcheck disable=SC2086
  $T fit --patches "$WORK/p512" "$WORK/p1024" "$WORK/p2048" --val "$WORK/pv512" "$WORK/pv1024" "$WORK/pv2048" \
    --out "$WORK/search/$name" --epochs $epochs --steps-per-epoch $((steps / epochs)) --batch-size 8 --lr 3e-4 \
    --optimizer adamw --weight-decay 0.01 --warmup-steps 200 --schedule cosine --clip-grad 1.0 --augment --seed 7 \
    --select val_loss --threads 1 --no-progress "${resume[@]}" $args
}

score() {
  # post-processing tuned per size on style a's validation frames, then scored on style b's
  local name=$1 model="$WORK/search/$1/model" S
  for S in 512 1024 2048; do
    $T tune-threshold "$model" --data "$WORK/aval100" --split val --size "$S" --backend torch \
      --min-area 0 25 50 100 200 400 --max-objects 0 1 --min-score 0 0.6 0.7 0.8 --group-gap 0 8 \
      --out "$WORK/search/$name/tune-$S" --no-progress --json > "$WORK/search/$name/tune-$S.json"
    $T evaluate "$model" --data "$WORK/bval" --split val --size "$S" --out "$WORK/search/$name/b-$S" \
      --backend torch --device cpu --no-progress --json > "$WORK/search/$name/b-$S.json"
  done
}

table() {
  $PY scripts/search_table.py "$WORK/search" $(candidates | cut -d'|' -f1)
}

cmd=${1:-}
case "$cmd" in
  data) data ;;
  run) run "$2" ;;
  score) score "$2" ;;
  table) table ;;
  *) echo "usage: $0 data | run NAME | score NAME | table" >&2; exit 2 ;;
esac
