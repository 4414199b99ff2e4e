#!/bin/bash
# Every task's paper profile for a few AMP training steps on the GPU, plus one DDP run over NCCL:
# step time, images/s and peak GPU memory per task (scripts/gpu_check.py --help for the options).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${VENV:-.venv}/bin/python" scripts/gpu_check.py "$@"
