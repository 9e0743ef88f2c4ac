#!/usr/bin/env bash
# Reproduce the shipped `builtin` model (satsam_ros/models/builtin) from nothing. These
# are exactly the commands that made the committed model (see its MODEL.md):
#
#   1. the model search's data and its winning candidate, `c4-sam2` (a small SAM 2 trained
#      from scratch for 2,994 steps; scripts/model_search.sh, docs/model-search.md);
#   2. the long run: that checkpoint trained on for 30,000 more steps (12 epochs of 2,500,
#      batch 8, AdamW, cosine from 3e-4), the best epoch by validation loss kept;
#   3. post-processing (threshold, min_area, components kept, score floor, grouping)
#      tuned per size S = 512 / 1024 / 2048 on style a validation frames;
#   4. accuracy at the three sizes on fresh test frames of both generators: style a
#      (seed 999, never used in training) and style b (seed 777, never used in training
#      or tuning).
#
# About 2 h 15 min on 2 CPU cores with nothing else running (stage 2 alone is about
# 100 min at 5 steps/s); every stage is resumable: run the script again after an
# interruption and finished stages are skipped, a fit continues from its last epoch.
# Run from the repository root after `make setup`. WORK (default runs/) gets the data
# and the runs; SHIP=1 copies the result into satsam_ros/models/builtin.
set -euo pipefail
WORK=${WORK:-runs}
PY=${PY:-.venv/bin/python}
T="$PY -m satsam_training.cli"
export OMP_WAIT_POLICY=PASSIVE
export WORK PY

# 1. data and the search winner (both skip what is already there)
if [ ! -f "$WORK/pv2048/patches.json" ]; then bash scripts/model_search.sh data; fi
if [ ! -f "$WORK/search/c4-sam2/fit.json" ]; then bash scripts/model_search.sh run c4-sam2; fi  # fit.json: finished

# 2. the long run, two threads
RESUME=(); if [ -d "$WORK/long/last" ]; then RESUME=(--resume); fi
if [ ! -f "$WORK/long/fit.json" ]; then
  $T fit --patches "$WORK/p512" "$WORK/p1024" "$WORK/p2048" --val "$WORK/pv512" "$WORK/pv1024" "$WORK/pv2048" \
    --out "$WORK/long" --base "$WORK/search/c4-sam2/model" --epochs 12 --steps-per-epoch 2500 --batch-size 8 \
    --lr 3e-4 --optimizer adamw --weight-decay 0.01 --warmup-steps 500 --schedule cosine --clip-grad 1.0 \
    --augment --seed 8 --select val_loss --threads 2 "${RESUME[@]}"
fi

# 3. post-processing per size, on style a validation frames
for S in 512 1024 2048; do
  $T tune-threshold "$WORK/long/model" --data "$WORK/aval100" --split val --size "$S" --backend torch \
    --min-area 0 25 50 100 200 400 --max-objects 0 1 --min-score 0 0.6 0.7 0.8 --group-gap 0 8 \
    --out "$WORK/long/tune-$S" --no-progress
done

# 4. fresh test frames of both generators, three sizes
if [ ! -f "$WORK/a-test/test.json" ]; then
  $T synth --out "$WORK/a-test" --n-train 0 --n-val 0 --n-test 100 --seed 999
fi
if [ ! -f "$WORK/b-test/test.json" ]; then
  $T synth --style b --out "$WORK/b-test" --n-train 0 --n-val 0 --n-test 100 --seed 777
fi
for G in a b; do
  for S in 512 1024 2048; do
    $T evaluate "$WORK/long/model" --data "$WORK/$G-test" --size "$S" --out "$WORK/long/$G-test-$S" \
      --backend torch --device cpu --no-progress --json > "$WORK/long/$G-test-$S.json"
  done
done

if [ "${SHIP:-0}" = 1 ]; then  # the checkpoint, its curves and the examples figures; MODEL.md stays
  NEW=satsam_ros/models/builtin.new
  rm -rf "$NEW" && mkdir -p "$NEW"
  cp "$WORK/long/model/"{config.json,model.safetensors,satsam.json} "$WORK/long/"{curves.png,train_log.csv} "$NEW/"
  cp "$WORK/long/a-test-512/examples.png" "$NEW/examples-a.png"
  cp "$WORK/long/b-test-512/examples.png" "$NEW/examples-b.png"
  if [ -f satsam_ros/models/builtin/MODEL.md ]; then cp satsam_ros/models/builtin/MODEL.md "$NEW/"; fi
  rm -rf satsam_ros/models/builtin && mv "$NEW" satsam_ros/models/builtin
fi
