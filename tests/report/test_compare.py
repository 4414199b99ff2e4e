"""Tests for medtasks.compare: fabricated run directories compared end to end (no training).

Three runs of one task on the same 60 test cases from 15 patients: ``good`` has clearly better
probabilities than ``weak``, and ``weak_twin`` is ``weak`` with tiny noise, so one pair must
be flagged significant and the other not. Rows of another split and a shuffled row order
check that only the evaluated split is compared and that rows are aligned by case_id.
"""

from __future__ import annotations

import argparse
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from medtasks.compare import (
    CompareError,
    add_compare_parser,
    compare_runs,
    run_compare,
)
from medtasks.metrics.bootstrap import ResampledAUC
from medtasks.metrics.classification import rsna_weighted_log_loss
from medtasks.report.html import SYNTHETIC_BANNER

LABELS = ["subarachnoid", "subdural", "any"]
N_PATIENTS, CASES_PER_PATIENT, N_BOOT = 15, 4, 200
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _truth(rng: np.random.Generator) -> pd.DataFrame:
    rows = [{"case_id": f"P{p:02d}_S{s}", "patient_id": f"P{p:02d}", "split": "test"}
            for p in range(N_PATIENTS) for s in range(CASES_PER_PATIENT)]
    rows += [{"case_id": f"V{s}", "patient_id": "V00", "split": "val"} for s in range(5)]
    df = pd.DataFrame(rows)
    sub = (rng.random((len(df), 2)) < [0.35, 0.4]).astype(int)
    df["true_subarachnoid"], df["true_subdural"] = sub[:, 0], sub[:, 1]
    df["true_any"] = sub.max(axis=1)
    return df


def _probs(truth: pd.DataFrame, rng: np.random.Generator, signal: float, noise: float) -> np.ndarray:
    y = truth[[f"true_{lab}" for lab in LABELS]].to_numpy()
    logit = signal * (2 * y - 1) + rng.normal(0, noise, y.shape)
    return 1 / (1 + np.exp(-logit))


