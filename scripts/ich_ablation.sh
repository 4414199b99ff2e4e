#!/usr/bin/env bash
# The ich_classify ablation of tasks/ich_classify.md on the SYNTHETIC benchmark (demo profile):
# one run per configuration, each adding one technique of the source report (or slice context),
# then `medtasks compare` over all of them (first run = reference).
#
#   scripts/ich_ablation.sh [RUNS_DIR]        (default runs/ablation; ~1.5 h on 2 CPU cores)
#
# The last row is the 5-fold demo run (cv.folds=5, best fold) with the sequence head trained on
# its out-of-fold logits; its wall time and peak memory are the task card's 5-fold figures
# (RUNS_DIR/<row>/time.txt: elapsed seconds and peak RSS in KB, from /usr/bin/time).
set -euo pipefail
RUNS=${1:-runs/ablation}
MT=${MEDTASKS:-medtasks}
# The profile the task card's table was measured on (the demo profile before 2.5-D / cosine / bfloat16):
PROFILE=(synth.n_patients=270 "data.split=[0.6,0.2,0.2]" train.epochs=6 scheduler.name=plateau train.early_stopping_patience=3 train.cpu_bf16=false
         train.channels_last=false augment.noise_std=0.02 augment.erasing_prob=0.25 "augment.resized_crop_scale=[0.8,1.0]"
         synth.matrix=256 input.size=128 model.backbone=resnet18 augment.rotate_deg=10 augment.brightness=0.1
         augment.contrast=0.1)
BASE=("${PROFILE[@]}" model.use_position=false sampling.per_class=null sampling.normal=null loss.mixup_alpha=0
      loss.label_smoothing=0 calibration.temperature=false calibration.thresholds=false eval.tta=false input.context=0)
declare -a NAMES=() ARGS=()
add() { NAMES+=("$1"); ARGS+=("$2"); }
add 1-base              ""
add 2-position          "model.use_position=true"
add 3-balanced          "model.use_position=true sampling.per_class=250 sampling.normal_ratio=1.0"
add 4-mixup-ls          "model.use_position=true sampling.per_class=250 sampling.normal_ratio=1.0 loss.mixup_alpha=0.2 loss.label_smoothing=0.05"
add 5-calibrated        "model.use_position=true sampling.per_class=250 sampling.normal_ratio=1.0 loss.mixup_alpha=0.2 loss.label_smoothing=0.05 calibration.temperature=true calibration.thresholds=true"
add 6-tta               "model.use_position=true sampling.per_class=250 sampling.normal_ratio=1.0 loss.mixup_alpha=0.2 loss.label_smoothing=0.05 calibration.temperature=true calibration.thresholds=true eval.tta=true"
add 7-context           "model.use_position=true sampling.per_class=250 sampling.normal_ratio=1.0 loss.mixup_alpha=0.2 loss.label_smoothing=0.05 calibration.temperature=true calibration.thresholds=true eval.tta=true input.context=1"
add 8-cv5-sequence      "model.use_position=true sampling.per_class=250 sampling.normal_ratio=1.0 loss.mixup_alpha=0.2 loss.label_smoothing=0.05 calibration.temperature=true calibration.thresholds=true eval.tta=true input.context=1 cv.folds=5 sequence.enabled=true"
dirs=()
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]}
  # shellcheck disable=SC2086
  mkdir -p "$RUNS/$name"
  /usr/bin/time -f "%e s elapsed, %M KB peak RSS" -o "$RUNS/$name/time.txt" \
    "$MT" run ich_classify --runs-dir "$RUNS/$name" "${BASE[@]}" ${ARGS[$i]}
  dirs+=("$(ls -d "$RUNS/$name"/ich_classify/*/ | tail -1)")
done
"$MT" compare "${dirs[@]}" --out "$RUNS/compare"
