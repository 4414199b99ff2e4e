"""Temperature scaling and threshold search against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss

from medtasks.metrics.tuning import apply_temperature, fit_temperature, search_thresholds, weighted_bce_nll


def _overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z); the model reports 2.5 z: ideal temperature 2.5."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, 3))
    y = (rng.random((n, 3)) < 1 / (1 + np.exp(-z))).astype(int)
    return 2.5 * z, y


def test_weighted_nll_matches_sklearn() -> None:
    logits, y = _overconfident(500)
    p = apply_temperature(logits, 1.0)
    per = [log_loss(y[:, j], p[:, j], labels=[0, 1]) for j in range(3)]
    assert weighted_bce_nll(logits, y) == pytest.approx(np.mean(per), rel=1e-9)
    assert weighted_bce_nll(logits, y, [1, 1, 2]) == pytest.approx((per[0] + per[1] + 2 * per[2]) / 4, rel=1e-9)
    with pytest.raises(ValueError):
        weighted_bce_nll(logits, y, [1, 2])


@pytest.mark.parametrize("method", ["grid", "lbfgs"])
def test_temperature_recovers_the_overconfidence(method: str) -> None:
    logits, y = _overconfident()
    t = fit_temperature(logits, y, method=method)
    assert t == pytest.approx(2.5, abs=0.2)
    assert weighted_bce_nll(logits / t, y) < weighted_bce_nll(logits, y)


def test_temperature_bounds_and_errors() -> None:
    logits, y = _overconfident(300)
    assert fit_temperature(logits, y, bounds=(0.6, 1.5)) == pytest.approx(1.5)  # clipped at the range end
    assert fit_temperature(logits, y, method="lbfgs", bounds=(0.6, 1.5)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="method"):
        fit_temperature(logits, y, method="newton")
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(logits, y, bounds=(2.0, 1.0))
    with pytest.raises(ValueError):
        apply_temperature(logits, 0.0)


def test_thresholds_maximise_f1_on_the_grid() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((400, 2)) < [0.1, 0.4]).astype(int)
    p = np.clip(0.25 * y + rng.random((400, 2)) * 0.7, 0, 1)
    thr = search_thresholds(y, p)
    grid = np.round(np.arange(0.05, 0.9501, 0.01), 2)
    for j in range(2):
        best = max(f1_score(y[:, j], p[:, j] >= t) for t in grid)
        assert f1_score(y[:, j], p[:, j] >= thr[j]) == pytest.approx(best)
        assert 0.05 <= thr[j] <= 0.95


def test_thresholds_ties_and_empty_labels() -> None:
    y = np.array([[0, 0], [1, 0]])
    p = np.array([[0.2, 0.3], [0.8, 0.9]])
    thr = search_thresholds(y, p, default=0.5)
    assert thr[0] == pytest.approx(0.5)   # every t in (0.2, 0.8] is perfect: the one nearest 0.5
    assert thr[1] == 0.5                  # no positives: keeps the default
