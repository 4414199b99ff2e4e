"""Distributed data-parallel runs: PyTorch's ``torch.distributed``, launched by ``torchrun`` (design section 4).

One code path for one process and many: every helper here is the identity (or a no-op) when the
process group is not initialised, so a task never branches on it.

- :func:`init_from_env` starts the process group from torchrun's environment (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...): NCCL when the run's device is CUDA, Gloo on
  CPU; the CUDA device of a process is ``cuda:LOCAL_RANK``.
- :func:`shard_train_loader` / :func:`shard_eval_loader` rebuild a task's loader with a distributed
  sampler. Training uses torch's ``DistributedSampler`` (shuffled per epoch, padded to equal shards as
  DDP needs); evaluation uses MONAI's ``DistributedSampler(even_divisible=False)``: shard ``r`` holds
  cases ``r, r+N, r+2N...`` and nothing is padded, so no case is scored twice.
  :func:`gather_rows` puts the shards' outputs back into the split's own order.
- rank 0 alone writes the run directory (:func:`is_main`; the ``medtasks.io.atomic`` writers are
  switched off on the other ranks by ``api``).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: environment variables torchrun sets for every worker
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def local_world_size() -> int:
    """Processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory, logs at INFO and draws progress bars."""
    return rank() == 0


def restart_count() -> int:
    """How many times torchrun restarted the workers of this launch (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def launch_key() -> str:
    """What identifies one torchrun launch across its restarts: the rendezvous id, host and the local
    agent's pid (the workers' parent; a new ``torchrun`` or SLURM requeue is a new launch)."""
    return f"{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}@{socket.gethostname()}:{os.getppid()}"


def init_from_env(device: str = "auto", timeout_min: float = 60.0) -> bool:
    """Join the process group torchrun describes in the environment; False (nothing done) outside torchrun.

    ``device`` is the run's ``train.device``: ``cpu`` (or no GPU visible) -> Gloo, else NCCL with this
    process on ``cuda:LOCAL_RANK``. ``timeout_min`` bounds every collective (rank 0 may work alone a
    while, e.g. writing a fold's files, while the others wait at the next one).
    """
    if env_world_size() <= 1:
        return False
    if is_distributed():
        return True
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} not set: start distributed runs "
                           "with torchrun (or `medtasks run <task> --nproc N`)")
    if "SLURM_JOB_ID" in os.environ and "LOCAL_RANK" in os.environ:
        # ignite (0.5) overwrites LOCAL_RANK with SLURM_LOCALID whenever SLURM_JOB_ID is set; under srun +
        # torchrun that is the srun task's id (0 for every worker of a node), so keep torchrun's value there
        os.environ["SLURM_LOCALID"] = os.environ["LOCAL_RANK"]
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        if local_rank() >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank()} but only {torch.cuda.device_count()} CUDA device(s) are "
                               "visible: use --nproc_per_node <= the GPUs of this machine")
        torch.cuda.set_device(local_rank())
    timeout = datetime.timedelta(minutes=timeout_min)
    dist.init_process_group("nccl" if cuda else "gloo", store=_attempt_store(timeout), rank=int(os.environ["RANK"]),
                            world_size=env_world_size(), timeout=timeout)
    if not is_main():  # one voice on the terminal: the other ranks run rank 0's code and say only errors
        logging.disable(logging.WARNING)
    log.info("distributed: %d processes (%s), this is rank %d", world_size(), dist.get_backend(), rank())
    return True


