"""cardiac_seg: the fusion rule and each gate mode on hand-made label maps; end to end on tiny synthetic CT
volumes (three branches, sliding window, inverse transforms: masks in the input's space, gate comparison)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtasks import api
from medtasks.config import ConfigError, load_config
from medtasks.synth.cardiac_ct import generate_cardiac_ct
from medtasks.tasks.cardiac_seg.config import CardiacSegConfig
from medtasks.tasks.cardiac_seg.evaluate import patient_row
from medtasks.tasks.cardiac_seg.infer import fuse

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "cardiac_seg.demo.yaml"
TINY = ["class12.epochs=1", "class12.steps_per_epoch=1", "class3.epochs=1", "class3.steps_per_epoch=1",
        "gate_model.epochs=1", "eval.n_boot=20", "data.split=[0.5,0.25,0.25]"]


def test_fusion_and_gates_by_hand() -> None:
    base = np.zeros((4, 4, 2), np.uint8)
    base[1:3, 1:3, :] = 1                     # myocardium
    base[0, 0, :] = 2                         # valve
    calc = np.zeros_like(base, bool)
    calc[0, 0, 0] = calc[1, 1, 0] = True      # one voxel on the valve, one on the myocardium
    fused, open_ = fuse(base, calc, "always")
    assert open_ and fused[0, 0, 0] == 3 and fused[1, 1, 0] == 3 and fused[0, 0, 1] == 2 and (fused == 1).sum() == 7
    assert fuse(base, calc, "seg_presence", min_voxels=2)[1] is True
    kept, open_ = fuse(base, calc, "seg_presence", min_voxels=3)
    assert not open_ and np.array_equal(kept, base)
    assert fuse(base, calc, "classifier", p_calcium=0.7, threshold=0.5)[1] is True
    assert fuse(base, calc, "classifier", p_calcium=0.2, threshold=0.5)[1] is False
    with pytest.raises(ValueError, match="classifier's probability"):
        fuse(base, calc, "classifier")
    with pytest.raises(ValueError, match="gate"):
        fuse(base, calc, "sometimes")


def test_patient_row_empty_class_rule() -> None:
    true = np.zeros((6, 6, 6), np.uint8)
    true[1:4, 1:4, 1:4] = 1
    pred = true.copy()
    row = patient_row(pred, true, (1.0, 1.0, 1.0), connectivity=3)
    assert row["dice_myocardium"] == 1.0
    assert np.isnan(row["dice_calcification"]) and np.isnan(row["dice_aortic_valve"])   # absent from both: undefined
    pred[5, 5, 5] = 3                                                                     # a false calcium voxel
    row = patient_row(pred, true, (1.0, 1.0, 1.0), connectivity=3)
    assert row["dice_calcification"] == 0.0 and row["calc_false_pos"] == 1 and row["has_calcium"] == 0


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match=r"class3\.patch: SwinUNETR needs a multiple of 32"):
        load_config(CONFIG, CardiacSegConfig, ["class3.model=swinunetr", "class3.feature_size=12", "class3.patch=32"])
    with pytest.raises(ConfigError, match=r"class12\.patch: basic_unet_3d needs a multiple of 16"):
        load_config(CONFIG, CardiacSegConfig, ["class12.patch=40"])
    with pytest.raises(ConfigError, match=r"class12\.feature_size: a multiple of 12 for SwinUNETR"):
        load_config(CONFIG, CardiacSegConfig, ["class12.model=swinunetr", "class12.patch=64"])
    with pytest.raises(ConfigError, match="stages"):
        load_config(CONFIG, CardiacSegConfig, ["stages=[class12,boxes]"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_end_to_end_masks_in_input_space(tmp_path) -> None:
    src = generate_cardiac_ct(tmp_path / "aicup", n_patients=8, shape=(48, 48, 40), spacing=(1.2, 1.2, 1.6),
                              calcium_fraction=0.5, seed=1, progress=False)
    out = tmp_path / "cardiac.csv"
    api.prepare("cardiac_seg", src, out, progress=False)
    rd, metrics = api.run("cardiac_seg", manifest=out, config=CONFIG, overrides=TINY, runs_dir=tmp_path / "runs",
                          progress=False)
    saved = json.loads((rd / "metrics.json").read_text())
    assert saved["layout"] == "cardiac" and set(saved["gate_comparison"]) == {"always", "classifier", "seg_presence"}
    for stage in ("class12", "class3", "gate"):
        assert (rd / stage / "checkpoints" / "best.pt").is_file() and (rd / stage / "history.csv").is_file()
    preds = pd.read_csv(rd / "predictions.csv", dtype={"patient_id": str})
    man = pd.read_csv(rd / "manifest.csv", dtype={"patient_id": str})
    assert len(preds) == (man.split == "test").sum()
    for r in preds.itertuples():
        img = nib.load(man.set_index("patient_id").loc[r.patient_id, "image"])
        mask = nib.load(rd / r.mask)
        assert mask.shape == img.shape and np.allclose(mask.affine, img.affine)     # inverse of Spacing/Orientation
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    assert 'id="gate-table"' in (rd / "report.html").read_text()
    pred_dir = api.predict("cardiac_seg", rd.path, Path(man.image.iloc[0]), out=tmp_path / "pred", progress=False)
    p = pd.read_csv(pred_dir / "predictions.csv")
    assert len(p) == 1 and nib.load(pred_dir / p["mask"][0]).shape == nib.load(man.image.iloc[0]).shape


def test_paper_profile_builds() -> None:
    """The GPU profile (configs/cardiac_seg.yaml: feature_size 48, 96^3 / 64^3 patches) builds its three networks;
    the calcium network runs one 64^3 patch on the CPU."""
    import torch

    from medtasks.tasks.cardiac_seg import CardiacSeg

    cfg = load_config(CONFIG.with_name("cardiac_seg.yaml"), CardiacSegConfig)
    assert (cfg.class12.feature_size, cfg.class12.patch, cfg.class3.patch) == (48, 96, 64)
    task = CardiacSeg(cfg)
    nets = {s: task.build_stage_model(s) for s in ("class12", "class3", "gate")}
    assert sum(p.numel() for p in nets["class12"].parameters()) > 60e6          # SwinUNETR fs48: ~62 M
    with torch.inference_mode():
        assert nets["class3"](torch.zeros(1, 1, 64, 64, 64)).shape == (1, 2, 64, 64, 64)
        assert nets["gate"](torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2)
