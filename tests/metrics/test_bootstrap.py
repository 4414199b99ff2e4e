"""Patient-level bootstrap: whole-group resampling, CIs, skipping, speed; paired and unpaired differences."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medtasks.metrics.bootstrap import GroupResampler, bootstrap_ci, paired_bootstrap_diff, unpaired_bootstrap_diff


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


def _two_sample_reference(xa: np.ndarray, ga: np.ndarray, xb: np.ndarray, gb: np.ndarray, n_boot: int,
                          seed: int) -> tuple[float, float]:
    """Independent re-implementation of the unpaired bootstrap of mean(A) - mean(B) with pandas:
    per replicate, draw len(patients) of A's patients (np.unique order) with replacement from one
    Generator, then B's, and concatenate the drawn patients' rows."""
    rng = np.random.default_rng(seed)
    by_a = dict(list(pd.Series(xa).groupby(ga)))
    by_b = dict(list(pd.Series(xb).groupby(gb)))
    keys_a, keys_b = sorted(by_a), sorted(by_b)
    diffs = []
    for _ in range(n_boot):
        pick_a = rng.integers(0, len(keys_a), size=len(keys_a))
        pick_b = rng.integers(0, len(keys_b), size=len(keys_b))
        a = pd.concat([by_a[keys_a[k]] for k in pick_a]).mean()
        b = pd.concat([by_b[keys_b[k]] for k in pick_b]).mean()
        diffs.append(a - b)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def test_unpaired_matches_independent_reimplementation() -> None:
    rng = np.random.default_rng(11)
    ga = np.repeat([f"a{k:02d}" for k in range(12)], 3)[rng.permutation(36)]
    gb = np.repeat([f"b{k:02d}" for k in range(9)], 4)
    xa, xb = rng.random(36) + 0.2, rng.random(36)
    r = unpaired_bootstrap_diff(lambda i: float(xa[i].mean()), lambda i: float(xb[i].mean()), ga, gb,
                                n_boot=300, seed=4)
    assert r["diff"] == pytest.approx(xa.mean() - xb.mean(), abs=1e-15)
    assert (r["value_a"], r["value_b"]) == (pytest.approx(xa.mean()), pytest.approx(xb.mean()))
    lo, hi = _two_sample_reference(xa, ga, xb, gb, n_boot=300, seed=4)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert r["excludes_zero"] == bool(lo > 0 or hi < 0)
    assert (r["n_groups_a"], r["n_groups_b"], r["n_groups"], r["n_boot"]) == (12, 9, 21, 300)
    assert r["method"] == "unpaired (independent two-sample) percentile, resampled by patient"
    assert set(paired_bootstrap_diff(lambda i: 0.0, lambda i: 0.0, ga, n_boot=5)) < set(r)


def test_unpaired_constant_shift_is_not_degenerate(clustered) -> None:
    # B = A - 0.3 on the same patients: a paired CI is exactly [0.3, 0.3]; an unpaired one resamples
    # B's patients independently of A's, so it keeps both samples' spread around 0.3.
    groups, _, p = clustered
    fa, fb = (lambda i: float(p[i].mean())), (lambda i: float(p[i].mean()) - 0.3)
    paired = paired_bootstrap_diff(fa, fb, groups, n_boot=200)
    unpaired = unpaired_bootstrap_diff(fa, fb, groups, groups, n_boot=200)
    assert paired["ci_low"] == pytest.approx(0.3) and paired["ci_high"] == pytest.approx(0.3)
    assert unpaired["diff"] == pytest.approx(0.3)
    assert unpaired["ci_low"] < 0.3 - 0.02 and unpaired["ci_high"] > 0.3 + 0.02
    one = bootstrap_ci(fa, groups, n_boot=200)
    # Var(A* - B*) = 2 Var(A*): the unpaired interval is about sqrt(2) times A's own.
    ratio = (unpaired["ci_high"] - unpaired["ci_low"]) / (one["ci_high"] - one["ci_low"])
    assert 1.1 < ratio < 1.8


def test_unpaired_undefined_and_skipped() -> None:
    r = unpaired_bootstrap_diff(lambda i: 1.0, lambda i: float("nan"), np.arange(6), np.arange(4), n_boot=10)
    assert r["diff"] is None and r["ci_low"] is None and r["excludes_zero"] is False and r["reason"]
    groups = np.arange(10)

    def only_full(i: np.ndarray) -> float:
        if len(np.unique(i)) == 10:
            return 1.0
        raise ValueError("undefined")

    r = unpaired_bootstrap_diff(only_full, lambda i: 0.0, groups, groups, n_boot=50)
    assert r["diff"] == 1.0 and r["ci_low"] is None and "fewer than half" in r["reason"]
    assert r["n_skipped"] + r["n_boot"] == 50
