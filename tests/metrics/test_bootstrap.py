"""Patient-level bootstrap: whole-group resampling, CIs, skipping, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtasks.metrics.bootstrap import GroupResampler, bootstrap_ci, paired_bootstrap_diff


@pytest.fixture()
def clustered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 patients x 5 slices, labels and scores correlated within a patient."""
    rng = np.random.default_rng(0)
    groups = np.repeat(rng.permutation(1000)[:40], 5)  # non-contiguous ids
    y = np.repeat(rng.random(40) < 0.5, 5).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    order = rng.permutation(200)  # rows of one patient need not be adjacent
    return groups[order], y[order], p[order]


def test_groups_resampled_as_wholes(clustered) -> None:
    groups, _, _ = clustered
    rs = GroupResampler(groups)
    sizes = {g: int((groups == g).sum()) for g in np.unique(groups)}
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = rs.draw(rng)
        drawn, counts = np.unique(groups[idx], return_counts=True)
        # Each drawn patient contributes a whole multiple of its row count.
        for g, c in zip(drawn, counts):
            assert c % sizes[g] == 0
        assert len(idx) == sum(counts)
        # Rows of a drawn patient are all present.
        for g in drawn:
            assert set(np.flatnonzero(groups == g)) <= set(idx.tolist())


def test_distinct_groups_metric(clustered) -> None:
    groups, _, _ = clustered
    r = bootstrap_ci(lambda i: len(np.unique(groups[i])), groups, n_boot=300)
    assert r["value"] == 40 and r["n_groups"] == 40
    # With replacement, about 1 - 1/e of 40 patients are distinct per replicate.
    assert 20 <= r["ci_low"] < r["ci_high"] < 40
    assert r["method"] == "percentile, resampled by patient"


def test_ci_contains_point_and_seed_reproducible(clustered) -> None:
    groups, y, p = clustered
    fn = lambda i: roc_auc_score(y[i], p[i])  # noqa: E731
    a = bootstrap_ci(fn, groups, n_boot=200, seed=7)
    b = bootstrap_ci(fn, groups, n_boot=200, seed=7)
    c = bootstrap_ci(fn, groups, n_boot=200, seed=8)
    assert a == b
    assert a["ci_low"] != c["ci_low"] or a["ci_high"] != c["ci_high"]
    assert a["ci_low"] <= a["value"] <= a["ci_high"]
    assert a["value"] == pytest.approx(roc_auc_score(y, p))
    assert a["n_boot"] + a["n_skipped"] == 200


def test_patient_ci_wider_than_row_ci(clustered) -> None:
    groups, y, _ = clustered
    fn = lambda i: float(y[i].mean())  # noqa: E731
    by_patient = bootstrap_ci(fn, groups, n_boot=400)
    by_row = bootstrap_ci(fn, np.arange(len(y)), n_boot=400)
    # Labels are constant within a patient, so row resampling overstates precision.
    assert (by_patient["ci_high"] - by_patient["ci_low"]) > 1.5 * (
        by_row["ci_high"] - by_row["ci_low"]
    )


def test_degenerate_replicates_skipped() -> None:
    # 1 positive patient of 10: many replicates have no positives -> AUC undefined.
    groups = np.repeat(np.arange(10), 3)
    y = (groups == 0).astype(int)
    p = np.linspace(0, 1, 30)[::-1]

    def auc(i: np.ndarray) -> float:
        if y[i].min() == y[i].max():
            raise ValueError("one class")
        return roc_auc_score(y[i], p[i])

    r = bootstrap_ci(auc, groups, n_boot=200)
    assert r["n_skipped"] > 0 and r["n_boot"] == 200 - r["n_skipped"]
    assert r["ci_low"] is not None  # ~65 % of replicates contain patient 0

    nan_half = bootstrap_ci(lambda i: float("nan") if 0 not in groups[i] else 1.0, groups, 200)
    assert nan_half["n_skipped"] == 200 - nan_half["n_boot"] > 0


def test_too_few_valid_replicates_gives_no_ci() -> None:
    groups = np.repeat(np.arange(20), 2)
    full = np.arange(40)

    def rare(i: np.ndarray) -> float:
        # Defined on the full sample, otherwise only if patient 0 is drawn 3+ times (rare).
        if np.array_equal(i, full) or (groups[i] == 0).sum() >= 6:
            return 1.0
        raise ValueError("undefined")

    r = bootstrap_ci(rare, groups, n_boot=100)
    assert r["value"] == 1.0
    assert r["ci_low"] is None and r["ci_high"] is None
    assert r["n_boot"] < 50 and "fewer than half" in r["reason"]


def test_undefined_on_full_sample() -> None:
    r = bootstrap_ci(lambda i: float("nan"), np.arange(6), n_boot=10)
    assert r["value"] is None and r["ci_low"] is None and r["reason"]
    r = paired_bootstrap_diff(lambda i: 1.0, lambda i: float("nan"), np.arange(6), n_boot=10)
    assert r["diff"] is None and r["excludes_zero"] is False


def test_speed_1000_replicates() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 100)
    x = rng.random(5000)
    t0 = time.perf_counter()
    r = bootstrap_ci(lambda i: float(x[i].mean()), groups, n_boot=1000)
    assert time.perf_counter() - t0 < 2.0
    assert r["n_boot"] == 1000


def test_paired_identical_predictors(clustered) -> None:
    groups, y, p = clustered
    fn = lambda i: roc_auc_score(y[i], p[i])  # noqa: E731
    r = paired_bootstrap_diff(fn, fn, groups, n_boot=100)
    assert r["diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    assert r["excludes_zero"] is False


def test_paired_clearly_better_predictor(clustered) -> None:
    groups, y, p = clustered
    rng = np.random.default_rng(5)
    noise = rng.random(len(y))
    good = lambda i: roc_auc_score(y[i], p[i])  # noqa: E731
    bad = lambda i: roc_auc_score(y[i], noise[i])  # noqa: E731
    r = paired_bootstrap_diff(good, bad, groups, n_boot=200)
    assert r["diff"] == pytest.approx(r["value_a"] - r["value_b"])
    assert r["diff"] > 0 and r["ci_low"] > 0 and r["excludes_zero"] is True
    swapped = paired_bootstrap_diff(bad, good, groups, n_boot=200)
    assert swapped["ci_high"] < 0 and swapped["excludes_zero"] is True


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci(lambda i: 0.0, np.arange(5), n_boot=0)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda i: 0.0, np.arange(5), alpha=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda i: 0.0, np.array([]))
