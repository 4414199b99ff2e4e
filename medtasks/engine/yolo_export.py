"""ONNX export of a YOLO checkpoint through ultralytics' own exporter, checked in onnxruntime against torch.

``YOLO(best.pt).export(format="onnx")`` (inside :func:`medtasks.engine.yolo.ultralytics_env`: offline, no
auto-install; ``simplify=False`` so that onnxslim is not needed) writes the file; then the raw network output
(``(batch, 4 + classes, anchors)``: box centre / size in input pixels and per-class scores, before NMS) on
the run's own test images, letterboxed as ultralytics' predictor does, is compared with the torch model's:
the scores (in [0, 1]) to 1e-4 absolute like every other export, the boxes (input pixels, up to ``imgsz``) to
1e-4 of ``imgsz`` — float32 itself spaces values near 512 by 6e-5, so two rounding steps (1.2e-4, measured at
imgsz 512) would fail an absolute 1e-4 on coordinates.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch


def letterbox_batch(images: Sequence[str | Path], imgsz: int) -> torch.Tensor:
    """``(N, 3, imgsz, imgsz)`` float32 in [0, 1], RGB: each image scaled to fit and padded with grey 114, centred
    (ultralytics' ``LetterBox(auto=False)``, the static-shape export's input)."""
    import cv2

    out = []
    for path in images:
        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if im is None:
            raise FileNotFoundError(f"{path}: not a readable image")
        h, w = im.shape[:2]
        r = min(imgsz / h, imgsz / w)
        nh, nw = round(h * r), round(w * r)
        if (nh, nw) != (h, w):
            im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
        top, left = (imgsz - nh) // 2, (imgsz - nw) // 2
        canvas = np.full((imgsz, imgsz, 3), 114, np.uint8)
        canvas[top:top + nh, left:left + nw] = im
        out.append(torch.from_numpy(canvas[:, :, ::-1].transpose(2, 0, 1).copy()).float() / 255.0)
    return torch.stack(out)


def export_yolo_onnx(weights: str | Path, out: Path, imgsz: int, images: Sequence[str | Path]) -> dict[str, Any]:
    """``out/model.onnx`` from ``weights``; returns the exporter's facts and the parity check on ``images``."""
    import onnxruntime as ort

    from medtasks.engine.yolo import ultralytics_env

    out.mkdir(parents=True, exist_ok=True)
    staged = out / ".staging"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    try:
        shutil.copy2(weights, staged / "best.pt")
        with ultralytics_env(progress=False) as ul:
            model = ul.YOLO(str(staged / "best.pt"))
            made = Path(model.export(format="onnx", imgsz=imgsz, simplify=False, dynamic=False, device="cpu"))
            net = model.model.float().eval()
            x = letterbox_batch(images, imgsz)
            with torch.no_grad():
                ref = torch.cat([net(x[i:i + 1])[0] for i in range(len(x))]).numpy()
        sess = ort.InferenceSession(str(made), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        got = np.concatenate([sess.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
        final = out / "model.onnx"
        made.replace(final)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return {"file": final.name, "exporter": f"ultralytics {ul.__version__} YOLO.export(format='onnx')",
            "input": {"name": name, "shape": [1, 3, imgsz, imgsz], "dtype": "float32"},
            "max_abs_diff": float(np.abs(got - ref).max()),
            "max_abs_diff_boxes_px": float(np.abs(got[:, :4] - ref[:, :4]).max()),
            "max_abs_diff_scores": float(np.abs(got[:, 4:] - ref[:, 4:]).max()),
            "n_inputs": len(x), "output_shape": list(got.shape[1:])}
