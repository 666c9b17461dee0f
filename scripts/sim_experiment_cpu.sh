#!/usr/bin/env bash
# Issue 6's comparison as run for docs/SIM_RESULTS.md (session 2) on a 2-core CPU, one step at a time:
#   demos (4 Meta-World tasks, workspace camera, 64 px) -> post-training for a fixed number of steps of
#   (a3) the pretrained INIT checkpoint (default checkpoints/tiny_sample), (b) from scratch, (c) from scratch
#   without the 3D encoder, all with training seed 0 -> seeded evaluation of each -> one table with pooled
#   differences. The seed-0 case of scripts/sim_seeds_cpu.sh (same settings: DEMOS, STEPS, THREADS, WORKERS,
#   EPISODES, INIT, TASKS, SMOKE).
#   OUT=runs/sim_cpu ./scripts/sim_experiment_cpu.sh                 (about 80 minutes on 2 cores)
#   SMOKE=1 OUT=/tmp/simcpu ./scripts/sim_experiment_cpu.sh          (a few minutes: the plumbing only)
# Finished steps are skipped, so an interrupted run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/sim_cpu} RUNS="a3 b c" exec ./scripts/sim_seeds_cpu.sh
