#!/usr/bin/env bash
# Reproduces checkpoints/tiny_sample: synthetic Hand3D episodes -> tiny stage 1 -> tiny stage 2
# (init from stage 1), both without point-map dropout and without the RGB point-estimate head -> the
# head fitted alone -> stage 2 continued with the geometry token, the ordinal motion-token loss (#13
# item 3) and point-map dropout (step 3) -> continued again with more replayed QA (step 4) ->
# held-out evaluation per input mode (point map from depth + K; RGB
# only) -> copy of the final checkpoint. Training the RGB-only parts from stage 1 halved the readout's
# precision with depth at this budget and gave no better RGB-only mode (tiny_sample/README.md).
# Overridable for a quick check: EPISODES, MAX_EPISODES, STEPS1, STEPS2, STEPS3, LR3, REPLAY3, LM3, SIGMA,
# STEPS4 (a list; empty = no step 4), LR4, REPLAY4,
# GEO_FEATURES, HEAD_STEPS, WORK, DEST, THREADS.
# S2_FROM=CHECKPOINT skips stages 1 and 2 (and the head's fit before step 3) and continues from that
# stage-2 checkpoint (how the committed checkpoint was made: S2_FROM = checkpoints/tiny_sample at
# e835091, the e7a1556 stage-2 checkpoint with the head fitted; step 3 in session 10, step 4 in 11).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPISODES=${EPISODES:-300}        # generated (seeds 0..EPISODES-1), 96x96, 32 frames; 20% held out
MAX_EPISODES=${MAX_EPISODES:-240} # training episodes used (all 240 of the 80% training split)
STEPS1=${STEPS1:-1200}
STEPS2=${STEPS2:-400}              # stage 2 replays stage-1 QA (config stage2_replay), so QA survives it
STEPS3=${STEPS3:-1200}             # stage 2 continued with the geometry token
REPLAY3=${REPLAY3:-1.0}            # ... with as many replayed stage-1 QA samples as motion samples
LM3=${LM3---lm-per-sample}         # ... and the text loss per sample (LM3= : per token)
LR3=${LR3:-1e-3}
STEPS4=${STEPS4-600 900}           # step 4: stage 2 continued again, these runs one after another
LR4=${LR4:-5e-4}
REPLAY4=${REPLAY4:-3.0}            # ... with three replayed QA samples per motion sample
HEAD_STEPS=${HEAD_STEPS:-300}     # the point-estimate head's fit, batch 64
SIGMA=${SIGMA:-16}                 # motion-token labels: Gaussian over neighbouring bins, std in bins (~1 mm each)
# The geometry token's encoding: fourier (sin / cos of its numbers) reads centimetres far better than
# raw metres (README: generated text).
GEO_FEATURES=${GEO_FEATURES:-fourier}
S2_FROM=${S2_FROM:-}
THREADS=${THREADS:-2}
START=$(date +%s)
WORK=${WORK:-runs/tiny_sample}
DEST=${DEST:-checkpoints/tiny_sample}

$PY scripts/train_synthetic_data.py "$WORK/data" --episodes "$EPISODES" --size 96 --frames 32
if [ -z "$S2_FROM" ]; then
  $PY -m vipa.cli train stage1 --config tiny --data "$WORK/data" --out "$WORK/s1" --steps "$STEPS1" \
      --max-episodes "$MAX_EPISODES" --threads "$THREADS" --no-progress --pointmap-dropout 0 --no-mono-points
  $PY -m vipa.cli train stage2 --config tiny --data "$WORK/data" --out "$WORK/s2" --steps "$STEPS2" \
      --max-episodes "$MAX_EPISODES" --threads "$THREADS" --init "$WORK/s1/final" --no-progress --pointmap-dropout 0
  echo "training (stage 1 + stage 2) took $(( $(date +%s) - START )) s including data generation"
  $PY -m vipa.cli eval "$WORK/s1/final" --data "$WORK/data" --out "$WORK/eval_s1" --threads "$THREADS" --max-qa 300 --max-motion 200
  # the RGB point-estimate head, fitted alone (every other tensor as stage 2 left it)
  H0=$(date +%s)
  $PY scripts/fit_point_head.py "$WORK/s2/final" --data "$WORK/data" --out "$WORK/s2h" --threads "$THREADS" \
      --steps "$HEAD_STEPS"
  echo "point head before step 3 took $(( $(date +%s) - H0 )) s"
  S2_FROM="$WORK/s2h"
