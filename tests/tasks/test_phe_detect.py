"""phe_detect end to end on the tiny synthetic release, with the network blocked: prepare -> YOLO dataset in the
run directory (labels exact) -> ultralytics training -> evaluation (ultralytics' mAP and ours with CIs, image-level
table) -> report -> predict; AP by hand."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medtasks import api
from medtasks.engine.yolo import ultralytics_compute_ap, ultralytics_env
from medtasks.metrics.detection import ap_from_matches, average_precision, coco_map, match_image

_trap = getattr(np, "trapezoid", None) or np.trapz
CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "phe_detect.demo.yaml"
TINY = ["train.epochs=1", "train.batch_size=8", "detect.imgsz=64", "detect.plots=false", "eval.n_boot=20",
        "eval.batch_size=8", "data.split=[0.5,0.25,0.25]", "eval.conf=0.0001"]


@pytest.fixture(scope="module")
def trained(phe_release, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    tries: list = []

    def refuse(*a, **k):
        tries.append(a)
        raise OSError("network blocked by test")

    for obj, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                      (socket, "getaddrinfo")):
        mp.setattr(obj, name, refuse)
    try:
        out = tmp_path_factory.mktemp("m") / "det.csv"
        api.prepare("phe_detect", phe_release, out, progress=False)
        rd, metrics = api.run("phe_detect", manifest=out, config=CONFIG, overrides=TINY,
                              runs_dir=tmp_path_factory.mktemp("runs"), progress=False)
        folder = sorted((phe_release / "SubdatasetC_PNG" / "set").iterdir())[0]   # one patient's 8 slices
        out_dir = api.predict("phe_detect", rd.path, folder,
                              out=tmp_path_factory.mktemp("pred"), progress=False)
    finally:
        mp.undo()
    assert tries == []                                                   # nothing tried to reach the network
    return rd, metrics, out_dir


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_yolo_dataset_in_the_run(trained) -> None:
    rd, _, _ = trained
    data = yaml.safe_load((rd / "data.yaml").read_text())
    assert data["names"] == {0: "phe"} and Path(data["path"]) == (rd / "yolo_data").resolve()
    man = pd.read_csv(rd / "manifest.csv", dtype={"patient_id": str})
    for split in ("train", "val", "test"):
        assert len(list((rd / "yolo_data" / "images" / split).iterdir())) == (man.split == split).sum()
    r = man[man.n_boxes > 0].iloc[0]
    lab = rd / "yolo_data" / "labels" / r.split / f"{Path(r.image).stem}.txt"
    got = [list(map(float, ln.split()[1:])) for ln in lab.read_text().splitlines()]
    want = [[(b[0] + b[2]) / 2 / r.width, (b[1] + b[3]) / 2 / r.height, (b[2] - b[0]) / r.width,
             (b[3] - b[1]) / r.height] for b in json.loads(r.boxes)]
    assert np.allclose(got, want, atol=1e-6)
    neg = man[man.n_boxes == 0].iloc[0]
    assert (rd / "yolo_data" / "labels" / neg.split / f"{Path(neg.image).stem}.txt").read_text() == ""
    assert (rd / "checkpoints" / "best.pt").is_file() and (rd / "ultralytics" / "train" / "results.csv").is_file()
    hist = pd.read_csv(rd / "history.csv")
    assert {"epoch", "train_loss", "val_loss", "val_map50", "val_map50_95"} <= set(hist.columns) and len(hist) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_metrics_predictions_report(trained) -> None:
    rd, metrics, out_dir = trained
    saved = json.loads((rd / "metrics.json").read_text())
    assert saved["kind"] == "detection" and 0 <= saved["ultralytics"]["map50"] <= 1
    assert set(saved["coco"]) == {"map50_95", "map50", "map75"} and 0 <= saved["coco"]["map50"] <= 1
    for k in ("ap50", "map50_95", "image_accuracy", "image_recall", "image_precision", "image_f1"):
        h = saved["headline"][k]
        assert h["value"] is not None and (h["ci_low"] is None or h["ci_low"] <= h["value"] <= h["ci_high"]), k
    preds = pd.read_csv(rd / "predictions.csv")
    assert list(preds.columns)[:3] == ["image", "patient_id", "split"]
    assert {"class_id", "confidence", "x1", "y1", "x2", "y2", "class_name"} <= set(preds.columns)
    man = pd.read_csv(rd / "manifest.csv")
    assert set(preds.image) == set(man.loc[man.split == "test", "image"])   # every test slice has >= 1 row
    cm = np.array(saved["confusion_matrix"])
    assert cm.sum() == saved["n"] and cm[1].sum() == (man.loc[man.split == "test", "n_boxes"] > 0).sum()
    html = (rd / "report.html").read_text()
    assert 'id="box-table"' in html and "COCO (pycocotools COCOeval)" in html and 'id="image-report"' in html
    assert "figures/confusion_matrices.png" in html
    p = pd.read_csv(out_dir / "predictions.csv")
    assert len(set(p.image)) == 8 and "class_id" in p.columns


@pytest.fixture(scope="module")
def compute_ap():
    """ultralytics' own compute_ap, imported inside medtasks' offline fence."""
    return ultralytics_compute_ap()


def test_average_precision_by_hand(compute_ap) -> None:
    # two truth boxes in one image; detections: hit (0.9), miss (0.8), hit (0.7)
    m = match_image([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8], [20, 20, 30, 30, 0.7]],
                    [[0, 0, 10, 10], [20, 20, 30, 30]], iou=0.5)
    assert m["tp"][:, 0].tolist() == [True, False, True]
    # precision envelope sampled at 101 recall points: 1.0 below recall 0.5, 2/3 from 0.5 (the value after a
    # step counts at the step), and 0 at recall 1.0 (the sentinel: ultralytics' rule, a perfect detector scores 0.995)
    x = np.linspace(0, 1, 101)
    env = np.where(x < 0.5, 1.0, 2 / 3)
    env[-1] = 0.0
    assert average_precision(m["tp"][:, 0], m["scores"], 2, compute_ap) == pytest.approx(_trap(env, x), abs=1e-9)
    assert ap_from_matches([m], compute_ap=compute_ap) == pytest.approx(_trap(env, x))
    # a duplicate detection of an already matched box is a false positive
    d = match_image([[0, 0, 10, 10, 0.9], [1, 1, 10, 10, 0.8]], [[0, 0, 10, 10]], iou=0.5)
    assert d["tp"][:, 0].tolist() == [True, False]
    assert np.isnan(average_precision(np.zeros(0, bool), np.zeros(0), 0, compute_ap))
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3, compute_ap) == 0.0
    perfect = match_image([[0, 0, 10, 10, 0.9]], [[0, 0, 10, 10]], iou=0.5)
    assert average_precision(perfect["tp"][:, 0], perfect["scores"], 1, compute_ap) == pytest.approx(0.995)
    # 3 of 4 boxes found, all at precision 1: recall never reaches 1, so precision is 0 from recall 0.75 on
    assert average_precision(np.ones(3, bool), np.array([0.9, 0.8, 0.7]), 4, compute_ap) == pytest.approx(0.745)


def test_our_ap_equals_ultralytics_ap_per_class_on_the_same_matches(compute_ap) -> None:
    """The validator's own per-class AP (sorting, curves, compute_ap) on random matches at the 10 IoU thresholds."""
    with ultralytics_env(progress=False):
        from ultralytics.utils.metrics import ap_per_class
    rng = np.random.default_rng(0)
    for n_det, n_true in ((40, 25), (7, 30), (60, 10)):
        tp = np.sort(rng.random((n_det, 1)) < rng.uniform(0.2, 0.9, (1, 10)), axis=1)[:, ::-1]  # IoU-monotone
        scores = rng.permutation(n_det) / n_det + 0.01                               # distinct: no tie order
        ref = ap_per_class(tp, scores, np.zeros(n_det), np.zeros(n_true))[5][0]
        ours = [ap_from_matches([{"scores": scores, "tp": tp, "n_true": n_true}], j, compute_ap=compute_ap)
                for j in range(10)]
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
        assert ap_from_matches([{"scores": scores, "tp": tp, "n_true": n_true}], None,
                               compute_ap=compute_ap) == pytest.approx(ref.mean(), abs=1e-12)


