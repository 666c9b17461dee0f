#!/usr/bin/env bash
# Issue 13 item 4: the Meta-World comparison with several training seeds per condition, on CPU, one run
# at a time (resumable: finished trainings and evaluations are skipped).
#   conditions: a3 = post-trained from the pretrained INIT (default checkpoints/tiny_sample); b = from
#   scratch; c = from scratch without the 3D encoder; d = from INIT_NO3D, a checkpoint pretrained
#   without the 3D encoder (skipped when INIT_NO3D is not set).
#   RUNS="b@s1 c@s1 b@s2 c@s2" OUT=runs/sim_seeds ./scripts/sim_seeds_cpu.sh
#   SMOKE=1 OUT=/tmp/simseeds RUNS="b@s1 c@s1" ./scripts/sim_seeds_cpu.sh      (the plumbing in a few minutes)
# A run named without @s (a3, b, c) is trained with seed 0: scripts/sim_experiment_cpu.sh is that case.
# Each run: train post for STEPS steps with --seed N, then the seeded evaluation (EPISODES per task, the same
# evaluation seeds for every run). The report pools each condition over its seeds
# (`python -m vipa.sim.experiment report OUT/all`); PRIOR=docs/sim_results/episodes.jsonl adds the committed
# seed-0 runs (a3, b, c) of session 2 to it.
# NOISE=0.3 adds, beside the clean demonstrations, the same number with perturbed execution (the same
# episode seeds; the expert's action recorded, a noisy one executed: DART), and trains on both.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1

PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/sim_seeds}
TASKS=${TASKS:-"reach-v3 push-v3 button-press-topdown-v3 drawer-open-v3"}
RUNS=${RUNS:-"b@s1 c@s1 b@s2 c@s2 a3@s1 a3@s2"}
DEMOS=${DEMOS:-50}
STEPS=${STEPS:-3000}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
EPISODES=${EPISODES:-50}
INIT=${INIT:-checkpoints/tiny_sample}
INIT_NO3D=${INIT_NO3D:-}
NOISE=${NOISE:-}
if [ -n "${SMOKE:-}" ]; then DEMOS=2; STEPS=3; EPISODES=1; fi
mkdir -p "$OUT"

[ -f "$OUT/demos/collect.json" ] || $PY -m vipa.sim.experiment collect --tasks $TASKS --episodes "$DEMOS" \
    --size 64 --workers "$WORKERS" --out "$OUT/demos"
data=("$OUT"/demos/*.npz)
if [ -n "$NOISE" ]; then
  [ -f "$OUT/demos_noisy/collect.json" ] || $PY -m vipa.sim.experiment collect --tasks $TASKS --episodes "$DEMOS" \
      --size 64 --workers "$WORKERS" --noise "$NOISE" --out "$OUT/demos_noisy"
  data+=("$OUT"/demos_noisy/*.npz)
fi
for run in $RUNS; do
  cond=${run%@s*}; seed=0
  [ "$cond" = "$run" ] || seed=${run##*@s}  # a plain name (a3, b, c) is seed 0
  case $cond in
    a3) extra=(--init "$INIT") ;;
    b) extra=() ;;
    c) extra=(--no-3d) ;;
    d) [ -n "$INIT_NO3D" ] || { echo "skip $run: INIT_NO3D is not set" >&2; continue; }
       extra=(--init "$INIT_NO3D" --no-3d) ;;
    *) echo "unknown condition in $run (a3, b, c or d)" >&2; exit 2 ;;
  esac
  t0=$(date +%s)
  [ -f "$OUT/post_$run/final/model.safetensors" ] || $PY -m vipa.cli train post --data "${data[@]}" \
      --out "$OUT/post_$run" --steps "$STEPS" --threads "$THREADS" --seed "$seed" --no-progress "${extra[@]}"
  t1=$(date +%s)
  [ -f "$OUT/eval_$run/report.json" ] || $PY -m vipa.sim.experiment eval --run "$run=$OUT/post_$run/final" \
      --tasks $TASKS --episodes "$EPISODES" --size 64 --workers "$WORKERS" --out "$OUT/eval_$run" > /dev/null
  echo "$run: train $((t1 - t0)) s, eval $(( $(date +%s) - t1 )) s (0 = already done)" | tee -a "$OUT/timing.log"
done
mkdir -p "$OUT/all"
cat ${PRIOR:-} "$OUT"/eval_*/episodes.jsonl > "$OUT/all/episodes.jsonl"
$PY -m vipa.sim.experiment report "$OUT/all" | tee "$OUT/all/report.md"
