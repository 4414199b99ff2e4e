"""Tests for ``medtasks compare`` on runs scored on different cases (unpaired) and on segmentation runs.

Fabricated run directories, no training. ``default`` is a phe_classify-like binary run scored on
its patient-split test set (no ``protocol`` key, i.e. "medtasks"); ``report`` is a run under the
source's protocol scored on a validation split of other patients; ``overlap`` shares 6 of its cases
with ``default``. The unpaired CI is checked against a pandas re-implementation of the two-sample
patient bootstrap with the same seed; segmentation metrics against fractions worked out by hand.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from medtasks.compare import CompareError, add_compare_parser, align_runs, compare_runs, run_compare
from medtasks.compare_metrics import SegmentationMetrics

N_BOOT, SEED = 120, 3


def _binary_rows(prefix: str, n_patients: int, per_patient: int, split: str, rng: np.random.Generator,
                 signal: float) -> pd.DataFrame:
    rows = [{"case_id": f"{prefix}{p:02d}_S{s}", "patient_id": f"{prefix}{p:02d}", "split": split}
            for p in range(n_patients) for s in range(per_patient)]
    df = pd.DataFrame(rows)
    y = (rng.random(len(df)) < 0.4).astype(int)
    prob = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1.0, len(df)))))
    return df.assign(true_any=y, prob_any=np.round(prob, 6), pred_any=(np.round(prob, 6) >= 0.5).astype(int))


def _write(root: Path, name: str, preds: pd.DataFrame, metrics: dict) -> Path:
    run = root / name
    run.mkdir(parents=True)
    preds.to_csv(run / "predictions.csv", index=False)
    (run / "metrics.json").write_text(json.dumps({"synthetic": True, "config_hash": name, **metrics}))
    return run


BINARY = {"task": "phe_classify", "kind": "binary", "labels": ["any"], "thresholds": {"any": 0.5}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(21)
    root = tmp_path_factory.mktemp("unpaired")
    test = _binary_rows("P", 10, 3, "test", rng, signal=1.5)
    val = _binary_rows("Q", 8, 4, "val", rng, signal=0.5)
    noise = _binary_rows("T", 2, 3, "train", rng, signal=0.0)  # another split: must be ignored
    overlap = pd.concat([test.iloc[:6], _binary_rows("R", 5, 3, "test", rng, signal=1.0)], ignore_index=True)
    return {
        "default": _write(root, "default", pd.concat([test, noise]), {**BINARY, "split": "test"}),
        "report": _write(root, "report", pd.concat([noise, val]), {**BINARY, "split": "val", "protocol": "report"}),
        "overlap": _write(root, "overlap", overlap, {**BINARY, "split": "test", "protocol": "medtasks"}),
        "twin": _write(root, "twin", test, {**BINARY, "split": "test"}),
    }


def _tables(html: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    kw = {"dtype": {"label": str, "run": str, "run_a": str, "run_b": str}}
    return pd.read_csv(html.parent / "compare.csv", **kw), pd.read_csv(html.parent / "compare_pairs.csv", **kw)


def _reference_unpaired(a: pd.DataFrame, b: pd.DataFrame, metric, n_boot: int, seed: int) -> tuple[float, float]:
    """Two-sample patient bootstrap by hand: one Generator; per replicate A's patients, then B's."""
    rng = np.random.default_rng(seed)
    ga, gb = dict(list(a.groupby("patient_id"))), dict(list(b.groupby("patient_id")))
    ka, kb = sorted(ga), sorted(gb)
    diffs = []
    for _ in range(n_boot):
        sa = pd.concat([ga[ka[k]] for k in rng.integers(0, len(ka), size=len(ka))])
        sb = pd.concat([gb[kb[k]] for k in rng.integers(0, len(kb), size=len(kb))])
        diffs.append(metric(sa) - metric(sb))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def _brier(d: pd.DataFrame) -> float:
    return float(((d.prob_any - d.true_any) ** 2).mean())


def _f1(d: pd.DataFrame) -> float:
    return float(f1_score(d.true_any, d.pred_any, zero_division=0))


def test_unpaired_difference_and_ci_match_a_hand_bootstrap(runs: dict[str, Path], tmp_path: Path) -> None:
    html = compare_runs([runs["default"], runs["report"]], tmp_path / "out", n_boot=N_BOOT, seed=SEED,
                        progress=False)
    per_run, pairs = _tables(html)
    assert list(pairs.columns) == ["metric", "label", "run_a", "run_b", "pairing", "diff", "ci_low", "ci_high",
                                   "significant"]
    assert set(pairs.pairing) == {"unpaired"}
    a = pd.read_csv(runs["report"] / "predictions.csv").query("split == 'val'")
    b = pd.read_csv(runs["default"] / "predictions.csv").query("split == 'test'")
    assert (len(a), len(b)) == (32, 30)
    for metric, fn in (("brier", _brier), ("f1", _f1)):
        label = "overall" if metric == "brier" else "any"
        row = pairs[(pairs.metric == metric) & (pairs.label == label)].iloc[0]
        assert (row.run_a, row.run_b) == ("report", "default")
        assert row["diff"] == pytest.approx(fn(a) - fn(b), abs=1e-12)
        lo, hi = _reference_unpaired(a, b, fn, N_BOOT, SEED)
        assert (row.ci_low, row.ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
        assert row.significant == bool(lo > 0 or hi < 0)
        value = per_run[(per_run.metric == metric) & (per_run.label == label)].set_index("run")["value"]
        assert (value["report"], value["default"]) == (pytest.approx(fn(a)), pytest.approx(fn(b)))


def test_page_says_unpaired_with_protocol_split_and_note(runs: dict[str, Path], tmp_path: Path) -> None:
    html = compare_runs([runs["default"], runs["report"]], tmp_path / "out", n_boot=30, progress=False)
    text = html.read_text(encoding="utf-8")
    why = ("the CI of the difference resamples each run&#x27;s patients independently; it is wider than a paired CI "
           "and includes the case-mix difference")
    assert f'id="pairing-unpaired">unpaired: runs scored on different cases: {why}.</p>' in text
    assert 'id="pairing-paired"' not in text
    assert f"report - default: unpaired, runs scored on different cases (32 and 30 cases, none shared): {why}." \
        in text
    assert "<td>unpaired</td>" in text and "<td>paired</td>" not in text
    # runs table: Run, Directory, Protocol, Evaluated split, Cases, Patients, ...
    assert "<td>default (reference)</td>" in text
    for protocol, split, cases, patients in (("medtasks", "test", 30, 10), ("report", "val", 32, 8)):
        assert f"<td>{protocol}</td><td>{split}</td><td>{cases}</td><td>{patients}</td>" in text
    assert "evaluated split: per run (see Runs)" in text and "cases differ between runs (see Runs)" in text


def test_partial_overlap_is_noted(runs: dict[str, Path], tmp_path: Path) -> None:
    html = compare_runs([runs["default"], runs["overlap"]], tmp_path / "out", n_boot=30, progress=False)
    _, pairs = _tables(html)
    assert set(pairs.pairing) == {"unpaired"}
    assert "overlap - default: unpaired, runs scored on different cases (21 and 30 cases, 6 shared, resampled " \
           "independently here): the CI" in html.read_text(encoding="utf-8")


def test_truth_differing_on_shared_cases_is_a_note_when_unpaired(runs: dict[str, Path], tmp_path: Path) -> None:
    df = pd.read_csv(runs["overlap"] / "predictions.csv", dtype={"case_id": str})
    df.loc[df.case_id == "P00_S1", "true_any"] = 1 - df.loc[df.case_id == "P00_S1", "true_any"]
    flipped = _write(tmp_path, "flipped", df, {**BINARY, "split": "test"})
    text = compare_runs([runs["default"], flipped], tmp_path / "out", n_boot=20, progress=False).read_text()
    assert "flipped - default: truth differs on 1 of the 6 shared cases (&#x27;P00_S1&#x27;)" in text


def test_same_cases_paired_unless_asked_and_mixed(runs: dict[str, Path], tmp_path: Path) -> None:
    three = [runs["default"], runs["twin"], runs["report"]]
    _, pairs = _tables(compare_runs(three, tmp_path / "mixed", n_boot=30, progress=False))
    how = pairs.groupby(["run_a", "run_b"]).pairing.unique().map(list).to_dict()
    assert how == {("twin", "default"): ["paired"], ("report", "default"): ["unpaired"],
                   ("report", "twin"): ["unpaired"]}
    paired = pairs[pairs.run_a == "twin"]
    assert (paired["diff"] == 0).all() and (paired.ci_low == 0).all() and (paired.ci_high == 0).all()

    html = compare_runs(three[:2], tmp_path / "forced", n_boot=30, progress=False, unpaired=True)
    _, forced = _tables(html)
    assert set(forced.pairing) == {"unpaired"} and (forced["diff"] == 0).all()
    assert (forced.ci_high > forced.ci_low).any()  # independent resampling of the same cases is not degenerate
    assert "twin - default: unpaired, as --unpaired asked, although both runs were scored on the same 30 cases: the" \
        in html.read_text(encoding="utf-8")


def test_cli_flag(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="medtasks")
    add_compare_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", str(runs["default"]), str(runs["twin"]), "--out", str(tmp_path / "c"),
                              "--n-boot", "20", "--unpaired"])
    assert args.unpaired is True
    assert parser.parse_args(["compare", "a", "b"]).unpaired is False
    assert run_compare(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("brier"))
    assert "twin - default" in line and "unpaired" in line


# --------------------------------------------------------------------------- segmentation

# case, patient, tp, fp, fn: truth-lesion cases c1, c3, c5; c2 both masks empty; c4 a false alarm.
SEG = [("c1", "p1", 6, 2, 2), ("c2", "p1", 0, 0, 0), ("c3", "p2", 2, 0, 6), ("c4", "p2", 0, 4, 0),
       ("c5", "p3", 9, 1, 0)]
F = Fraction
HAND = {  # worked out by hand from SEG
    "pooled_dice": F(2 * 17, 2 * 17 + 7 + 8), "pooled_iou": F(17, 17 + 7 + 8),
    "per_image_dice": (F(12, 16) + F(4, 10) + F(18, 19)) / 3, "per_image_iou": (F(6, 10) + F(2, 8) + F(9, 10)) / 3,
    # patients: p1 = 6/2/2, p2 = 2/4/6, p3 = 9/1/0
    "per_patient_dice": (F(12, 16) + F(4, 14) + F(18, 19)) / 3, "per_patient_iou": (F(6, 10) + F(2, 12) + F(9, 10)) / 3,
}


def _seg_frame(rows: list[tuple[str, str, int, int, int]], counts: bool = True) -> pd.DataFrame:
    out = []
    for case, patient, tp, fp, fn in rows:
        dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        iou = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
        out.append({"case_id": case, "patient_id": patient, "split": "test", "n_true": tp + fn, "n_pred": tp + fp,
                    "dice": dice, "iou": iou, "hd95": np.nan, "tp": tp, "fp": fp, "fn": fn, "tn": 100,
                    "true_lesion": int(tp + fn > 0), "pred_lesion": int(tp + fp > 0)})
    df = pd.DataFrame(out)
    return df if counts else df.drop(columns=["tp", "fp", "fn", "tn"])


SEG_META = {"task": "phe_segment", "kind": "segmentation", "labels": ["phe"], "split": "test"}


def test_segmentation_metrics_by_hand(tmp_path: Path) -> None:
    a = _write(tmp_path, "seg_a", _seg_frame(SEG), SEG_META)
    better = [(c, p, tp + fn, fp, 0) if c == "c3" else (c, p, tp, fp, fn) for c, p, tp, fp, fn in SEG]  # c3 found
    b = _write(tmp_path, "seg_b", _seg_frame(better), SEG_META)
    per_run, pairs = _tables(compare_runs([a, b], tmp_path / "out", n_boot=50, progress=False))
    assert set(pairs.pairing) == {"paired"}
    got = per_run[per_run.run == "seg_a"].set_index("metric")["value"]
    assert sorted(got.index) == sorted(HAND)
    for metric, want in HAND.items():
        assert got[metric] == pytest.approx(float(want), abs=1e-12), metric
    diff = pairs.set_index("metric")["diff"]
    # seg_b: c3 becomes tp=8, fn=0 -> pooled sums tp 23, fp 7, fn 2
    assert diff["pooled_dice"] == pytest.approx(float(F(46, 46 + 9) - HAND["pooled_dice"]), abs=1e-12)
    assert diff["per_image_dice"] == pytest.approx(float((1 - F(4, 10)) / 3), abs=1e-12)


def test_segmentation_per_patient_multiplicity_and_missing_counts(tmp_path: Path) -> None:
    run = align_runs([_write(tmp_path, "a", _seg_frame(SEG), SEG_META),
                      _write(tmp_path, "b", _seg_frame(SEG, counts=False), SEG_META)])
    fns = SegmentationMetrics.build(run[0])
    twice_p1 = np.array([0, 1, 0, 1, 4])  # patient p1 drawn twice, p3 once
    assert fns[("per_patient_dice", "overall")](twice_p1) == pytest.approx(float((2 * F(12, 16) + F(18, 19)) / 3))
    assert fns[("per_image_dice", "overall")](twice_p1) == pytest.approx(float((2 * F(12, 16) + F(18, 19)) / 3))
    assert fns[("pooled_dice", "overall")](twice_p1) == pytest.approx(float(F(2 * 21, 2 * 21 + 5 + 4)))
    with pytest.raises(ValueError, match="truth lesion"):
        fns[("per_image_dice", "overall")](np.array([1, 3]))

    html = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "out", n_boot=20, progress=False)
    per_run, _ = _tables(html)
    b = per_run[per_run.run == "b"].set_index("metric")["value"]
    assert b[["pooled_dice", "per_patient_dice", "pooled_iou", "per_patient_iou"]].isna().all()
    assert b["per_image_dice"] == pytest.approx(float(HAND["per_image_dice"]))
    assert "b: predictions.csv has no tp/fp/fn pixel counts" in html.read_text(encoding="utf-8")


def test_segmentation_errors_name_the_file(tmp_path: Path) -> None:
    a = _write(tmp_path, "a", _seg_frame(SEG), SEG_META)
    moved = _write(tmp_path, "moved", _seg_frame(SEG).assign(n_true=lambda d: d.n_true + (d.case_id == "c5")),
                   SEG_META)
    with pytest.raises(CompareError, match=r"moved: truth differs .*\('c5'\)"):
        compare_runs([a, moved], tmp_path / "x", n_boot=5, progress=False)
    cardiac = _write(tmp_path, "cardiac", pd.DataFrame({"case_id": ["c1"], "patient_id": ["p1"], "split": ["test"],
                                                        "dice_myocardium": [0.8]}), SEG_META)
    with pytest.raises(CompareError, match=r"cardiac/predictions.csv: lacks column dice.*multi-class layout"):
        compare_runs([a, cardiac], tmp_path / "x", n_boot=5, progress=False)
    assert not (tmp_path / "x").exists()
