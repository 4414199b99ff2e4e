"""``medtasks export``: TorchScript and ONNX of the network with its preprocessing contract, checked against
torch on the run's own test inputs (tiny synthetic ich_classify with the slice-position input and 2.5-D
context; tiny phe_segment); the exported files reproduce evaluate's probabilities through the sidecar's rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medtasks import api, cli
from medtasks.engine import export
from medtasks.rundir import RunDir


@pytest.fixture(scope="module")
def runs(tiny_run):
    return {"ich_classify": tiny_run("ich_classify", "input.context=1", "eval.tta=false"),
            "phe_segment": tiny_run("phe_segment")}


def _test_inputs(rd: RunDir, n: int):
    task = api.task_from_run(rd)
    df = task.load_manifest(rd / "manifest.csv")
    rows = task.export_rows(df).head(n).reset_index(drop=True)
    batch = next(iter(task.loader(rows, "test", False, n)))
    return task, rows, export.batch_inputs(batch, task.prepare_batch())


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_ich_export_reproduces_evaluate_probabilities(runs, fmt, tmp_path, capsys) -> None:
    rd = runs["ich_classify"]
    assert cli.main(["export", "ich_classify", "--run", str(rd.path), "--format", fmt, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    side = json.loads((tmp_path / "model.json").read_text())
    assert f"max |diff| {side['parity']['max_abs_diff']:.2g}" in printed
    path = tmp_path / side["file"]
    assert path.suffix == (".onnx" if fmt == "onnx" else ".ts") and path.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*tmp"))                         # nothing half-written left
    assert side["parity"]["max_abs_diff"] <= 1e-4 and side["parity"]["n_inputs"] == 8
    assert [i["name"] for i in side["inputs"]] == ["image", "z"]
    assert side["inputs"][0]["shape"] == ["batch", 9, 32, 32]    # 3 windows x 3 slices (context 1), 32 px
    task = api.task_from_run(rd)
    assert side["labels"] == list(task.labels) and side["synthetic"] is True
    assert side["temperature"] == pytest.approx(task.temperature())
    assert side["thresholds"] == task.thresholds()
    assert side["preprocessing"]["input"]["windows"] == [list(w) for w in task.cfg.input.windows]
    assert side["preprocessing"]["fitted"]["norm_mean"] == task.state["norm_mean"]
    # the file, fed the run's own test slices, gives evaluate's probabilities through the sidecar's rule
    net = export.ExportedNetwork("model", task.load_model(rd), (), ("image", "z"))
    _, rows, inputs = _test_inputs(rd, 6)
    logits = export.run_exported(path, fmt, net, inputs)
    probs = _sigmoid(logits / side["temperature"])
    preds = pd.read_csv(rd / "predictions.csv", dtype={"sop_instance_uid": str}).set_index("sop_instance_uid")
    want = preds.loc[rows["sop_instance_uid"].astype(str), [f"prob_{lab}" for lab in side["labels"]]].to_numpy()
    np.testing.assert_allclose(probs, want, atol=1e-5)


def test_segmentation_export_and_a_failed_parity_check_removes_the_file(runs, tmp_path, monkeypatch) -> None:
    rd = runs["phe_segment"]
    out, sides = api.export("phe_segment", rd.path, "onnx", tmp_path / "ok")
    side = sides[0]
    assert side["inputs"][0]["shape"][1:] == [3, 64, 64] and side["threshold"] == 0.5
    task, _, inputs = _test_inputs(rd, 4)
    import onnxruntime as ort

    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"image": inputs[0].numpy()})[0]
    with torch.no_grad():
        ref = task.load_model(rd)(inputs[0]).numpy()
    assert got.shape == ref.shape == (4, 1, 64, 64) and np.abs(got - ref).max() <= 1e-4
    monkeypatch.setattr(export, "TOLERANCE", -1.0)                   # no export can pass: refused, removed
    with pytest.raises(export.ExportError, match="the file was removed"):
        api.export("phe_segment", rd.path, "torchscript", tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.ts").exists() and not (tmp_path / "bad" / "model.json").exists()


def test_export_refuses_another_task_and_an_unknown_format(runs, tmp_path) -> None:
    with pytest.raises(ValueError, match="is a phe_segment run"):
        api.export("ich_classify", runs["phe_segment"].path, "onnx", tmp_path)
    with pytest.raises(ValueError, match="--format 'tflite'"):
        api.export("phe_segment", runs["phe_segment"].path, "tflite", tmp_path)


def test_cardiac_exports_one_file_per_stage(tiny_run, tmp_path) -> None:
    """cardiac_seg: class12, class3 and the gate, each with its window shape, sliding-window and fusion rule."""
    rd = tiny_run("cardiac_seg")
    out, sides = api.export("cardiac_seg", rd.path, "torchscript", tmp_path / "ts")
    by = {s["stage"]: s for s in sides}
    assert set(by) == {"class12", "class3", "gate"} and all((out / f"{k}.ts").is_file() for k in by)
    task = api.task_from_run(rd)
    p = task.cfg.class12.patch
    assert by["class12"]["inputs"][0]["shape"] == ["batch", 1, p, p, p]
    assert by["class12"]["sliding_window"] == {"roi_size": [p] * 3, "overlap": task.cfg.infer.overlap,
                                               "mode": task.cfg.infer.mode}
    assert by["gate"]["inputs"][0]["shape"] == ["batch", 1] + [task.cfg.gate_model.size] * 3
    assert all(s["parity"]["max_abs_diff"] <= 1e-4 for s in sides)
    module = torch.jit.load(str(out / "class3.ts"))
    x = torch.rand(1, 1, *[task.cfg.class3.patch] * 3)
    with torch.no_grad():
        assert torch.allclose(module(x), task.load_stage_model(rd, "class3")(x), atol=1e-4)


def test_phe_detect_exports_onnx_through_ultralytics(tiny_run, tmp_path) -> None:
    """ultralytics' exporter writes the file; onnxruntime gives torch's raw output on the run's test slices."""
    rd = tiny_run("phe_detect")
    with pytest.raises(ValueError, match="use --format onnx"):
        api.export("phe_detect", rd.path, "torchscript", tmp_path / "ts")
    out, (side,) = api.export("phe_detect", rd.path, "onnx", tmp_path / "onnx")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]   # no staging left behind
    task = api.task_from_run(rd)
    imgsz = task.cfg.detect.imgsz
    assert side["inputs"][0]["shape"] == [1, 3, imgsz, imgsz] and side["labels"] == list(task.labels)
    assert side["parity"]["scores"] <= 1e-4 and side["parity"]["boxes_px"] <= 1e-4 * imgsz
    from medtasks.engine.yolo_export import letterbox_batch

    df = task.load_manifest(rd / "manifest.csv")
    x = letterbox_batch(list(task.eval_rows(df)["image"].head(2)), imgsz)
    import onnxruntime as ort

    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {side["inputs"][0]["name"]: x[:1].numpy()})[0]
    assert got.shape[:2] == (1, 4 + len(task.labels))
    assert np.all((got[0, 4:] >= 0) & (got[0, 4:] <= 1))              # per-label scores, before NMS
