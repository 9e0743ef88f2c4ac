#!/usr/bin/env bash
# Issue 22, item 4: coarse to fine against full tiling against S = 512, the shipped model,
# style a and style b test frames, in one run. Run from the repository root after
# `make setup` (the live-node step runs `make build`), on a quiet machine: every timing
# compares rows of the same run.
#
#   1. test frames: style a (seed 999) and style b (seed 777), 100 each (15 % empty): the
#      shipped model's test sets (MODEL.md), made here when missing;
#   2. `satsam bench`: S = 512, 1024 / 2048 full tiling and 1024 / 2048 with the cascade,
#      every frame of both test sets through every row in turn, on ONNX Runtime (what the
#      node runs on a CPU): accuracy, false alarms, median / p95 s per frame, the empty
#      frames' cost, pre + post share, patches per frame, and the issue's targets; plus
#      the latency rows at each S (full tiling) for the pre / post share;
#   3. `satsam-train evaluate` for each (style, S, cascade): the error budget;
#   4. the live node at size:=2048 (its checkpoint cascade), 5 frames/s in and lock-step;
#   5. the table of step 3 (markdown, for BENCHMARKS.md and MODEL.md) on stdout and in
#      OUT/evaluate.md.
#
# Settings (environment): OUT (default runs/cascade), WORK (where the test sets are,
# default runs), N (test frames per style, default 100: the shipped test sets), CASCADE
# (the cascade rows: on = 512 first with the checkpoint's margin, default; auto = the
# checkpoint's setting), BACKEND (default onnxruntime), STEPS (default "1 2 3 4 5").
# Each step skips what is already there; delete OUT/<step> to measure it again.
# Small check: N=6 STEPS="1 2 3 5" OUT=/tmp/cascade WORK=/tmp/cascade bash scripts/cascade_bench.sh
set -euo pipefail
OUT=${OUT:-runs/cascade}
WORK=${WORK:-runs}
N=${N:-100}
CASCADE=${CASCADE:-on}
BACKEND=${BACKEND:-onnxruntime}
STEPS=${STEPS:-1 2 3 4 5}
PY=${PY:-.venv/bin/python}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
step() { [[ " $STEPS " == *" $1 "* ]]; }

A="$WORK/a-test"
B="$WORK/b-test"
if step 1; then
  [ -f "$A/test.json" ] || $PY -m satsam_training.cli synth --out "$A" --n-train 0 --n-val 0 --n-test "$N" \
    --seed 999 --real-share 0
  [ -f "$B/test.json" ] || $PY -m satsam_training.cli synth --style b --out "$B" --n-train 0 --n-val 0 \
    --n-test "$N" --seed 777 --real-share 0
fi

if step 2 && [ ! -f "$OUT/bench/bench.json" ]; then
  $PY -m satsam_ros.tools.cli bench --models shipped --reference-model '' --sizes 512 1024 2048 \
    --backends "$BACKEND" --modes fast --native-encoder 0 --frames 10 --no-roi --no-node \
    --cascade "$CASCADE" --cascade-data "$A" "$B" --cascade-limit "$N" --out "$OUT/bench" --no-progress
fi

if step 3; then
  mkdir -p "$OUT/evaluate"
  for style in a b; do
    for run in "512 off" "1024 off" "1024 $CASCADE" "2048 off" "2048 $CASCADE"; do
      read -r S C <<< "$run"
      dir="$OUT/evaluate/$style-$S-$C"
      if [ ! -s "$dir.json" ]; then
        $PY -m satsam_training.cli evaluate builtin --data "$WORK/$style-test" --size "$S" --cascade "$C" \
          --backend "$BACKEND" --out "$dir" --no-progress --json > "$dir.json.tmp"
        mv "$dir.json.tmp" "$dir.json"
      fi
    done
  done
fi

if step 4 && [ ! -f "$OUT/node-2048/node-bench.json" ]; then
  make build
  $PY -m satsam_ros.tools.cli bench --node --node-size 2048 --node-rates 5 step --node-frames 100 \
    --backends "$BACKEND" --out "$OUT/node-2048" --no-progress
fi

if step 5; then
  $PY - "$OUT" <<'EOF' | tee "$OUT/evaluate.md"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print("| test set | S | cascade | accuracy | mean IoU | false alarms | miss rate | s/frame median | p95 | "
      "empty s median | stopped s median | patches/frame | stopped | pre+post | "
      "budget: correct / missed / extra / poor / false alarm |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for path in sorted((out / "evaluate").glob("*.json"), key=lambda p: (p.stem[0], int(p.stem.split("-")[1]),
                                                                   p.stem.split("-")[2] != "off")):
    r = json.loads(path.read_text())
    c, b = r["cost"], r["error_budget"]["counts"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    num = lambda v, f=".3f": "-" if v is None else format(v, f)  # noqa: E731
    print(f"| style {path.stem[0]} | {r['size']} | {r['cascade_description']} | {pct(r['accuracy'])} | "
          f"{num(r['mean_iou'])} | {pct(r['false_alarm_rate'])} ({r['false_alarms']}/{r['empty_frames']}) | "
          f"{pct(r['miss_rate'])} | {num(r['seconds_median'])} | {num(r['seconds_p95'])} | "
          f"{num(c['seconds_empty_median'])} | {num(c.get('seconds_stopped_median'))} | "
          f"{num(c['patches_mean'], '.1f')} | {pct(c['cascade_stopped_share'])} | "
          f"{pct(c['pre_post_share'])} | {b.get('correct', 0)} / {b.get('missed', 0)} / {b.get('extra_objects', 0)} / "
          f"{b.get('poor_mask', 0)} / {b.get('false_alarm', 0)} |")
EOF
  for f in "$OUT/bench/bench.md" "$OUT/node-2048/node-bench.md"; do
    [ -f "$f" ] && echo "see $f"
  done
fi