def _write_run(root: Path, name: str, truth: pd.DataFrame, prob: np.ndarray, *, task: str = "ich_classify",
               synthetic: bool = True, shuffle_seed: int | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    df = truth[["case_id", "patient_id", "split"]].copy()
    thresholds = {lab: 0.5 for lab in LABELS}
    for j, lab in enumerate(LABELS):
        df[f"true_{lab}"] = truth[f"true_{lab}"]
        df[f"prob_{lab}"] = np.round(prob[:, j], 6)
        df[f"pred_{lab}"] = (df[f"prob_{lab}"] >= thresholds[lab]).astype(int)
    if shuffle_seed is not None:
        df = df.sample(frac=1.0, random_state=shuffle_seed)
    df.to_csv(run / "predictions.csv", index=False)
    metrics = {"task": task, "kind": "multilabel", "synthetic": synthetic, "split": "test", "labels": LABELS,
               "thresholds": thresholds, "class_weights": {"subarachnoid": 1.0, "subdural": 1.0, "any": 2.0},
               "calibration": {"n_bins": 10}, "config_hash": name, "headline": {}, "per_class": {}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("runs")
    truth = _truth(rng)
    weak = _probs(truth, rng, signal=0.35, noise=1.3)
    twin = np.clip(weak + rng.normal(0, 0.01, weak.shape), 0, 1)
    return {
        "weak": _write_run(root, "weak", truth, weak),
        "good": _write_run(root, "good", truth, _probs(truth, rng, signal=2.0, noise=1.0), shuffle_seed=1),
        "weak_twin": _write_run(root, "weak_twin", truth, twin, shuffle_seed=2),
    }


@pytest.fixture(scope="module")
def compared(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "out"
    return compare_runs([runs["weak"], runs["good"], runs["weak_twin"]], out, n_boot=N_BOOT, seed=0, progress=False)


def _tables(html_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_run = pd.read_csv(html_path.parent / "compare.csv", dtype={"label": str, "run": str})
    pairs = pd.read_csv(html_path.parent / "compare_pairs.csv", dtype={"label": str, "run_a": str, "run_b": str})
    return per_run, pairs


def _pair(pairs: pd.DataFrame, a: str, b: str, metric: str, label: str = "overall") -> pd.Series:
    sel = pairs[(pairs.run_a == a) & (pairs.run_b == b) & (pairs.metric == metric) & (pairs.label == label)]
    assert len(sel) == 1, (a, b, metric, label)
    return sel.iloc[0]


def test_outputs_written(compared: Path) -> None:
    out = compared.parent
    assert compared.name == "compare.html"
    for name in ("compare.html", "compare.csv", "compare_pairs.csv", "compare_forest.png"):
        assert (out / name).is_file(), name
    assert (out / "compare_forest.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    per_run, pairs = _tables(compared)
    assert list(per_run.columns) == ["metric", "label", "run", "value", "ci_low", "ci_high"]
    assert list(pairs.columns) == ["metric", "label", "run_a", "run_b", "pairing", "diff", "ci_low", "ci_high",
                                   "significant"]
    assert set(pairs.pairing) == {"paired"}  # same 60 cases in every run
    assert set(per_run.run) == {"weak", "good", "weak_twin"}
    # i < j pairs, the earlier-given run as run_b
    assert set(zip(pairs.run_a, pairs.run_b)) == {("good", "weak"), ("weak_twin", "weak"), ("weak_twin", "good")}
    expected = {"weighted_f1", "macro_f1", "rsna_weighted_log_loss", "ece", "brier", "precision", "recall", "f1",
                "roc_auc"}
    assert set(per_run.metric) == expected


def test_values_match_sklearn_and_library(compared: Path, runs: dict[str, Path]) -> None:
    per_run, _ = _tables(compared)
    for name, run in runs.items():
        df = pd.read_csv(run / "predictions.csv")
        df = df[df.split == "test"]
        y = df[[f"true_{lab}" for lab in LABELS]].to_numpy()
        yhat = df[[f"pred_{lab}" for lab in LABELS]].to_numpy()
        prob = df[[f"prob_{lab}" for lab in LABELS]].to_numpy()
        mine = per_run[per_run.run == name].set_index(["metric", "label"])["value"]
        assert mine[("weighted_f1", "overall")] == pytest.approx(f1_score(y, yhat, average="weighted", zero_division=0))
        assert mine[("macro_f1", "overall")] == pytest.approx(f1_score(y, yhat, average="macro", zero_division=0))
        assert mine[("roc_auc", "any")] == pytest.approx(roc_auc_score(df["true_any"], df["prob_any"]))
        assert mine[("rsna_weighted_log_loss", "overall")] == pytest.approx(rsna_weighted_log_loss(y, prob, [1, 1, 2]))
        assert mine[("f1", "subdural")] == pytest.approx(f1_score(df["true_subdural"], df["pred_subdural"]))


def test_cis_contain_point_and_diff_is_difference_of_points(compared: Path) -> None:
    per_run, pairs = _tables(compared)
    assert per_run[["value", "ci_low", "ci_high"]].notna().all().all()
    assert ((per_run.ci_low <= per_run.value + 1e-12) & (per_run.value <= per_run.ci_high + 1e-12)).all()
    value = per_run.set_index(["metric", "label", "run"])["value"]
    for r in pairs.itertuples(index=False):
        assert r.diff == pytest.approx(value[(r.metric, r.label, r.run_a)] - value[(r.metric, r.label, r.run_b)])
        assert r.significant == bool(r.ci_low > 0 or r.ci_high < 0)


def test_clear_difference_is_significant_and_near_twin_is_not(compared: Path) -> None:
    _, pairs = _tables(compared)
    for metric, label, sign in (("weighted_f1", "overall", 1), ("roc_auc", "any", 1),
                                ("rsna_weighted_log_loss", "overall", -1), ("brier", "overall", -1)):
        better = _pair(pairs, "good", "weak", metric, label)
        assert better.significant and np.sign(better["diff"]) == sign, (metric, better.to_dict())
        twin = _pair(pairs, "weak_twin", "weak", metric, label)
        assert not twin.significant and abs(twin["diff"]) < 0.05, (metric, twin.to_dict())


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.ids: list[str] = []
        self.significant_rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "tr" and a.get("class") == "significant":
            self.significant_rows += 1


def test_html_parses_and_links_existing_images(compared: Path) -> None:
    text = compared.read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(text)
    parser.close()
    assert parser.images and all((compared.parent / src).is_file() for src in parser.images)
    for section_id in ("synthetic-banner", "runs-table", "side-by-side", "pairs-table", "forest", "method"):
        assert section_id in parser.ids, section_id
    assert SYNTHETIC_BANNER in text
    _, pairs = _tables(compared)
    assert parser.significant_rows == int(pairs.significant.sum()) > 0


def test_no_banner_without_synthetic_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    copies = []
    for name in ("weak", "good"):
        dst = shutil.copytree(runs[name], tmp_path / name)
        m = json.loads((dst / "metrics.json").read_text())
        (dst / "metrics.json").write_text(json.dumps({**m, "synthetic": False}))
        copies.append(dst)
    html = compare_runs(copies, tmp_path / "out", n_boot=20, progress=False).read_text(encoding="utf-8")
    assert SYNTHETIC_BANNER not in html


def test_duplicate_run_names_are_disambiguated(runs: dict[str, Path], tmp_path: Path) -> None:
    a = shutil.copytree(runs["weak"], tmp_path / "x" / "run")
    b = shutil.copytree(runs["good"], tmp_path / "y" / "run")
    compare_runs([a, b], tmp_path / "out", n_boot=20, progress=False)
    assert set(pd.read_csv(tmp_path / "out" / "compare.csv").run) == {"x/run", "y/run"}


def _copy(src: Path, dst: Path, edit_preds=None, edit_metrics=None) -> Path:
    shutil.copytree(src, dst)
    if edit_preds is not None:
        df = pd.read_csv(dst / "predictions.csv")
        edit_preds(df).to_csv(dst / "predictions.csv", index=False)
    if edit_metrics is not None:
        m = json.loads((dst / "metrics.json").read_text())
        (dst / "metrics.json").write_text(json.dumps(edit_metrics(m)))
    return dst


def test_errors_name_the_run_and_the_fix(runs: dict[str, Path], tmp_path: Path) -> None:
    ref = runs["weak"]
    fewer = tmp_path / "a"
    other_task = _copy(runs["good"], tmp_path / "other_task", edit_metrics=lambda m: {**m, "task": "phe_detect"})
    flipped = _copy(runs["good"], tmp_path / "flipped",
                    edit_preds=lambda d: d.assign(true_subdural=np.where(d.case_id == "P01_S0", 1 - d.true_subdural,
                                                                         d.true_subdural)))
    no_preds = _copy(runs["good"], tmp_path / "no_preds")
    (no_preds / "predictions.csv").unlink()
    blank = _copy(runs["good"], tmp_path / "blank",
                  edit_preds=lambda d: d.assign(prob_any=d.prob_any.mask(d.case_id == "P02_S0")))

    with pytest.raises(CompareError, match="at least 2 run"):
        compare_runs([ref], fewer, progress=False)
    with pytest.raises(ValueError, match="other_task.*task 'phe_detect' differs"):
        compare_runs([ref, other_task], fewer, progress=False)
    with pytest.raises(ValueError, match="flipped.*truth differs.*compared paired.*'P01_S0'.*--unpaired"):
        compare_runs([ref, flipped], fewer, progress=False)
    with pytest.raises(FileNotFoundError, match="no_preds.*predictions.csv not found"):
        compare_runs([ref, no_preds], fewer, progress=False)
    with pytest.raises(ValueError, match="blank.*prob_any must hold probabilities"):
        compare_runs([ref, blank], fewer, progress=False)
    with pytest.raises(ValueError, match="given twice"):
        compare_runs([ref, ref], fewer, progress=False)
    assert not fewer.exists()  # nothing written when the runs cannot be compared


def test_a_failed_run_is_named_as_failed(runs: dict[str, Path], tmp_path: Path) -> None:
    """A run whose status.json says failed and that lacks predictions.csv: the failed run and its log are named;
    the same files missing without a status (a run from before statuses) keep the missing-file error."""
    from medtasks.compare import RunNotFinished

    failed = _copy(runs["good"], tmp_path / "failed")
    for name in ("predictions.csv", "metrics.json"):
        (failed / name).unlink()
    (failed / "status.json").write_text(json.dumps({"status": "failed", "started": "2024-01-01T12:00:00",
                                                    "error": "RuntimeError: training broke"}))
    with pytest.raises(RunNotFinished) as exc:
        compare_runs([runs["weak"], failed], tmp_path / "out", progress=False)
    assert str(exc.value) == f"{failed} is a failed run (RuntimeError: training broke): see {failed / 'run.log'}"
    (failed / "status.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"failed: metrics\.json not found"):
        compare_runs([runs["weak"], failed], tmp_path / "out", progress=False)
    finished = _copy(runs["good"], tmp_path / "finished")
    (finished / "status.json").write_text(json.dumps({"status": "finished"}))
    assert compare_runs([runs["weak"], finished], tmp_path / "out", n_boot=20, progress=False).is_file()


def test_resampled_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.random(80), 1)  # many ties
    auc = ResampledAUC(y, p)
    for _ in range(20):
        idx = rng.integers(0, 80, 80)
        assert auc(idx) == pytest.approx(roc_auc_score(y[idx], p[idx]))
    with pytest.raises(ValueError):
        auc(np.flatnonzero(y == 1))


def test_cli_functions(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="medtasks")
    add_compare_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["compare", str(runs["weak"]), str(runs["good"]), "--out", str(out), "--n-boot", "30",
                              "--seed", "1"])
    assert (args.runs, args.n_boot, args.seed) == ([str(runs["weak"]), str(runs["good"])], 30, 1)
    assert run_compare(args) == 0
    printed = capsys.readouterr().out
    assert str((out / "compare.html").resolve()) in printed
    assert "weighted_f1" in printed and "good - weak" in printed


def test_binary_kind_uses_the_same_registry(runs: dict[str, Path], tmp_path: Path) -> None:
    def one_label(d: pd.DataFrame) -> pd.DataFrame:
        return d[["case_id", "patient_id", "split", "true_any", "prob_any", "pred_any"]]

    def binary(m: dict) -> dict:
        return {**m, "task": "phe_binary", "kind": "binary", "labels": ["any"], "class_weights": None}

    a = _copy(runs["weak"], tmp_path / "a", one_label, binary)
    b = _copy(runs["good"], tmp_path / "b", one_label, binary)
    per_run, pairs = _tables(compare_runs([a, b], tmp_path / "out", n_boot=50, progress=False))
    assert set(per_run.metric) == {"precision", "recall", "f1", "roc_auc", "rsna_weighted_log_loss", "ece", "brier"}
    assert set(pairs.label) == {"any", "overall"}
