#!/usr/bin/env bash
# The brain-aging walkthrough of the README: synthesize the MNI152-based cohort, train, evaluate.
#
#   bash scripts/brain_walkthrough.sh [OUT]          (default OUT=brain)
#
# Settings come from the environment (defaults in brackets):
#   N [800] subjects, SIZE [128] voxels per axis of the cohort and the model, PRESET [brain_gpu], EPOCHS [300],
#   MINUTES [0 = no limit] wall-time budget of the training, WORKERS [all cores] for the cohort
#   and the preprocessing, ATTRIVAE [attrivae] the command (e.g. "python -m AttriVAELib.cli"),
#   FINETUNE_EPOCHS [0]: > 0 fine-tunes the run for that many epochs into OUT/run_ft (--init, with the
#   re-encoded attribute loss loss.reencoded_gamma 200 and lr 1e-4 → 1e-5) and evaluates that model,
#   MEASURED_EPOCHS [0]: > 0 then fine-tunes the model so far for that many epochs into OUT/run_measured
#   with the measured-thickness loss (loss.measured_gamma 30, lr 1e-4 → 1e-5) and evaluates that one,
#   LAYER [auto] the Grad-CAM layer of evaluate's attention maps, EVALUATE [1]: 0 stops after training.
# On a CPU: SIZE=64 PRESET=brain_cpu. Every step reuses what an earlier run of it finished.
set -euo pipefail
OUT=${1:-brain}
N=${N:-800}
SIZE=${SIZE:-128}
PRESET=${PRESET:-brain_gpu}
EPOCHS=${EPOCHS:-300}
MINUTES=${MINUTES:-0}
WORKERS=${WORKERS:-$(nproc)}
read -r -a CLI <<<"${ATTRIVAE:-attrivae}"
mkdir -p "$OUT"

if [ ! -f "$OUT/cohort/manifest.csv" ]; then
  "${CLI[@]}" synth-brain --out "$OUT/cohort" --n "$N" --size "$SIZE" --workers "$WORKERS" --quiet
fi

# Left-right mirroring: the MNI152 2009 template is symmetric, and so is everything the
# generator does to it, so a mirrored subject is another subject with the same attributes.
cat >"$OUT/train.yaml" <<EOF
data:
  workers: $WORKERS
  augmentation:
    flip: 0.5
    flip_axes: [2]
EOF
# train_once RUN WHAT ARGS...: start RUN with ARGS, resume it if interrupted, skip it if finished.
train_once() {
  local run=$1 what=$2
  shift 2
  if [ -f "$run/heldout.json" ]; then
    echo "$what already finished: $run"
  elif [ -f "$run/last.safetensors" ]; then
    "${CLI[@]}" train --resume "$run" --quiet
  else
    "${CLI[@]}" train --data "$OUT/cohort" --out "$run" --preset "$PRESET" --size "$SIZE" --quiet "$@"
  fi
}
train_once "$OUT/run" training --config "$OUT/train.yaml" --epochs "$EPOCHS" --max-minutes "$MINUTES"

# finetune_config FILE LOSS_LINE: the training settings plus one loss term, lr 1e-4 → 1e-5, no KL warm-up.
finetune_config() {
  cat "$OUT/train.yaml" - >"$1" <<EOF
loss:
  $2
  kl_warmup_steps: 0
optim:
  lr: 1.0e-4
  lr_schedule: cosine
  lr_min: 1.0e-5
EOF
}

MODEL="$OUT/run"
if [ "${FINETUNE_EPOCHS:-0}" -gt 0 ]; then
  finetune_config "$OUT/finetune.yaml" "reencoded_gamma: 200.0"
  train_once "$OUT/run_ft" fine-tuning --init "$MODEL" --config "$OUT/finetune.yaml" --epochs "$FINETUNE_EPOCHS"
  MODEL="$OUT/run_ft"
fi
if [ "${MEASURED_EPOCHS:-0}" -gt 0 ]; then
  finetune_config "$OUT/measured.yaml" "measured_gamma: 30.0"
  train_once "$OUT/run_measured" "measured-thickness fine-tuning" --init "$MODEL" --config "$OUT/measured.yaml" \
    --epochs "$MEASURED_EPOCHS"
  MODEL="$OUT/run_measured"
fi

if [ "${EVALUATE:-1}" = 0 ]; then
  exit 0
fi
if [ ! -f "$OUT/report/metrics.json" ]; then
  "${CLI[@]}" evaluate --model "$MODEL" --out "$OUT/report" --layer "${LAYER:-auto}"
fi
echo "evaluation report: $OUT/report/report.html"
