"""``medtasks export --format bundle``: for each one-network task a tiny synthetic run is exported as a MONAI
bundle, the bundle is run by MONAI's own runner (``python -m monai.bundle run``, a subprocess, offline) on a folder
of the run's test inputs, and its outputs are compared with ``medtasks predict`` on the same folder: probabilities
within 1e-5 and the same calls, identical masks (PNG pixels; NIfTI voxels and affine). The runs resize (input.size
below the synthetic matrix, a non-integer ratio for the grey classifiers) so the resize steps are exercised both
ways. Tasks without a bundle, and runs whose predictions need more than the network, are refused with the reason."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medtasks import api, cli
from medtasks.rundir import RunDir

EXTRA = {"ich_classify": ["input.context=1", "eval.tta=true",       # 64 px DICOM -> 32 px, 2.5-D neighbours,
                          "eval.tta_views=[hflip,rotate:10]"],        # test-time augmentation in the bundle
         "phe_classify": ["input.size=48"],                           # 64 -> 48: medtasks' non-integer resize
         "phe_multilabel": ["input.size=48"],
         "xray_classify": ["input.size=48"],
         "phe_segment": ["input.size=32"],                            # 64 -> 32 and the mask back to 64
         "ms_segment": ["eval.threshold=0.53",                        # 96 x 112 slices -> 32; the one-epoch
                        "postprocess.min_lesion_mm3=10"]}             # network gives 0.51-0.55: split it
TASKS = tuple(EXTRA)


@pytest.fixture(scope="module")
def runs(tiny_run):
    return {t: tiny_run(t, *extra) for t, extra in EXTRA.items()}


def _test_inputs(task_name: str, rd: RunDir, folder: Path) -> Path:
    """Copies of the run's own test inputs: whole series (ich: z depends on the series), volumes, or slices."""
    task = api.task_from_run(rd)
    rows = task.eval_rows(task.load_manifest(rd / "manifest.csv"))
    if task_name == "ich_classify":
        files = rows[rows["series_instance_uid"].isin(rows["series_instance_uid"].unique()[:2])]["path"]
    else:
        files = rows[task.input_column].drop_duplicates().head(2 if task_name == "ms_segment" else 5)
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    return folder


def _run_bundle(bundle: Path, inputs: Path, out: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("fire") is None:   # MONAI's command line (monai/bundle/__main__.py) needs it
        pytest.fail("python -m monai.bundle needs the `fire` package: medtasks' dependencies must list it")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HF_HUB_OFFLINE="1", NO_PROXY="*", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                        "--dataset_dir", str(inputs), "--output_dir", str(out)],
                       cwd=bundle, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"monai.bundle run failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"


def _check_layout(bundle: Path, task_name: str) -> dict:
    for rel in ("configs/inference.json", "configs/metadata.json", "configs/logging.conf", "models/model.ts",
                "models/model.pt", "docs/README.md"):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format"):
        assert meta[key], key
    assert "medtasks" in meta["required_packages_version"] and meta["medtasks"]["synthetic"] is True
    assert set(meta["network_data_format"]) == {"inputs", "outputs"}
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    # every component is MONAI's (short names) or a medtasks one the metadata and README name with the reason
    targets = re.findall(r'"_target_": "([^"]+)"', json.dumps(config))
    components = set(meta["medtasks"]["medtasks_components"])
    assert all("." not in t or t in components or t == "medtasks.io.radiograph.read_radiograph" for t in targets), \
        sorted(t for t in targets if "." in t)
    handlers = {h["_target_"]: h for h in config["handlers"]}
    assert handlers["CheckpointLoader"]["load_path"].endswith("'models', 'model.pt')")      # the weights used
    assert "model.ts" in config["network_def"] and config["evaluator"]["_target_"] == "SupervisedEvaluator"
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu")
    assert set(state) == set(torch.jit.load(str(bundle / "models" / "model.ts")).state_dict())
    readme = (bundle / "docs" / "README.md").read_text()
    assert "SYNTHETIC" in readme and "medtasks must be installed" in readme and "python -m monai.bundle run" in readme
    assert all(c in readme for c in components) and f"tasks/{task_name}.md" in readme
    assert re.search(r"^### Measured", readme, re.M) and not re.search(r"^## Measured", readme, re.M)   # card
    return meta


def _compare_classification(bout: Path, pout: Path, labels: tuple[str, ...]) -> float:
    got = pd.read_csv(bout / "predictions.csv", dtype={"case_id": str})
    want = pd.read_csv(pout / "predictions.csv", dtype={"case_id": str}).set_index("case_id")
    assert list(got.columns) == ["case_id", *(f"prob_{lab}" for lab in labels), *(f"pred_{lab}" for lab in labels)]
    assert sorted(got["case_id"]) == sorted(want.index) and len(got) >= 5
    got = got.set_index("case_id").loc[want.index]
    probs, calls = [f"prob_{lab}" for lab in labels], [f"pred_{lab}" for lab in labels]
    diff = float(np.abs(got[probs].to_numpy() - want[probs].to_numpy()).max())
    assert diff <= 1e-5
    assert (got[calls].to_numpy() == want[calls].to_numpy()).all() and got[calls].dtypes.eq(int).all()
    return diff


