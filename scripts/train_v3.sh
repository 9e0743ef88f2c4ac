#!/usr/bin/env bash
# Model v3 (issue #21) from nothing, after the search of scripts/model_search_v3.sh:
#
#   1. the search's data and its winner (WINNER, default v3-repvit): trained from scratch
#      for its 30-minute budget of steps (scripts/model_search_v3.sh run WINNER);
#   2. its post-processing per size (presence gate included) tuned on style a's
#      validation frames;
#   3. hard examples: the tuned winner on fresh style a training frames, half of them on
#      real Earth backgrounds (seeds 41 / 42 / 43, one set per S), the patches it gets
#      wrong (`satsam-train mine`: false pixels on clouds, coasts, glints, the limb, and
#      missed satellite pixels); MINE=0 skips this and the long run takes the random
#      patches only;
#   4. the long run: the winner trained on for STEPS more steps (two threads, nothing else
#      on the cores; resumable) on the search's random patches plus the mined ones; with
#      LONG2_STEPS > 0 a second leg follows (long2: a fresh cosine schedule of LONG2_STEPS
#      steps from the first leg's best checkpoint, peak LR2; fit's --resume keeps a run's
#      schedule, so a run made longer after the fact is a warm restart in its own directory);
#   5. post-processing per size tuned again (threshold, min_area, the priors, the presence
#      gate, and at S = 1024 / 2048 the coarse-to-fine cascade), then accuracy and the
#      error budget on fresh test frames of the three generators: style a (seed 999),
#      style b (seed 777) and style r (seed 555: real backgrounds from the held-out band).
#
# Every stage skips what is already there; a fit continues from its last epoch. Run from
# the repository root after `make setup`. WORK (default runs/v3) holds the data and runs;
# SHIP=1 copies the long run's model (FINAL: long, or long2 with LONG2_STEPS) into satsam_ros/models/builtin,
# with its curves, examples and the error budget figure of the nine test runs (MODEL.md stays).
# TEACHER=DIR|builtin makes the long run a distillation (fit --teacher; DISTILL_WEIGHT, default 1),
# LONG=NAME its directory (default long), e.g. a student of builtin in the node's cost class:
#   BUDGET_STEPS=2426 WINNER=v3-repvit LONG=student TEACHER=builtin STEPS=6000 EPOCHS=6 scripts/train_v3.sh
# FROM=DIR|builtin: the long run continues that model instead (stages 1-2 are skipped: no search
# run, no tuning of it; no mining unless MINE=1), e.g. the shipped model with the Dice term on satellite patches only:
#   FROM=builtin LOSS=dicece-pos LONG=pos STEPS=6000 EPOCHS=6 LR=2e-4 scripts/train_v3.sh
# With FROM, MINE=1 mines the hard examples with that model (its own post-processing) into
# WORK/LONG-hardS, on the same fresh frames as the search winner's (seeds 41 / 42 / 43).
# PRESENCE_WEIGHT: fit --presence-weight of the long run(s) (default: the base model's own), e.g.
#   FROM=builtin MINE=1 PRESENCE_WEIGHT=1 LOSS=dicece-pos LONG=pres STEPS=4800 EPOCHS=6 LR=1.5e-4 scripts/train_v3.sh
# LOSS: fit --loss of the long run(s) (default dicece); LR: the first leg's peak (default 3e-4).
# DRY=1 prints the commands instead (each as `satsam-train ...`; stages already done are skipped).
# Without the search's cost.json (a new host), give the winner's search budget as BUDGET_STEPS
# (docs/model-search.md, "Candidates and their cost"), e.g.
#   BUDGET_STEPS=2375 WINNER=v3-sam2-nopresence STEPS=6000 EPOCHS=6 scripts/train_v3.sh
set -euo pipefail
WORK=${WORK:-runs/v3}
PY=${PY:-.venv/bin/python}
T="$PY -m satsam_training.cli"
SEARCH="bash scripts/model_search_v3.sh"
if [ "${DRY:-0}" = 1 ]; then  # print every command instead of running it (the test of its arguments)
  T="echo satsam-train"
  SEARCH="echo scripts/model_search_v3.sh"
