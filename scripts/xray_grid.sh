#!/usr/bin/env bash
# The chest X-ray report's experiment grid on the SYNTHETIC radiographs (demo data):
# ResNet18 / VGG16 x CE / focal x linear_probe / partial / finetune, then `medtasks compare` over all 12.
#
#   scripts/xray_grid.sh [RUNS_DIR]        (default runs/xray_grid; ~25 min on 2 CPU cores; re-running it
#                                           reuses the finished runs and does the rest)
#
# Every run: the demo profile (from scratch, no ImageNet weights offline) at 64 px and 4 epochs, so VGG16 fits
# the CPU budget; "partial" freezes VGG16 features 1-30 (the report's run) and ResNet18's stem + layer1-2.
# Without pretrained weights a frozen backbone is a random feature extractor: the linear_probe / partial rows
# measure that, not ImageNet transfer (the task card says so).
set -euo pipefail
RUNS=${1:-runs/xray_grid}
MT=${MEDTASKS:-medtasks}
COMMON=(input.size=64 train.epochs=4 train.early_stopping_patience=0)
dirs=()
for arch in resnet18 vgg16; do
  if [ "$arch" = vgg16 ]; then FREEZE='[backbone.features.1-30]'; else FREEZE='[backbone.conv1,backbone.bn1,backbone.layer1,backbone.layer2]'; fi
  for loss in ce focal; do
    for mode in linear_probe partial finetune; do
      name="$arch-$loss-$mode"
      extra=()
      [ "$mode" = partial ] && extra=("model.freeze=$FREEZE")
      mkdir -p "$RUNS/$name"
      if ls "$RUNS/$name"/xray_classify/*/metrics.json >/dev/null 2>&1; then  # finished earlier: reuse it
        dirs+=("$(dirname "$(ls "$RUNS/$name"/xray_classify/*/metrics.json | tail -1)")/")
        continue
      fi
      /usr/bin/time -f "%e s elapsed, %M KB peak RSS" -o "$RUNS/$name/time.txt" \
        "$MT" run xray_classify --runs-dir "$RUNS/$name" "${COMMON[@]}" "model.backbone=$arch" "loss.name=$loss" \
        "model.transfer=$mode" "${extra[@]}"
      dirs+=("$(ls -d "$RUNS/$name"/xray_classify/*/ | tail -1)")
    done
  done
done
"$MT" compare "${dirs[@]}" --out "$RUNS/compare"
