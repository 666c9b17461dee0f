#!/usr/bin/env bash
# Issue 6's comparison as run for docs/SIM_RESULTS.md (session 2) on a 2-core CPU, one step at a time:
#   demos (4 Meta-World tasks, workspace camera, 64 px) -> post-training for a fixed number of steps of
#   (a3) the pretrained INIT checkpoint (default checkpoints/tiny_sample), (b) from scratch, (c) from scratch
#   without the 3D encoder -> seeded evaluation of each -> one table with pooled differences.
#   OUT=runs/sim_cpu ./scripts/sim_experiment_cpu.sh                 (about 80 minutes on 2 cores)
#   SMOKE=1 OUT=/tmp/simcpu ./scripts/sim_experiment_cpu.sh          (a few minutes: the plumbing only)
# Finished steps are skipped, so an interrupted run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1

PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/sim_cpu}
TASKS=${TASKS:-"reach-v3 push-v3 button-press-topdown-v3 drawer-open-v3"}
DEMOS=${DEMOS:-50}
STEPS=${STEPS:-3000}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
EPISODES=${EPISODES:-50}
INIT=${INIT:-checkpoints/tiny_sample}
if [ -n "${SMOKE:-}" ]; then DEMOS=2; STEPS=3; EPISODES=1; fi
mkdir -p "$OUT"

[ -f "$OUT/demos/collect.json" ] || $PY -m vipa.sim.experiment collect --tasks $TASKS --episodes "$DEMOS" \
    --size 64 --workers "$WORKERS" --out "$OUT/demos"
post() {  # name, extra args
  local name=$1; shift
  [ -f "$OUT/post_$name/final/model.safetensors" ] || $PY -m vipa.cli train post --data "$OUT"/demos/*.npz \
      --out "$OUT/post_$name" --steps "$STEPS" --threads "$THREADS" --seed 0 --no-progress "$@"
}
post a3 --init "$INIT"
post b
post c --no-3d
for name in a3 b c; do
  [ -f "$OUT/eval_$name/report.json" ] || $PY -m vipa.sim.experiment eval --run "$name=$OUT/post_$name/final" \
      --tasks $TASKS --episodes "$EPISODES" --size 64 --workers "$WORKERS" --out "$OUT/eval_$name" > /dev/null
done
mkdir -p "$OUT/all"
cat "$OUT"/eval_{a3,b,c}/episodes.jsonl > "$OUT/all/episodes.jsonl"
$PY -m vipa.sim.experiment report "$OUT/all"
