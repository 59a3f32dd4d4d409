#!/usr/bin/env bash
# The own-cohort walkthrough (docs/own-cohort.md) on the ACDC-like cohort: generate raw data,
# build a cohort from it with `attrivae cohort`, train, evaluate.
#
#   bash scripts/acdc_walkthrough.sh [OUT]          (default OUT=acdc)
#
# Settings come from the environment (defaults in brackets):
#   N [300] patients (two frames each), SPACING [0.7,0.7,5] mm, SEED [7], EPOCHS [36] (the measured run;
#   the cohort's train.yaml suggests 100),
#   MINUTES [0 = no limit] wall-time budget of the training, WORKERS [all cores],
#   ATTRIVAE [attrivae] the command (e.g. "python -m AttriVAELib.cli").
# Every step reuses what an earlier run of it finished.
set -euo pipefail
OUT=${1:-acdc}
N=${N:-300}
SPACING=${SPACING:-0.7,0.7,5}
SEED=${SEED:-7}
EPOCHS=${EPOCHS:-36}
MINUTES=${MINUTES:-0}
WORKERS=${WORKERS:-$(nproc)}
read -r -a CLI <<<"${ATTRIVAE:-attrivae}"
mkdir -p "$OUT"

# 1. Raw data as a user receives it: patientNNN/patientNNN_frameXX[_gt].nii.gz, Info.cfg, clinical.csv.
if [ ! -f "$OUT/raw/acdc_like.json" ]; then
  "${CLI[@]}" synth-acdc --out "$OUT/raw" --n "$N" --spacing "$SPACING" --seed "$SEED" --workers "$WORKERS" --quiet
fi

# 2. The cohort: pair images with segmentations, measure the labels, merge the clinical table.
#    Running it again resumes it (only new or changed pairs are measured).
"${CLI[@]}" cohort --images "$OUT/raw" --labels "$OUT/raw" \
  --label lv_cavity=3 --label myocardium=2 --label outer=1 \
  --clinical "$OUT/raw/clinical.csv" --id-column Patient --class-column Group \
  --attributes lv_cavity_volume_ml myocardium_thickness_mm myocardium_volume_ml lv_cavity_sphericity \
  --out "$OUT/cohort" --workers "$WORKERS" --quiet

# 3. Train with the cohort's suggested settings (crop to the heart, one field of view, augmentations).
if [ -f "$OUT/run/heldout.json" ]; then
  :
elif [ -f "$OUT/run/last.safetensors" ]; then
  "${CLI[@]}" train --resume "$OUT/run" --quiet
else
  "${CLI[@]}" train --data "$OUT/cohort" --config "$OUT/cohort/train.yaml" --preset fast_cpu \
    --epochs "$EPOCHS" --max-minutes "$MINUTES" --out "$OUT/run" --quiet
fi

# 4. Held-out scores (test split: patients never seen in training) and the report.
"${CLI[@]}" evaluate --model "$OUT/run" --out "$OUT/eval" --counterfactual-subjects 0
python3 - "$OUT/eval/metrics.json" <<'EOF'
import json
import sys

metrics = json.load(open(sys.argv[1], encoding="utf-8"))
interp = metrics["disentanglement"]["interpretability"]
print(f"held-out interpretability ({metrics['split']} split, n={metrics['n']}): {interp['score']:.3f}")
for name, r2 in interp["per_attribute"].items():
    print(f"  {name:<28} R² {r2:.3f}  at dim {interp['best_dims'][name]} (intended {interp['intended_dims'][name]}), "
          f"latent ρ {metrics['latent_spearman'][name]:+.3f}")
for key, item in metrics.get("classification", {}).items():
    if isinstance(item, dict) and "value" in item:
        print(f"  classification {key}: {item['value']:.3f}")
EOF