fi
WINNER=${WINNER:-v3-repvit}
STEPS=${STEPS:-8000}
EPOCHS=${EPOCHS:-10}
export OMP_WAIT_POLICY=PASSIVE WORK PY

# 1. data and the winner's search run (FROM given: the data only)
$SEARCH data
BASE=${FROM:-$WORK/search/$WINNER/model}
if [ "$BASE" = builtin ]; then BASE=satsam_ros/models/builtin; fi
if [ -z "${FROM:-}" ]; then [ -f "$WORK/search/$WINNER/fit.json" ] || $SEARCH run "$WINNER"; fi

json_out() {  # FILE CMD...: CMD's stdout into FILE (renamed into place when complete); DRY=1: printed
  local file=$1; shift
  if [ "${DRY:-0}" = 1 ]; then "$@"; return; fi
  "$@" > "$file.tmp" && mv "$file.tmp" "$file"
}
GRID=(--min-area 0 25 50 100 200 --max-objects 0 1 --min-score 0 0.6 0.75 --group-gap 0 8
      --min-object-score 0 0.5 0.8 0.95)
tune() {  # MODEL OUTDIR [extra tune-threshold args]: tune MODEL per size on style a's val frames
  local model=$1 out=$2 S; shift 2
  for S in 512 1024 2048; do
    local extra=()
    if [ "$S" != 512 ]; then extra=(--cascade off on --cascade-margin 0 32 64); fi
    [ -s "$out/tune-$S.json" ] || json_out "$out/tune-$S.json" \
      $T tune-threshold "$model" --data "$WORK/aval" --split val --size "$S" "${GRID[@]}" "${extra[@]}" "$@" \
        --out "$out/tune-$S" --no-progress --json
  done
}

# 2. the winner's post-processing (what mining publishes)
if [ -z "${FROM:-}" ]; then tune "$WORK/search/$WINNER/model" "$WORK/search/$WINNER"; fi

# 3. hard examples on fresh frames (half real backgrounds, as style a is), mined by the search
# winner, or with FROM (and MINE=1) by that model into WORK/LONG-hardS
MINER=$WORK/search/$WINNER/model HARD_PREFIX=$WORK/hard
if [ -n "${FROM:-}" ]; then MINER=$BASE HARD_PREFIX=$WORK/${LONG:-long}-hard; fi
mine() {  # S FRAMES SEED
  local S=$1 n=$2 seed=$3 out=$HARD_PREFIX$1
  [ -f "$WORK/m$S/train.json" ] || $T synth --out "$WORK/m$S" --n-train "$n" --n-val 0 --n-test 0 --seed "$seed" --workers 2
  if [ ! -f "$out/patches.json" ]; then
    [ "${DRY:-0}" = 1 ] || rm -rf "$out"  # a half-mined directory from an interrupted run
    $T mine "$MINER" --data "$WORK/m$S" --size "$S" --out "$out" --no-progress
  fi
}
HARD=()  # the mined patches directories the long run adds (MINE=0: none, the random patches only)
if [ "${MINE:-$([ -z "${FROM:-}" ] && echo 1 || echo 0)}" = 1 ]; then
  mine 512 1200 41
  mine 1024 500 42
  mine 2048 200 43
  HARD=("${HARD_PREFIX}512" "${HARD_PREFIX}1024" "${HARD_PREFIX}2048")
fi

# 4. the long run: from the winner, random + mined patches, two threads, alone on the cores,
# with the winner's presence weight (fit's default is 1 for a model with the head, and
# v3-sam2-nopresence trained without it)
PRESENCE_WEIGHT=${PRESENCE_WEIGHT:-$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['provenance']['presence_weight'])" \
  "$BASE/satsam.json")}
