"""The random state of a training, saved in ``last.pt`` so that a resumed run continues it exactly.

A run resumed from ``last.pt`` must draw what the uninterrupted run would have drawn next: the
shuffle order (torch's global generator, or the distributed sampler's seed + epoch), the random
augmentations (each MONAI ``Randomizable`` transform's own ``RandomState``, reached the way
``monai.data.utils.set_rnd`` reaches them), dropout (torch's global and CUDA generators), numpy's and
Python's global generators and any private generator of the training batches (MixUp's). ignite's
``Checkpoint`` saves network, optimizer and engine state but none of these; :class:`TrainingRng` is
the missing piece, an object with ``state_dict`` / ``load_state_dict`` that ``Checkpoint`` saves and
loads beside the others.

With several processes each rank has its own streams: ``state_dict`` gathers every rank's state into
the one file rank 0 writes (ignite calls it on every rank) and each rank loads its own. A run resumed
with another number of processes cannot continue the streams; it says so and goes on.

Everything is stored as tensors, lists and strings, so ``torch.load(weights_only=True)`` reads it.

Checked end to end: a one-process run SIGKILLed during epoch 2 and continued with ``--resume``
(``tests/engine/test_resume.py``; also the phe_classify demo profile, 3 epochs, killed after 2 of epoch 2's
15 iterations: history.csv and metrics.json equal to the uninterrupted run's, seconds aside) and a DDP rank
killed mid-epoch (``tests/engine/test_distributed.py``).
"""

from __future__ import annotations

import logging
import random
from typing import Any, Iterable

import numpy as np
import torch

from medtasks.engine import distributed

log = logging.getLogger(__name__)


def _randomizables(root: Any) -> list[Any]:
    """Every MONAI ``Randomizable`` reachable from ``root`` (lists, tuples, dicts, attributes), in a fixed order."""
    from monai.transforms import Randomizable

    found: list[Any] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if depth > 12 or id(obj) in seen or isinstance(obj, (str, bytes, int, float, torch.Tensor, np.ndarray)):
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable):
            found.append(obj)
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item, depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            for key, item in vars(obj).items():
                if not key.startswith("__") and key not in ("data", "_cache", "_cache_keys"):
                    walk(item, depth + 1)

    walk(root, 0)
    return found


def _np_state(rs: np.random.RandomState) -> list:
    name, keys, pos, has_gauss, gauss = rs.get_state()
    return [name, torch.as_tensor(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]


def _set_np_state(rs: np.random.RandomState, s: list) -> None:
    rs.set_state((s[0], s[1].numpy().astype(np.uint32), int(s[2]), int(s[3]), float(s[4])))


def _gen_state(g: np.random.Generator) -> str:
    return repr(g.bit_generator.state)  # a dict of ints and names: repr / literal_eval round-trips it


def _set_gen_state(g: np.random.Generator, s: str) -> None:
    import ast

    g.bit_generator.state = ast.literal_eval(s)


class TrainingRng:
    """The random streams of one training (see the module docstring).

    Args:
        dataset: the training dataset; its transforms' generators are saved.
        owners: objects with a private ``numpy.random.Generator`` in ``.rng`` (e.g. MixUp's batch preparer).

    Example:
        >>> rng = TrainingRng(dataset=None)
        >>> state = rng.state_dict()
        >>> _ = torch.rand(3); rng.load_state_dict(state)   # torch's generator is back where it was
    """

    def __init__(self, dataset: Any, owners: Iterable[Any] = ()) -> None:
        self.transforms = _randomizables(getattr(dataset, "transform", dataset)) if dataset is not None else []
        self.owners = [o for o in owners if isinstance(getattr(o, "rng", None), np.random.Generator)]

    def _local(self) -> dict[str, Any]:
        py = random.getstate()
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": _np_state(np.random.mtrand._rand),
                "python": [int(py[0]), list(py[1]), repr(py[2])],
                "transforms": [_np_state(t.R) for t in self.transforms],
                "owners": [_gen_state(o.rng) for o in self.owners]}

    def state_dict(self) -> dict[str, Any]:
        """Every rank's state (gathered: a collective, called on every rank by ignite's ``Checkpoint``)."""
        return {"ranks": distributed.all_gather_object(self._local())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state.get("ranks") or []
        if len(ranks) != distributed.world_size():
            log.warning("last.pt holds the random state of %d process(es), this run has %d: the resumed run draws "
                        "new random numbers (augmentations and shuffling differ from an uninterrupted run)",
                        len(ranks), distributed.world_size())
            return
        s = ranks[distributed.rank()]
        if len(s["transforms"]) != len(self.transforms) or len(s["owners"]) != len(self.owners):
            log.warning("last.pt's random state does not match this pipeline's random transforms; not restored")
            return
        torch.set_rng_state(s["torch"])
        if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(s["cuda"])
        _set_np_state(np.random.mtrand._rand, s["numpy"])
        import ast

        random.setstate((int(s["python"][0]), tuple(int(v) for v in s["python"][1]), ast.literal_eval(s["python"][2])))
        for t, ts in zip(self.transforms, s["transforms"]):
            _set_np_state(t.R, ts)
        for o, os_ in zip(self.owners, s["owners"]):
            _set_gen_state(o.rng, os_)