def _attempt_store(timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store of ``env://`` with this attempt's own key prefix.

    Measured reason: after a ``torchrun --max-restarts`` restart the workers meet again in the store the
    agent kept, where the killed attempt's keys still are; Gloo's mesh then dialled the dead rank 0's old
    port ("connectFullMesh failed ... Connection refused", torch 2.14, pytorch/pytorch#135712). Prefixing
    the keys with the restart count (the same on every worker of one attempt) keeps attempts apart.
    """
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent serves the store
    store = dist.TCPStore(host, port, env_world_size(), is_master=(not agent and int(os.environ["RANK"]) == 0),
                          timeout=timeout, multi_tenant=not agent)
    return dist.PrefixStore(f"medtasks/attempt-{restart_count()}", store)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(shards: list[torch.Tensor], items: int | None = None) -> torch.Tensor:
    """Row tensors of strided shards (shard ``r`` = items ``r, r+N, ...``) back into one tensor.

    When every item is one row (``items`` = the rows, or None) the rows come back in the split's order;
    when an item is several rows (a whole series scored slice by slice) the shards are concatenated in rank
    order: the same rows, each once, in another order (every epoch metric here is order-free).
    """
    n, total = len(shards), sum(int(s.shape[0]) for s in shards)
    if items is not None and items != total:
        return torch.cat(shards)
    out = torch.empty((total, *shards[0].shape[1:]), dtype=shards[0].dtype)
    for r, shard in enumerate(shards):
        if shard.shape[0] != len(range(r, total, n)):
            raise ValueError(f"shard {r} has {shard.shape[0]} rows; a strided split of {total} over {n} has "
                             f"{len(range(r, total, n))}")
        out[r::n] = shard
    return out


def _loader_kwargs(loader: Any) -> dict[str, Any]:
    return {"batch_size": loader.batch_size, "num_workers": loader.num_workers, "collate_fn": loader.collate_fn,
            "pin_memory": loader.pin_memory}


def _is_shuffled(loader: Any) -> bool:
    return isinstance(getattr(loader, "sampler", None), torch.utils.data.RandomSampler)


def shard_train_loader(loader: Any, seed: int) -> Any:
    """``loader`` over this rank's shard of the training set (identity in one process).

    torch's ``DistributedSampler`` (shuffled with ``seed`` + the epoch set by the engine when the task's
    loader shuffled); its padding (equal shards, required by DDP) only repeats training samples.
    """
    if not is_distributed():
        return loader
    from monai.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    n = len(loader.dataset)
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(),
                                 shuffle=_is_shuffled(loader), seed=int(seed), drop_last=False)
    per_rank = len(sampler)
    drop_last = bool(loader.drop_last and per_rank > loader.batch_size)
    if per_rank < loader.batch_size:
        log.warning("distributed: %d training samples over %d processes leave %d per process, fewer than the "
                    "batch size %d", n, world_size(), per_rank, loader.batch_size)
    return DataLoader(loader.dataset, sampler=sampler, drop_last=drop_last, **_loader_kwargs(loader))


def shard_eval_loader(loader: Any) -> tuple[Any, bool]:
    """``(loader, sharded)``: ``loader`` over this rank's strided, unpadded shard of an evaluation set.

    Not sharded (every rank evaluates everything; ``sharded=False``) in one process, or when the set has
    fewer cases than processes (a rank would get none).
    """
    if not is_distributed() or len(loader.dataset) < world_size():
        return loader, False
    from monai.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(loader.dataset, even_divisible=False, num_replicas=world_size(), rank=rank(),
                                 shuffle=False)
    return DataLoader(loader.dataset, sampler=sampler, drop_last=False, **_loader_kwargs(loader)), True


def wrap_ddp(network: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``network`` in ``DistributedDataParallel`` (identity in one process)."""
    if not is_distributed():
        return network
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids, find_unused_parameters=find_unused_parameters)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (BatchNorm running statistics) on every rank (no-op in one process).

    DDP broadcasts them at the start of each training forward, then every rank updates its own copy on
    its own batch: after the epoch they differ. Validation runs this first, so each rank scores its shard
    with the network rank 0 saves.
    """
    if is_distributed():
        for buf in module.buffers():
            dist.broadcast(buf.data, src=src)


def mean_across_ranks(total: float, count: int) -> float:
    """The mean of values summed (``total``) over ``count`` items on each rank, over all ranks."""
    parts = all_gather_object((float(total), int(count)))
    n = sum(c for _, c in parts)
    return sum(t for t, _ in parts) / n if n else float("nan")
