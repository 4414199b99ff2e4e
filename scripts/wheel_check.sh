#!/usr/bin/env bash
# The installed package, as a user gets it: build the wheel, install it (not editable) into a fresh virtual
# environment, and from a folder outside the checkout run `medtasks list`, `python -m medtasks list`, a tiny
# `medtasks run` (the embedded default, a few steps) and `medtasks predict` on one of its synthetic inputs.
# Usage: scripts/wheel_check.sh   (run by .ci/run after `make test`; needs .venv from `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PY=${PY:-python3}
TORCH_PIN=${TORCH_PIN:-"torch==2.14.1 torchvision==0.29.1"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)

.venv/bin/python -m pip wheel --no-deps --no-build-isolation -q -w "$work/dist" .
wheel=$(ls "$work"/dist/medtasks-*.whl)
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) kB)"
"$PY" -m venv "$work/venv"
v="$work/venv/bin"
"$v/pip" install -q --upgrade pip
# shellcheck disable=SC2086
"$v/pip" install -q $TORCH_PIN
"$v/pip" install -q "$wheel"
# as the Makefile: ultralytics' GUI opencv shares cv2/ with the headless wheel; put the headless binary back
"$v/pip" install -q --force-reinstall --no-deps \
  "opencv-python-headless==$("$v/python" -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')"
echo "installed in $(( $(date +%s) - t0 )) s"

cd "$work"   # outside the checkout: nothing of it on the path
test "$("$v/python" -c 'import medtasks, pathlib; print(pathlib.Path(medtasks.__file__).parent.parent)')" = "$work/venv/lib/$("$v/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages"
"$v/medtasks" list
"$v/python" -m medtasks list > /dev/null
"$v/medtasks" config phe_classify --demo
overrides=$("$v/python" - "$repo/tests/tasks/tiny_profiles.yaml" <<'PYEOF'
import sys, yaml
print(" ".join(yaml.safe_load(open(sys.argv[1]))["phe_classify"]))
PYEOF
)
# shellcheck disable=SC2086
MEDTASKS_CACHE="$work/cache" "$v/medtasks" run phe_classify $overrides train.steps_per_epoch=2 --runs-dir "$work/runs"
run=$(ls -d "$work"/runs/phe_classify/*)
test -s "$run/metrics.json" && test -s "$run/report.html" && test -s "$run/run.log"
image=$("$v/python" -c "import pandas as pd; m = pd.read_csv('$run/manifest.csv'); print(m.loc[m.split == 'test', 'image'].iloc[0])")
"$v/medtasks" predict phe_classify --run "$run" --input "$image" --out "$work/predict"
test "$(wc -l < "$work/predict/predictions.csv")" -ge 2
echo "wheel check passed in $(( $(date +%s) - t0 )) s"
