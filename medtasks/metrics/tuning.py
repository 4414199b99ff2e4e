"""Post-hoc calibration fitted on the validation split: temperature scaling and per-label thresholds.

Both are fitted once after training, saved in the run's ``task_state.json`` and applied by
``evaluate`` and ``predict`` (the source report's §3: T searched in 0.6-3.0, thresholds in
0.05-0.95 maximising F1 on validation; Guo et al. 2017 for temperature scaling).

Example:
    >>> import numpy as np
    >>> y = np.array([[0], [0], [1], [1]]); logits = np.array([[-4.0], [-1.0], [1.0], [4.0]])
    >>> fit_temperature(logits, y, method="grid") >= 0.6
    True
    >>> search_thresholds(y, 1 / (1 + np.exp(-logits)))[0]   # any t in (0.27, 0.73] is perfect: nearest 0.5
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["apply_temperature", "fit_temperature", "search_thresholds", "sigmoid", "weighted_bce_nll"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, clipped at |x| = 60 so float64 never overflows."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def weighted_bce_nll(logits: np.ndarray, y: np.ndarray, weights: Sequence[float] | None = None) -> float:
    """Mean binary cross-entropy of ``logits`` (N, L) against ``y``, label weights normalised to sum 1.

    With the RSNA weights (any = 2) this is the competition's weighted log loss, computed from
    logits so that it stays finite for confident predictions.
    """
    import torch

    from medtasks.losses.classification import weighted_bce_with_logits

    z, t = np.asarray(logits, np.float64), np.asarray(y, np.float64)
    if z.shape != t.shape or z.ndim != 2:
        raise ValueError(f"logits and y must both be (N, L); got {z.shape} and {t.shape}")
    w = np.ones(z.shape[1]) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (z.shape[1],):
        raise ValueError(f"{len(w)} weights for {z.shape[1]} labels")
    with torch.no_grad():
        return float(weighted_bce_with_logits(torch.as_tensor(z), torch.as_tensor(t), torch.as_tensor(w)))


def fit_temperature(logits: np.ndarray, y: np.ndarray, weights: Sequence[float] | None = None,
                    method: str = "grid", bounds: tuple[float, float] = (0.6, 3.0), steps: int = 241) -> float:
    """One temperature ``T`` for all labels minimising the weighted NLL of ``sigmoid(logits / T)``.

    Args:
        logits: (N, L) validation logits.
        y: (N, L) 0/1 targets.
        weights: Per-label weights of the NLL (RSNA: any = 2); equal when None.
        method: ``"grid"`` (``steps`` values evenly over ``bounds``, the report's search) or
            ``"lbfgs"`` (torch L-BFGS on log T, then clipped to ``bounds``).
        bounds: Search range of T.

    Returns:
        The fitted T (> 0); T > 1 softens over-confident outputs.
    """
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    z = np.asarray(logits, np.float64)
    if method == "grid":
        grid = np.linspace(lo, hi, steps)
        losses = [weighted_bce_nll(z / t, y, weights) for t in grid]
        return float(grid[int(np.argmin(losses))])
    if method == "lbfgs":
        import torch

        from medtasks.losses.classification import weighted_bce_with_logits

        zt, yt = torch.as_tensor(z), torch.as_tensor(np.asarray(y, np.float64))
        w = (torch.ones(z.shape[1], dtype=torch.float64) if weights is None
             else torch.as_tensor(weights, dtype=torch.float64))
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = weighted_bce_with_logits(zt / log_t.exp(), yt, w)
            loss.backward()
            return loss

        opt.step(closure)
        return float(np.clip(float(log_t.detach().exp()), lo, hi))
    raise ValueError(f"temperature method must be 'grid' or 'lbfgs', got {method!r}")


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities ``sigmoid(logits / T)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return sigmoid(np.asarray(logits, np.float64) / temperature)


def search_thresholds(y: np.ndarray, prob: np.ndarray, grid: Sequence[float] | None = None,
                      default: float = 0.5) -> list[float]:
    """Per-label threshold from ``grid`` (default 0.05, 0.06, ..., 0.95) maximising that label's F1.

    Ties go to the threshold closest to ``default``; a label with no positive in ``y`` keeps
    ``default`` (its F1 is 0 at every threshold).
    """
    t, p = np.asarray(y).astype(bool), np.asarray(prob, np.float64)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y and prob must both be (N, L); got {t.shape} and {p.shape}")
    cand = np.round(np.arange(0.05, 0.9501, 0.01), 2) if grid is None else np.asarray(grid, np.float64)
    out: list[float] = []
    for j in range(t.shape[1]):
        pos = t[:, j]
        if not pos.any():
            out.append(float(default))
            continue
        pred = p[:, j][None, :] >= cand[:, None]  # (thresholds, N)
        tp = (pred & pos).sum(1)
        f1 = 2 * tp / np.maximum(pred.sum(1) + pos.sum(), 1)
        best = np.flatnonzero(f1 == f1.max())
        out.append(float(cand[best[np.argmin(np.abs(cand[best] - default))]]))
    return out
