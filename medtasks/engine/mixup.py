"""MixUp (Zhang et al., ICLR 2018) as a training ``prepare_batch``: the evaluator never sees it.

Each training batch becomes ``lam * batch + (1 - lam) * batch[perm]`` for the image, the
targets and every float extra input of the same batch size (e.g. the slice position ``z``),
with one ``lam ~ Beta(alpha, alpha)`` per batch and ``perm`` a random permutation.

Example:
    >>> import torch
    >>> mix = MixUpBatch(alpha=0.2, seed=0)
    >>> x, y = mix({"image": torch.ones(4, 1, 2, 2), "label": torch.eye(4)[:, :2]})
    >>> x.shape, bool(((y >= 0) & (y <= 1)).all())
    (torch.Size([4, 1, 2, 2]), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch

from medtasks.engine import distributed

__all__ = ["MixUpBatch"]


class MixUpBatch(PrepareBatch):
    """Wrap a MONAI ``prepare_batch`` (default: image/label) and mix its output.

    Args:
        base: The task's own prepare_batch (e.g. ``PrepareBatchExtraInput``); ``None`` = default.
        alpha: Beta distribution parameter; ``alpha <= 0`` turns MixUp off (identity).
        seed: Seed of the private generator (lam and permutations), for reproducible runs (``+ rank``
            under torchrun); its state is saved in ``last.pt`` (:class:`~medtasks.engine.rng.TrainingRng`),
            so a resumed run continues the sequence.
    """

    def __init__(self, base: Any = None, alpha: float = 0.2, seed: int = 0) -> None:
        if alpha < 0:
            raise ValueError(f"mixup alpha must be >= 0, got {alpha}")
        self.base = base
        self.alpha = float(alpha)
        # private: the global RNGs (augmentation, dropout) are untouched
        self.rng = np.random.default_rng(int(seed) + distributed.rank())
        self.last_lam: float | None = None

    def _mix(self, t: Any, perm: torch.Tensor, lam: float, n: int) -> Any:
        if isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] == n:
            t = t if t.is_floating_point() else t.float()
            return lam * t + (1.0 - lam) * t[perm.to(t.device)]
        return t

    def __call__(self, batchdata: dict[str, Any], device: Any = None, non_blocking: bool = False,
                 **kwargs: Any) -> Any:
        out = (self.base or default_prepare_batch)(batchdata, device, non_blocking, **kwargs)
        if self.alpha == 0:
            return out
        image = out[0]
        n = image.shape[0]
        if n < 2:
            return out
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(self.rng.permutation(n))
        self.last_lam = lam
        mixed = [self._mix(image, perm, lam, n), self._mix(out[1], perm, lam, n)]
        if len(out) == 2:
            return tuple(mixed)
        args = tuple(self._mix(a, perm, lam, n) for a in out[2])
        kw = {k: self._mix(v, perm, lam, n) for k, v in out[3].items()}
        return mixed[0], mixed[1], args, kw