fi
# The text outputs (#13 item 3): the readout's pointers, B - A, |B - A| and trajectory enter the LLM as one
# token before the text (geometry_token; its embedding starts fresh), motion-token labels are Gaussian
# over neighbouring bins (motion_label_sigma), and the checkpoint decodes motion tokens by expectation
# under a prior around its own numeric trajectory ("readout" decoding, vipa.infer.constrained).
# continue_stage2 OUT STEPS LR REPLAY INIT: stage 2 continued with the geometry token (steps 3 and 4)
continue_stage2() {
  local t0
  t0=$(date +%s)
  $PY -m vipa.cli train stage2 --config tiny --data "$WORK/data" --out "$1" --steps "$2" --lr "$3" \
      --max-episodes "$MAX_EPISODES" --threads "$THREADS" --init "$5" --no-progress \
      --geometry-token --geometry-features "$GEO_FEATURES" --motion-label-sigma "$SIGMA" --motion-decoding readout \
      --stage2-replay "$4" $LM3
  echo "stage 2 continued into $1 ($2 steps) took $(( $(date +%s) - t0 )) s"
}
continue_stage2 "$WORK/s2g" "$STEPS3" "$LR3" "$REPLAY3" "$S2_FROM"
# Step 4 (session 11): stage 2 continued with three replayed QA samples per motion sample, one run per
# number in STEPS4 (each with its own warm-up and cosine), so the generated text learns to read the
# geometry token (held-out text 0.091 -> 0.041 m). STEPS4= skips it.
LAST="$WORK/s2g/final"
k=0
for n4 in $STEPS4; do
  k=$((k + 1))
  continue_stage2 "$WORK/s2t$k" "$n4" "$LR4" "$REPLAY4" "$LAST"
  LAST="$WORK/s2t$k/final"
done
# The RGB-only point-estimate head (mono_points): fitted before step 3 above (or present in S2_FROM), so
# step 3 trained it jointly and this step copies the checkpoint as it is; an S2_FROM without the head
# gets it fitted here.
P0=$(date +%s)
$PY scripts/fit_point_head.py "$LAST" --data "$WORK/data" --out "$WORK/mono" --threads "$THREADS" \
    --steps "$HEAD_STEPS" --keep-if-present
echo "point head took $(( $(date +%s) - P0 )) s"
# One evaluation of the final checkpoint per input mode; its first mode (points) is eval_report.json.
$PY -m vipa.cli eval "$WORK/mono" --data "$WORK/data" --out "$WORK/eval_by_inputs" --threads "$THREADS" \
    --max-qa 300 --max-motion 200 --inputs points rgb
mkdir -p "$DEST"
# the point head's history: S2_FROM's fit (if it had one), then this run's record
cat $( [ -f "$S2_FROM"/metrics_point_head.jsonl ] && echo "$S2_FROM"/metrics_point_head.jsonl ) \
    "$WORK"/mono/metrics_point_head.jsonl > "$WORK"/metrics_point_head.jsonl
cp "$WORK"/mono/{model.safetensors,config.json,tokenizer.json} "$WORK"/metrics_point_head.jsonl "$DEST"/
cp "$WORK"/eval_by_inputs/report.json "$DEST"/eval_report.json
[ -f "$WORK"/eval_s1/report.json ] && cp "$WORK"/eval_s1/report.json "$DEST"/eval_report_stage1.json
cp "$WORK"/eval_by_inputs/report.json "$DEST"/eval_report_by_inputs.json
S4LOGS=""
for ((j = 1; j <= k; j++)); do S4LOGS="$S4LOGS $WORK/s2t$j/metrics.jsonl"; done
if [ -f "$WORK"/s1/metrics.jsonl ]; then
  cat "$WORK"/s1/metrics.jsonl "$WORK"/s2/metrics.jsonl "$WORK"/s2g/metrics.jsonl $S4LOGS > "$DEST"/metrics.jsonl
else  # continued from S2_FROM: its stage 1-2 curves, then the continuations'
  cat "$S2_FROM"/metrics.jsonl "$WORK"/s2g/metrics.jsonl $S4LOGS > "$DEST"/metrics.jsonl.new && mv "$DEST"/metrics.jsonl.new "$DEST"/metrics.jsonl
fi
echo "wrote $DEST in $(( $(date +%s) - START )) s"