def _compare_masks(bout: Path, pout: Path, suffix: str) -> None:
    names = sorted(p.name for p in (pout / "masks").iterdir())
    assert names and sorted(p.name for p in (bout / "masks").iterdir()) == names and names[0].endswith(suffix)
    for n in names:
        if suffix == ".png":
            got, want = np.asarray(Image.open(bout / "masks" / n)), np.asarray(Image.open(pout / "masks" / n))
            assert got.dtype == want.dtype == np.uint8 and np.array_equal(got, want), n
        else:
            got, want = nib.load(bout / "masks" / n), nib.load(pout / "masks" / n)
            assert got.shape == want.shape and np.allclose(got.affine, want.affine, atol=1e-5), n
            assert np.array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj)), n


@pytest.mark.parametrize("task_name", TASKS)
def test_bundle_gives_medtasks_predict_outputs(runs, task_name, tmp_path, capsys) -> None:
    rd = runs[task_name]
    bundle = tmp_path / "bundle"
    if task_name == "ich_classify":   # the command line, once
        assert cli.main(["export", task_name, "--run", str(rd.path), "--format", "bundle", "--out", str(bundle)]) == 0
        printed = capsys.readouterr().out
        assert "MONAI bundle" in printed and "python -m monai.bundle run" in printed
    else:
        out, (record,) = api.export(task_name, rd.path, "bundle", bundle)
        assert out == bundle and record["parity"]["max_abs_diff"] <= 1e-4
        assert record["verified"]["verify_net_in_out"] == "passed"
    meta = _check_layout(bundle, task_name)
    inputs = _test_inputs(task_name, rd, tmp_path / "inputs")
    _run_bundle(bundle, inputs, tmp_path / "bundle_out")
    pout = api.predict(task_name, rd.path, inputs, tmp_path / "predict_out", progress=False)
    task = api.task_from_run(rd)
    if task.kind == "segmentation":
        _compare_masks(tmp_path / "bundle_out", pout, ".nii.gz" if task_name == "ms_segment" else ".png")
        assert meta["network_data_format"]["outputs"]["pred"]["format"] == "segmentation"
    else:
        _compare_classification(tmp_path / "bundle_out", pout, task.labels)
        assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
            str(i): lab for i, lab in enumerate(task.labels)}


def test_runs_whose_predictions_need_more_than_the_network_are_refused(runs, tmp_path) -> None:
    """ich_classify with the stage-2 sequence head (its temperature and thresholds were fitted on the head's
    outputs), and phe_segment trained on NIfTI slices: refused with the reason, nothing written."""
    rd = runs["ich_classify"]
    task = api.task_from_run(rd)
    (rd.path / "sequence").mkdir()      # what a run with sequence.enabled=true has
    try:
        with pytest.raises(ValueError, match="sequence head.*--format torchscript or onnx"):
            task.export(rd, task.load_manifest(rd / "manifest.csv"), "bundle", tmp_path / "ich", 8)
    finally:
        (rd.path / "sequence").rmdir()
    rd = runs["phe_segment"]
    task = api.task_from_run(rd)
    task.cfg.input.source = "nifti"
    with pytest.raises(ValueError, match="input.source=nifti"):
        task.export(rd, task.load_manifest(rd / "manifest.csv"), "bundle", tmp_path / "seg", 8)
    assert not (tmp_path / "ich").exists() and not (tmp_path / "seg").exists()


def test_multi_network_and_detection_tasks_refuse_with_what_to_use(tmp_path) -> None:
    cardiac = api.get_task_class("cardiac_seg")
    with pytest.raises(ValueError, match="several networks.*--format torchscript or --format onnx"):
        cardiac(cardiac.Config()).export(None, None, "bundle", tmp_path / "c", 8)
    detect = api.get_task_class("phe_detect")
    with pytest.raises(ValueError, match="ultralytics' exporter: use --format onnx"):
        detect(detect.Config()).export(None, None, "bundle", tmp_path / "d", 8)
    assert "--format onnx" in detect(detect.Config()).bundle_refusal()


def test_monai_resize_cannot_stand_in_for_the_medtasks_ones() -> None:
    """The measured reason for ResizeToShaped: MONAI's inverse of an area resize is not predict's bilinear map."""
    from medtasks.transforms.bundle import monai_resize_gap

    assert monai_resize_gap() > 0.01
