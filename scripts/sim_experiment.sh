#!/usr/bin/env bash
# The simulator experiment of issue 6, exactly as run for docs/SIM_RESULTS.md:
#   demos (scripted experts, 4 Meta-World tasks) -> (a) tiny pretrained through stage 1 + 2 on
#   synthetic human-video episodes, then post-trained; (b) post-trained from scratch; (c) from
#   scratch without the 3D encoder -> seeded evaluation of a, b, c on the same episodes -> table.
# Everything is sized by the variables below (defaults: the full run on a 16-core machine).
#   OUT=runs/sim ./scripts/sim_experiment.sh
#   SMOKE=1 OUT=/tmp/simsmoke ./scripts/sim_experiment.sh      (a tiny end-to-end check)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

PY=${PY:-python}
OUT=${OUT:-runs/sim_experiment}
TASKS=${TASKS:-"reach-v3 push-v3 button-press-topdown-v3 drawer-open-v3"}
SIZE=${SIZE:-64}                    # camera px (the tiny model's input size)
DEMOS=${DEMOS:-50}                  # expert demonstrations per task
COLLECT_WORKERS=${COLLECT_WORKERS:-8}
PRE_EPISODES=${PRE_EPISODES:-240}   # synthetic human-video episodes for stages 1 + 2
PRE_STEPS1=${PRE_STEPS1:-400}
PRE_STEPS2=${PRE_STEPS2:-400}
PRE_THREADS=${PRE_THREADS:-8}
PRE_BUDGET_S=${PRE_BUDGET_S:-}      # if set: seconds of stage 1 + 2 training (steps calibrated), instead of the steps
INIT=${INIT:-}                      # an existing stage-2 checkpoint for (a); empty = pretrain here
POST_BUDGET_S=${POST_BUDGET_S:-200} # wall-clock training budget of each post-training run (same for a, b, c)
POST_THREADS=${POST_THREADS:-5}     # a, b, c train in parallel
POST_BATCH=${POST_BATCH:-32}
SEED=${SEED:-0}
EVAL_EPISODES=${EVAL_EPISODES:-50}
EVAL_WORKERS=${EVAL_WORKERS:-15}
EVAL_DEADLINE_S=${EVAL_DEADLINE_S:-180}
MAX_STEPS=${MAX_STEPS:-200}         # evaluation episode length (Meta-World's experts need < 200)
COLLECT_MAX_STEPS=${COLLECT_MAX_STEPS:-200}
REPLAN=${REPLAN:-8}
if [ -n "${SMOKE:-}" ]; then
  DEMOS=2; PRE_EPISODES=8; PRE_STEPS1=4; PRE_STEPS2=4; POST_BUDGET_S=10; EVAL_EPISODES=1; MAX_STEPS=40
  COLLECT_WORKERS=4; EVAL_WORKERS=4; EVAL_DEADLINE_S=120
fi
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/timeline.log"; }

stamp "collect $DEMOS demos/task and pretrain (a) in parallel"
$PY -m vipa.sim.experiment collect --tasks $TASKS --episodes "$DEMOS" --size "$SIZE" --max-steps "$COLLECT_MAX_STEPS" \
    --seed "$SEED" --workers "$COLLECT_WORKERS" --out "$OUT/demos" > "$OUT/collect.log" 2>&1 &
PID_COLLECT=$!
if [ -z "$INIT" ]; then
  $PY scripts/sim_pretrain.py --out "$OUT/pretrain" --episodes "$PRE_EPISODES" --steps1 "$PRE_STEPS1" \
      --steps2 "$PRE_STEPS2" ${PRE_BUDGET_S:+--budget-s "$PRE_BUDGET_S"} --seed "$SEED" --workers 4 --threads "$PRE_THREADS" > "$OUT/pretrain.log" 2>&1 &
  PID_PRE=$!
  INIT="$OUT/pretrain/stage2/final"
fi
wait $PID_COLLECT
stamp "collect done: $(tr -s ' \n' ' ' < "$OUT/demos/collect.json")"
if [ -n "${PID_PRE:-}" ]; then
  if wait $PID_PRE; then stamp "pretrain done"; else stamp "pretraining FAILED (see pretrain.log)"; fi
fi
DATA=$(ls "$OUT"/demos/*.npz)

stamp "post-train a (from $INIT), b (scratch), c (scratch, no 3D): ${POST_BUDGET_S}s each, in parallel"
post() {  # name, extra args
  local name=$1; shift
  $PY -m vipa.cli train post --data $DATA --out "$OUT/post_$name" --budget-s "$POST_BUDGET_S" --batch-size "$POST_BATCH" \
      --seed "$SEED" --threads "$POST_THREADS" --no-progress "$@" > "$OUT/post_$name.log" 2>&1 \
      || stamp "post-train $name FAILED (see post_$name.log)"
}
RUNS=()
if [ -d "$INIT" ]; then post a --init "$INIT" & RUNS+=(--run "a=$OUT/post_a/final"); fi
post b & RUNS+=(--run "b=$OUT/post_b/final")
post c --no-3d & RUNS+=(--run "c=$OUT/post_c/final")
wait
stamp "post-training done"
OK_RUNS=()
for ((i = 1; i < ${#RUNS[@]}; i += 2)); do [ -d "${RUNS[i]#*=}" ] && OK_RUNS+=(--run "${RUNS[i]}"); done

stamp "evaluate ${OK_RUNS[*]} on $EVAL_EPISODES seeded episodes/task (deadline ${EVAL_DEADLINE_S}s)"
$PY -m vipa.sim.experiment eval "${OK_RUNS[@]}" --tasks $TASKS --episodes "$EVAL_EPISODES" --size "$SIZE" \
    --max-steps "$MAX_STEPS" --replan "$REPLAN" --seed "$SEED" --workers "$EVAL_WORKERS" \
    --deadline-s "$EVAL_DEADLINE_S" --out "$OUT/eval" 2> "$OUT/eval.log" | tee "$OUT/table.md"
stamp "done"
