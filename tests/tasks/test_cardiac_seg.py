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
    with pytest.raises(ConfigError, match=r"class12\.ignore_classes: label values among 0"):
        load_config(CONFIG, CardiacSegConfig, ["class12.ignore_classes=[1,2]"])
    with pytest.raises(ConfigError, match="only the dice_ce loss"):
        load_config(CONFIG, CardiacSegConfig, ["class12.ignore_classes=[3]", "class12.loss=tversky"])
    with pytest.raises(ConfigError, match="class3.ignore_classes"):
        load_config(CONFIG, CardiacSegConfig, ["class3.ignore_classes=[0]", "class3.loss=dice_ce"])
    cfg = load_config(CONFIG.with_name("cardiac_seg.yaml"), CardiacSegConfig)     # paper defaults: today's behaviour
    assert (cfg.input.clip, cfg.class12.ignore_classes, cfg.postprocess.min_lesion_mm3) == (True, [], 0.0)


def test_masked_dice_ce_ignores_voxels() -> None:
    """class12.ignore_classes: the ignored voxels change neither term; nothing ignored is MONAI's DiceCELoss; and
    ignoring is the same as scoring only the kept voxels (MONAI's DiceCELoss on them, an independent path)."""
    import torch
    from monai.losses import DiceCELoss

    from medtasks.losses.segmentation import MaskedDiceCELoss

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 6, 5, 4, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (1, 1, 6, 5, 4), generator=g).float()    # 0 background, 1, 2, 3 calcium
    y2 = y.clone().clamp(max=2)
    monai_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    xd = x.detach()
    assert float(MaskedDiceCELoss([])(xd, y2)) == pytest.approx(float(monai_loss(xd, y2)), rel=1e-6)
    loss = MaskedDiceCELoss([0, 3])
    keep = (y[0, 0] == 1) | (y[0, 0] == 2)
    kept = monai_loss(xd[:, :, keep][..., None], y[:, :, keep][..., None])
    value = loss(x, y)
    assert float(value.detach()) == pytest.approx(float(kept), rel=1e-6)
    x_other = x.detach().clone()
    x_other[:, :, ~keep] = 50.0 * torch.randn(int((~keep).sum()), generator=g)   # change only ignored logits
    y_other = torch.where((y == 0) | (y == 3), 3 - y, y)                          # swap the ignored labels 0 <-> 3
    assert float(loss(x_other, y_other)) == pytest.approx(float(value.detach()), rel=1e-6)
    value.backward()
    assert float(x.grad[:, :, ~keep].abs().max()) == 0.0 and float(x.grad[:, :, keep].abs().max()) > 0
    empty = loss(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))          # all background: nothing to score
    assert float(empty) == 0.0
    with pytest.raises(ValueError, match="not ignored"):
        MaskedDiceCELoss([0])(xd, y)                                              # label 3 on 3 channels


def test_intensity_clip_and_ignored_calcium_label_in_transforms(tmp_path) -> None:
    import torch

    from medtasks.tasks.cardiac_seg import CardiacSeg

    img = np.full((32, 32, 32), -1000.0, np.float32)
    img[10, 10, 10] = 3500.0                                         # beyond a_max 2000
    lab = np.zeros((32, 32, 32), np.uint8)
    lab[8:12, 8:12, 8:12], lab[20:24, 20:24, 20:24], lab[10, 10, 10] = 1, 2, 3
    for arr, name in ((img, "ct.nii.gz"), (lab, "gt.nii.gz")):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / name)
    rec = {"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "gt.nii.gz")}
    paper = ["input.hu_min=-1000", "input.hu_max=2000"]
    for clip, top in ((True, 1.0), (False, (3500 + 1000) / 3000)):
        task = CardiacSeg(load_config(CONFIG, CardiacSegConfig, [*paper, f"input.clip={str(clip).lower()}"]))
        out = task.stage_transforms("class12", "val")(rec)
        assert float(out["image"].max()) == pytest.approx(top) and float(out["image"].min()) == 0.0
        assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0}          # validation: calcium -> 0
    from medtasks.losses.segmentation import MaskedDiceCELoss

    # the demo's 48^3 patch covers the padded 32^3 volume: every training patch holds every label there is
    for ignore, labels in (("[]", {0.0, 1.0, 2.0}), ("[0,3]", {0.0, 1.0, 2.0, 3.0})):
        task = CardiacSeg(load_config(CONFIG, CardiacSegConfig, [f"class12.ignore_classes={ignore}"]))
        patches = task.stage_transforms("class12", "train")(rec)
        assert [set(torch.unique(p["label"]).tolist()) for p in patches] == [labels] * 2
        assert set(torch.unique(task.stage_transforms("class12", "val")(rec)["label"]).tolist()) == {0.0, 1.0, 2.0}
        assert isinstance(task.build_stage_loss("class12"), MaskedDiceCELoss) == (ignore != "[]")


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
    post = saved["postprocess"]                                    # demo: auto, on the validation patients
    assert post["mode"] == "auto" and post["gate"] == saved["gate"] and post["connectivity"] == 3
    assert [r["min_lesion_mm3"] for r in post["validation_curve"]] == [0, 0.5, 1, 2, 3, 5]
    les = pd.read_csv(rd / "lesions.csv", dtype={"case_id": str})
    assert (les.kind == "true").sum() == preds.calc_true_lesions.sum()
    assert saved["lesion_table"]["gate"] == saved["gate"]
    assert (les.kind == "pred").sum() == preds.calc_pred_lesions.sum()
    assert ((les.kind == "true") & (les.status_overlap == "detected")).sum() == preds.calc_detected.sum()
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
