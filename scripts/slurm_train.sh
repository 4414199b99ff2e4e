#!/bin/bash
# Train a medtasks task on a SLURM cluster: one torchrun agent per node (srun), one process per GPU,
# the nodes meeting through c10d rendezvous on the job's first node. Submit with
#
#     sbatch --nodes 2 --gpus-per-node 4 scripts/slurm_train.sh ich_classify --manifest /data/rsna/manifest.csv
#
# Everything after the task name goes to `medtasks run` (--manifest, --config, key=value overrides).
# The runs folder must be on a filesystem every node sees (rank 0 writes it; a restart reads last.pt).
# Each knob below is one line; override any with an environment variable (sbatch --export=ALL,KNOB=...).
#SBATCH --job-name=medtasks
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

TASK=${1:?usage: slurm_train.sh <task> [medtasks run options and key=value overrides]}
shift
VENV=${VENV:-.venv}                                              # the medtasks environment (make install)
RUNS_DIR=${RUNS_DIR:-runs}                                       # shared filesystem
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}         # processes per node = GPUs per node
NNODES=${NNODES:-${SLURM_NNODES:-1}}                             # nodes of the job
RDZV_PORT=${RDZV_PORT:-29500}                                    # c10d rendezvous port on the first node
RDZV_ID=${RDZV_ID:-${SLURM_JOB_ID:-medtasks}}                    # one id per job: a requeue starts afresh
MAX_RESTARTS=${MAX_RESTARTS:-1}                                  # failed workers restarted, resuming last.pt
HEAD_NODE=${HEAD_NODE:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:?not inside a SLURM job}" | head -n 1)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( ${SLURM_CPUS_PER_TASK:-$(nproc)} / GPUS_PER_NODE ))}

CMD=(srun --kill-on-bad-exit=1 "$VENV/bin/python" -m torch.distributed.run
     --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE"
     --rdzv_backend c10d --rdzv_endpoint "$HEAD_NODE:$RDZV_PORT" --rdzv_id "$RDZV_ID"
     --max-restarts "$MAX_RESTARTS"
     -m medtasks run "$TASK" --runs-dir "$RUNS_DIR" "$@")
if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "${CMD[@]}"; echo
    exit 0
fi
exec "${CMD[@]}"
