#!/usr/bin/env bash
# Reproduce the shipped `builtin` model (satsam_ros/models/builtin) from nothing:
# synthetic data -> patches -> fit -> tune-threshold -> evaluate at 512 / 1024 / 2048.
# These are exactly the commands that made the committed model (see its MODEL.md).
# About 55 min on 2 CPU cores with nothing else running (torch processes side by side
# on 2 cores slow each other down 10x or more). Run from the repository root after
# `make setup`. WORK (default runs/) gets the data and the run; SHIP=1 copies the
# result into satsam_ros/models/builtin.
set -euo pipefail
WORK=${WORK:-runs}
T=.venv/bin/satsam-train
export OMP_WAIT_POLICY=PASSIVE

$T synth --out "$WORK/data" --n-train 1600 --n-val 160 --n-test 10 --seed 1
$T patches "$WORK/data" --size 512 --split train --keep-empty 0.3 --seed 1 --out "$WORK/p512-train"
$T patches "$WORK/data" --size 512 --split val --keep-empty 0.3 --seed 2 --out "$WORK/p512-val"
$T synth --out "$WORK/test999" --n-train 0 --n-val 0 --n-test 200 --seed 999   # never used in training

$T fit --patches "$WORK/p512-train" --val "$WORK/p512-val" --out "$WORK/fit512b" --base tiny \
    --base-config hidden=128 layers=4 decoder_hidden=96 --epochs 30 --batch-size 8 --lr 3e-4 \
    --optimizer adamw --weight-decay 0.01 --warmup-steps 150 --schedule cosine --clip-grad 1.0 --augment \
    --seed 7 --select val_loss --no-progress
$T tune-threshold "$WORK/fit512b/model" --data "$WORK/data" --split val --size 512 \
    --min-area 0 50 100 200 400 800 --no-progress
for S in 512 1024 2048; do
    $T evaluate "$WORK/fit512b/model" --data "$WORK/test999" --size "$S" --out "$WORK/eval-$S" \
        --device cpu --no-progress --json > "$WORK/eval-$S.json"
done
if [ "${SHIP:-0}" = 1 ]; then
    rm -rf satsam_ros/models/builtin.new && mkdir -p satsam_ros/models/builtin.new
    cp "$WORK/fit512b/model/"{config.json,model.safetensors,satsam.json} satsam_ros/models/builtin.new/
    rm -rf satsam_ros/models/builtin && mv satsam_ros/models/builtin.new satsam_ros/models/builtin
fi