TEACHER_ARGS=()  # TEACHER=DIR|builtin: the long run distils from it (fit --teacher, weight DISTILL_WEIGHT)
if [ -n "${TEACHER:-}" ]; then TEACHER_ARGS=(--teacher "$TEACHER" --distill-weight "${DISTILL_WEIGHT:-1}"); fi
long_fit() {  # OUT BASE STEPS EPOCHS LR SEED
  local out=$1 base=$2 steps=$3 epochs=$4 lr=$5 seed=$6 resume=()
  if [ -d "$out/last" ]; then resume=(--resume); fi
  [ -f "$out/fit.json" ] || $T fit --patches "$WORK/p512" "$WORK/p1024" "$WORK/p2048" \
    "${HARD[@]}" --val "$WORK/pv512" "$WORK/pv1024" "$WORK/pv2048" \
    --out "$out" --base "$base" --train all --epochs "$epochs" \
    --steps-per-epoch $((steps / epochs)) --batch-size 8 --lr "$lr" --optimizer adamw --weight-decay 0.01 \
    --warmup-steps 300 --schedule cosine --clip-grad 1.0 --augment --seed "$seed" --select val_loss --threads 2 \
    --presence-weight "$PRESENCE_WEIGHT" --loss "${LOSS:-dicece}" --no-progress "${TEACHER_ARGS[@]}" "${resume[@]}"
}
LONG=${LONG:-long}  # the long run's directory under WORK (a second lineage, e.g. a student, takes its own)
long_fit "$WORK/$LONG" "$BASE" "$STEPS" "$EPOCHS" "${LR:-3e-4}" 8
FINAL=${FINAL:-$LONG}
LONG2_STEPS=${LONG2_STEPS:-0}
if [ "$LONG2_STEPS" -gt 0 ]; then
  long_fit "$WORK/${LONG}2" "$WORK/$LONG/model" "$LONG2_STEPS" "${LONG2_EPOCHS:-6}" "${LR2:-2e-4}" 9
  FINAL=${LONG}2
fi

# 5. post-processing per size, then the three test sets at the three sizes
tune "$WORK/$FINAL/model" "$WORK/$FINAL"
for G in a b r; do
  seed=$([ $G = a ] && echo 999 || ([ $G = b ] && echo 777 || echo 555))
  [ -f "$WORK/$G-test/test.json" ] || $T synth --style $G --out "$WORK/$G-test" --n-train 0 --n-val 0 --n-test 100 \
    --seed "$seed" --workers 2
  for S in 512 1024 2048; do
    R="$WORK/$FINAL/$G-test-$S"
    [ -s "$R.json" ] || json_out "$R.json" \
      $T evaluate "$WORK/$FINAL/model" --data "$WORK/$G-test" --size "$S" --out "$R" --no-progress --json
  done
done

if [ "${SHIP:-0}" = 1 ] && [ "${DRY:-0}" != 1 ]; then  # the checkpoint, its curves and the examples figures; MODEL.md stays
  NEW=satsam_ros/models/builtin.new
  rm -rf "$NEW" && mkdir -p "$NEW"
  cp "$WORK/$FINAL/model/"{config.json,model.safetensors,satsam.json} "$WORK/$FINAL/"{curves.png,train_log.csv} "$NEW/"
  for G in a b r; do cp "$WORK/$FINAL/$G-test-512/examples.png" "$NEW/examples-$G.png"; done
  # the error budget of the nine test runs, one row per generator (the card's figure)
  $PY -c 'import json, sys
from satsam_ros.figures import plot_error_budgets
run, out = sys.argv[1:3]
panels = [(f"style {g}, S = {s}", json.load(open(f"{run}/{g}-test-{s}.json"))["error_budget"])
          for g in "abr" for s in (512, 1024, 2048)]
plot_error_budgets(panels, out, columns=3, title="error budget on the test frames (a 999, b 777, r 555)")' \
    "$WORK/$FINAL" "$NEW/error-budget.png"
  if [ -f satsam_ros/models/builtin/MODEL.md ]; then cp satsam_ros/models/builtin/MODEL.md "$NEW/"; fi
  rm -rf satsam_ros/models/builtin && mv "$NEW" satsam_ros/models/builtin
fi