def test_coco_map_by_hand_and_a_perfect_detector(compute_ap) -> None:
    """One slice, two truth boxes; detections: an exact hit (0.9), a false positive (0.8), and a hit of IoU
    100/140 = 0.714 (0.7): a true positive at IoU 0.50-0.70 (5 thresholds), a false one at 0.75-0.95.
    COCO: precision envelope at 101 recall points r = 0, 0.01, ..., 1 (0 beyond the highest recall reached)."""
    dets = [[[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8], [20, 20, 30, 34, 0.7]]]
    truths = [[[0, 0, 10, 10], [20, 20, 30, 30]]]
    ap50 = (51 * 1.0 + 50 * 2 / 3) / 101        # r <= 0.5: precision 1; 0.5 < r <= 1: 2/3
    ap75 = 51 / 101                              # recall stops at 0.5
    got = coco_map(dets, truths)
    assert got["map50"] == pytest.approx(ap50, abs=1e-9) and got["map75"] == pytest.approx(ap75, abs=1e-9)
    assert got["map50_95"] == pytest.approx((5 * ap50 + 5 * ap75) / 10, abs=1e-9)
    # the same detections spread over two slices give the same COCO numbers (matching is per image)
    split = coco_map([dets[0][:2], dets[0][2:]], [truths[0][:1], truths[0][1:]])
    assert split == pytest.approx(got, abs=1e-12)
    # a perfect detector: 1.0 in COCOeval, 0.995 in ultralytics' AP
    perfect_dets, perfect_truths = [[[0, 0, 10, 10, 0.9]], [[5, 5, 25, 15, 0.8]]], [[[0, 0, 10, 10]], [[5, 5, 25, 15]]]
    assert coco_map(perfect_dets, perfect_truths) == pytest.approx(dict.fromkeys(("map50_95", "map50", "map75"), 1.0))
    matches = [match_image(d, t) for d, t in zip(perfect_dets, perfect_truths)]
    assert ap_from_matches(matches, None, compute_ap=compute_ap) == pytest.approx(0.995)
    # no detection: 0; no truth box: undefined (COCOeval's -1 -> NaN)
    assert coco_map([[]], truths)["map50_95"] == 0.0
    assert np.isnan(coco_map(dets, [[]])["map50"])
    with pytest.raises(ValueError, match="2 images of detections but 1"):
        coco_map([[], []], truths)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_external_evaluation_and_subgroups_of_a_detection_run(trained, tmp_path) -> None:
    """`medtasks evaluate` of phe_detect: on the run's own test rows it gives the run's AP figures exactly (the YOLO
    dataset written in the evaluation folder); `--by` recomputes AP per subgroup from image_matches.csv, and a
    group holding every image gives the run's AP50 / mAP50-95."""
    rd, _, _ = trained
    man = pd.read_csv(rd / "manifest.csv", dtype={"patient_id": str})
    test = man[man.split == "test"].copy()
    test["site"] = "A"                                               # one group: every image
    test["half"] = ["x" if i % 2 else "y" for i in range(len(test))]
    test.to_csv(tmp_path / "m.csv", index=False)
    folder, metrics = api.evaluate("phe_detect", rd.path, tmp_path / "m.csv", by=["site", "half"],
                                   out=tmp_path / "ev")
    own = json.loads((rd / "metrics.json").read_text())
    for k in ("ap50", "map50_95"):
        assert metrics["headline"][k]["value"] == pytest.approx(own["headline"][k]["value"], abs=1e-12)
    assert metrics["coco"] == pytest.approx(own["coco"], nan_ok=True)
    assert (folder / "data.yaml").is_file() and not (rd / "evaluate").exists()
    table = pd.read_csv(folder / "subgroups.csv").set_index(["by", "group", "metric"])
    for k in ("ap50", "map50_95"):
        if own["headline"][k]["value"] == own["headline"][k]["value"]:
            assert table.loc[("site", "A", k), "value"] == pytest.approx(own["headline"][k]["value"], abs=1e-12)
    m = pd.read_csv(folder / "image_matches.csv")
    assert len(m) == len(test) and (m.n_true.to_numpy() == test.n_boxes.to_numpy()).all()
    assert 'id="subgroups"' in (folder / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compare_has_a_detection_metric_set(trained, tmp_path) -> None:
    """`medtasks compare` scores detection runs from image_matches.csv: the run against its own re-evaluation is
    paired on the same images and every difference is 0."""
    rd, _, _ = trained
    folder, _ = api.evaluate("phe_detect", rd.path, rd / "manifest.csv", split="test", out=tmp_path / "ev")
    page = api.compare([rd.path, folder], out=tmp_path / "cmp", n_boot=50, progress=False)
    pairs = pd.read_csv(page.parent / "compare_pairs.csv")
    assert set(pairs.pairing) == {"paired"} and {"ap50", "map50_95", "image_f1"} <= set(pairs.metric)
    assert np.allclose(pairs["diff"].dropna(), 0.0)
