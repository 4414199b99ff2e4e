"""medtasks.engine.yolo: ultralytics' trainer/validator/predictor with no network and no writes to $HOME."""

from __future__ import annotations

import importlib
import math
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtasks.engine import yolo


def _make_dataset(root: Path, size: int = 96) -> Path:
    """8 grey images with one bright box each (6) or nothing (2 negatives), split 4/2/2; returns data.yaml."""
    rng = np.random.default_rng(0)
    splits = {"train": range(0, 4), "val": range(4, 6), "test": range(6, 8)}
    negatives = {3, 7}  # one in train, one in test: empty label files, as ultralytics expects
    for split, idx in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in idx:
            im = np.full((size, size), 60, np.uint8) + rng.integers(0, 10, (size, size), dtype=np.uint8)
            line = ""
            if i not in negatives:
                w, h = int(rng.integers(20, 40)), int(rng.integers(20, 40))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                im[y:y + h, x:x + w] = 220
                line = f"0 {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}\n"
            Image.fromarray(im).save(root / "images" / split / f"im{i}.png")
            (root / "labels" / split / f"im{i}.txt").write_text(line)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n  0: phe\n")
    return data


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (connect and DNS raise, and no call may try) and a fresh empty $HOME that must stay empty."""
    importlib.import_module("matplotlib.font_manager")  # matplotlib's own font cache: resolved with the real $HOME

    attempts: list[tuple] = []  # ultralytics swallows some errors (check_font, is_url): count tries instead

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    home = tmp_path / "home"
    home.mkdir()
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(home) if var == "HOME" else str(home / f".{var.lower()}"))
    cwd = tmp_path / "cwd"  # ultralytics' relative defaults (runs/, weights/, datasets/) would land here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield home, cwd
    assert attempts == [], attempts  # nothing even tried to reach the network


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_validate_predict_offline(tmp_path, offline):
    home, cwd = offline
    data = _make_dataset(tmp_path / "ds")
    cfg = tmp_path / "cache" / "ultralytics"
    project = tmp_path / "run" / "yolo"

    res = yolo.train_yolo(data, project, "yolov8n.yaml", epochs=1, patience=5, imgsz=64, batch=4, device="cpu",
                          seed=0, workers=0, amp=True, progress=False, config_dir=cfg, extra={"plots": False})
    assert res.best_pt.is_file() and res.best_pt.is_relative_to(project)
    assert res.results_csv.is_file() and res.epochs_run == 1 and res.seconds > 0
    assert res.save_dir == project / "train"

    m = yolo.validate_yolo(res.best_pt, data, "test", imgsz=64, batch=4, device="cpu",
                           save_dir=tmp_path / "run" / "val", config_dir=cfg)
    for key in ("map50", "map50_95", "precision", "recall"):
        assert math.isfinite(m[key]) and 0.0 <= m[key] <= 1.0, (key, m[key])
    assert m["split"] == "test" and m["instances"] == 1
    assert len(m["pr_curve"]["recall"]) == len(m["pr_curve"]["precision"]["phe"]) == 1000
    assert set(m["per_class"]) == {"phe"}

    images = sorted(str(p) for p in (tmp_path / "ds" / "images" / "test").glob("*.png"))
    df = yolo.predict_yolo(res.best_pt, images, imgsz=64, conf=0.99, device="cpu", batch=2, config_dir=cfg)
    assert list(df.columns) == ["image", "class_id", "confidence", "x1", "y1", "x2", "y2", "class_name"]
    assert set(df["image"]) == set(images)  # an untrained model at conf 0.99: every image gets its "none" row
    none = df[df["class_id"] == "none"]
    assert len(none) >= 1 and none["confidence"].isna().all()

    df_low = yolo.predict_yolo(res.best_pt, images[:1], imgsz=64, conf=0.0, device="cpu", batch=1, config_dir=cfg)
    boxes = df_low[df_low["class_id"] != "none"]
    if len(boxes):  # boxes are in the 96-px original image, not the 64-px network input
        assert boxes[["x1", "y1", "x2", "y2"]].to_numpy().max() <= 96.01
        assert set(boxes["class_name"]) == {"phe"}

    assert not any(home.rglob("*")), sorted(home.rglob("*"))  # nothing written to $HOME
    assert not any(cwd.rglob("*")), sorted(cwd.rglob("*"))    # nor to the working directory


def test_env_patches_amp_check_and_restores_process_state(tmp_path, offline):
    import os

    import cv2
    import torch

    threads, env = torch.get_num_threads(), dict(os.environ)
    with yolo.ultralytics_env(tmp_path / "cfg") as ul:
        from ultralytics.engine import trainer

        assert ul.utils.checks.ONLINE is False and os.environ["YOLO_OFFLINE"] == "1"
        on_gpu = torch.nn.Linear(1, 1).to("meta")  # not cpu/mps: ultralytics would fetch yolo26n.pt here
        assert trainer.check_amp(on_gpu) is True  # skipped offline, AMP kept: no download attempted
        assert trainer.check_amp(torch.nn.Linear(1, 1)) is False  # CPU: no AMP, as ultralytics
        torch.set_num_threads(1)
    assert trainer.check_amp is yolo._check_amp_offline.original
    assert torch.get_num_threads() == threads and dict(os.environ) == env and cv2.getNumThreads() >= 0
    assert not any(offline[0].rglob("*"))


def test_missing_local_pt_raises_with_path(tmp_path):
    missing = tmp_path / "nowhere" / "best.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        yolo.train_yolo(tmp_path / "data.yaml", tmp_path / "run", missing)
    with pytest.raises(FileNotFoundError, match="best.pt"):
        yolo.predict_yolo(missing, [])


def test_bare_pt_name_and_urls_are_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="yolov8n.pt"):
        yolo.train_yolo(tmp_path / "data.yaml", tmp_path / "run", "yolov8n.pt")
    with pytest.raises(ValueError, match="URL"):
        yolo.train_yolo(tmp_path / "data.yaml", tmp_path / "run", "https://example.com/yolov8n.pt")


def test_data_yaml_checks(tmp_path):
    data = _make_dataset(tmp_path / "ds")
    assert yolo.check_data_yaml(data, ("train", "val", "test")) == data
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"path: {tmp_path / 'ds'}\ntrain: images/train\nval: images/nope\nnames: {{0: phe}}\n")
    with pytest.raises(FileNotFoundError, match="images/nope"):
        yolo.check_data_yaml(bad)
    dl = tmp_path / "dl.yaml"
    dl.write_text(f"path: {tmp_path / 'ds'}\ntrain: images/train\nval: images/val\ndownload: https://x/y.zip\n")
    with pytest.raises(ValueError, match="download"):
        yolo.check_data_yaml(dl)


def test_train_args_are_plain_ultralytics_kwargs(tmp_path):
    args = yolo.yolo_train_args(tmp_path / "d.yaml", tmp_path / "r", epochs=3, patience=2, imgsz=512, batch=8,
                                device="cpu", seed=1, workers=0, amp=True, extra={"lr0": 0.005})
    assert args == {"data": str(tmp_path / "d.yaml"), "project": str(tmp_path / "r"), "name": "train",
                    "exist_ok": True, "epochs": 3, "patience": 2, "imgsz": 512, "batch": 8, "device": "cpu",
                    "seed": 1, "workers": 0, "amp": True, "lr0": 0.005}
    with pytest.raises(ValueError, match="project"):
        yolo.yolo_train_args(tmp_path / "d.yaml", tmp_path / "r", epochs=3, patience=2, imgsz=512, batch=8,
                             device="cpu", seed=1, workers=0, amp=True, extra={"project": "elsewhere"})
