"""YOLO detection through ultralytics' own trainer, validator and predictor: offline, outside ``$HOME``.

ultralytics reads its settings dir (``YOLO_CONFIG_DIR``, default ``~/.config/Ultralytics``),
settings file, ``ONLINE`` (a DNS probe) and ``YOLO_AUTOINSTALL`` once, at its first import. So
:func:`ultralytics_env` does that import itself after pointing all of it at ``config_dir``
(later entries reuse it: pass a stable cache dir, default ``$MEDTASKS_CACHE/ultralytics``), then
blocks the run-time roads to the network (AMP check, events, auto-install, fonts) and on exit
restores env vars, threads and deterministic mode. Import ultralytics only through this module.

Example:
    >>> res = train_yolo("data.yaml", "runs/x/yolo", epochs=1, imgsz=64, batch=4)  # doctest: +SKIP
    >>> m = validate_yolo(res.best_pt, "data.yaml", split="test", save_dir="runs/x/val")  # doctest: +SKIP
    >>> df = predict_yolo(res.best_pt, ["a.png"], imgsz=64)  # doctest: +SKIP
    >>> ap = ultralytics_compute_ap()(np.array([0.5, 1.0]), np.array([1.0, 1.0]))[0]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from medtasks.io.atomic import copy_file_atomic
from medtasks.paths import cache_dir

log = logging.getLogger(__name__)

# YOLO_OFFLINE: is_online() is False (no DNS probe; a failed download raises at once, no 5-20 s retries);
# YOLO_AUTOINSTALL: check_requirements() never pip/uv-installs a missing package
_ENV_SET = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
_ENV_UNSET = ("ULTRALYTICS_API_KEY",)  # a key turns on the Platform callbacks that stream metrics out
_SETTINGS = {  # settings.json values; the integrations default to True and log to ./mlruns etc. when installed
    "sync": False, "api_key": "", "openai_api_key": "", "clearml": False, "comet": False, "dvc": False,
    "mlflow": False, "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False, "openvino_msg": False}
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")  # check_font() downloads these from GitHub unless found locally
_AMP_BAD_GPU = re.compile(r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)",
                          re.IGNORECASE)  # GPUs that ultralytics' check_amp() turns AMP off for (its pattern)
_PRED_COLUMNS = ["image", "class_id", "confidence", "x1", "y1", "x2", "y2", "class_name"]
_NONE_ROW = {**dict.fromkeys(("confidence", "x1", "y1", "x2", "y2"), math.nan), "class_id": "none", "class_name": None}


def default_config_dir() -> Path:
    """``$MEDTASKS_CACHE/ultralytics`` (default ``./.cache/medtasks/ultralytics``), under the cache dir."""
    return cache_dir() / "ultralytics"


def _write_settings(ul_dir: Path) -> None:
    """Settings file ultralytics will load at import: our values over whatever is there."""
    ul_dir.mkdir(parents=True, exist_ok=True)
    f, cur = ul_dir / "settings.json", {}
    with contextlib.suppress(OSError, ValueError):
        cur = json.loads(f.read_text())
    cur.update(_SETTINGS)
    cur.setdefault("settings_version", "0.0.8")  # the schema of 8.4.x; another version migrates and keeps our keys
    cur.setdefault("uuid", hashlib.sha256(str(uuid.getnode()).encode()).hexdigest())  # as ultralytics computes it
    for key in ("datasets", "weights", "runs"):  # never ./datasets, ./weights, ./runs beside the git root
        cur[f"{key}_dir"] = str(ul_dir / key)
    f.write_text(json.dumps(cur, indent=2))


def _place_fonts(ul_dir: Path) -> None:
    """matplotlib's bundled DejaVuSans under the names check_font() looks for: plots work, nothing downloads."""
    import matplotlib

    ul_dir.mkdir(parents=True, exist_ok=True)  # may have gone with a deleted cache dir since the import
    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONTS:
        if not (ul_dir / name).is_file():
            copy_file_atomic(src, ul_dir / name)  # a concurrent reader never sees half a font


_OWN_DIR: list[Path] = []  # ultralytics' config dir when this module did its first import; [] if someone else did


def _first_import(config_dir: Path) -> None:
    """Import ultralytics with its config dir at ``config_dir/Ultralytics``; undo its global print options."""
    ul_dir = config_dir / "Ultralytics"  # get_user_config_dir() appends this to YOLO_CONFIG_DIR
    _write_settings(ul_dir)
    np_opts, torch_opts = np.get_printoptions(), dict(vars(torch._tensor_str.PRINT_OPTS))
    import ultralytics.utils  # the import that reads env and settings.json

    np.set_printoptions(**np_opts)  # ultralytics reformats every numpy/torch repr in the process
    vars(torch._tensor_str.PRINT_OPTS).update(torch_opts)
    _OWN_DIR.append(Path(ultralytics.utils.USER_CONFIG_DIR))


def _check_amp_offline(model: torch.nn.Module) -> bool:
    """check_amp() without its download of yolo26n.pt: run it only when that file is already local."""
    from ultralytics.utils import WEIGHTS_DIR

    device = next(model.parameters()).device
    if device.type in {"cpu", "mps"}:
        return False  # as ultralytics: AMP only on accelerators
    if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():  # the reference model ultralytics 8.4 loads
        return _check_amp_offline.original(model)  # type: ignore[attr-defined]
    if device.type == "cuda" and _AMP_BAD_GPU.search(torch.cuda.get_device_name(device)):
        log.warning("AMP off: %s is known to give NaN losses under AMP", torch.cuda.get_device_name(device))
        return False
    log.info("AMP check skipped (no local %s/yolo26n.pt, medtasks never downloads); AMP stays on", WEIGHTS_DIR)
    return True  # what ultralytics itself returns when the download fails offline


@contextlib.contextmanager
def ultralytics_env(config_dir: str | Path | None = None, *, progress: bool = True) -> Iterator[Any]:
    """Make ultralytics offline and keep it out of ``$HOME``; yields the ``ultralytics`` module.

    Entry: env (``YOLO_CONFIG_DIR``, ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0``, no API key),
    settings file (sync/Platform/loggers off, datasets/weights/runs dirs in ``config_dir``), first
    import, fonts, patches (offline check_amp, events off), torch threads as a direct run has them
    (``OMP_NUM_THREADS``, default 1; CPU device selection then sets min(8, cores - 1)). Exit: env,
    torch threads/determinism, OpenCV threads and patches restored. Not thread-safe.

    Args:
        config_dir: Folder for ultralytics' settings/fonts (``<config_dir>/Ultralytics``).
        progress: False sets ultralytics' logger to WARNING, which also turns off its progress bars.

    Example:
        >>> with ultralytics_env(".cache/medtasks/ultralytics") as ul:  # doctest: +SKIP
        ...     ul.YOLO("yolov8n.yaml").train(data="/abs/data.yaml", project="/abs/run", name="train")
    """
    import cv2

    config_dir = Path(config_dir or default_config_dir()).resolve()
    env_before = dict(os.environ)
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic,
             cv2.getNumThreads())
    os.environ.update(_ENV_SET, YOLO_CONFIG_DIR=str(config_dir))
    # a fresh `import ultralytics` sets OMP_NUM_THREADS=1 before torch loads: same threads as a direct run
    torch.set_num_threads(max(1, int(env_before.get("OMP_NUM_THREADS") or 1)))
    for k in _ENV_UNSET:
        os.environ.pop(k, None)
    undo: list[Callable[[], Any]] = []

    def patch(obj: Any, attr: str, value: Any) -> None:
        undo.append(lambda old=getattr(obj, attr): setattr(obj, attr, old))
        setattr(obj, attr, value)

    try:
        if "ultralytics.utils" not in sys.modules:
            _first_import(config_dir)
        import ultralytics
        from ultralytics.data import utils as ul_data
        from ultralytics.engine import trainer as ul_trainer
        from ultralytics.utils import SETTINGS, checks, events, plotting

        if _OWN_DIR:  # our import: fonts go where check_font() looks (the first config dir)
            _place_fonts(_OWN_DIR[0])
        else:  # imported before us (settings maybe under $HOME): override in memory, write nothing there
            log.warning("ultralytics was imported before medtasks configured it (config dir %s); "
                        "settings are overridden in memory only", checks.USER_CONFIG_DIR)
            for k in set(_SETTINGS) & set(SETTINGS):  # dict's own setter: SETTINGS[k] = v rewrites their file
                undo.append(lambda k=k, v=SETTINGS[k]: dict.__setitem__(SETTINGS, k, v))
                dict.__setitem__(SETTINGS, k, _SETTINGS[k])
            _place_fonts(config_dir / "Ultralytics")
            for mod in (ul_data, plotting):  # their check_font() would look in (and download to) that dir
                patch(mod, "check_font", lambda font="Arial.ttf", d=config_dir / "Ultralytics": d / (
                    Path(font).name if Path(font).name in _FONTS else _FONTS[0]))
        if not hasattr(_check_amp_offline, "original"):
            _check_amp_offline.original = checks.check_amp  # type: ignore[attr-defined]
        patch(ul_trainer, "check_amp", _check_amp_offline)
        patch(checks, "ONLINE", False)  # pip-update check and auto-install both test this import-time flag
        patch(checks, "AUTOINSTALL", False)
        patch(events.events, "enabled", False)  # anonymous usage events (already off with sync=False)
        if not progress:  # its TQDM bars switch off with the logger above INFO
            ul_log = logging.getLogger("ultralytics")
            undo.append(lambda lv=ul_log.level: ul_log.setLevel(lv))  # setLevel, not setattr: it clears caches
            ul_log.setLevel(logging.WARNING)
        yield ultralytics
    finally:
        for restore in reversed(undo):
            restore()
        torch.set_num_threads(saved[0])  # select_device('cpu') sets min(8, cpu_count - 1) threads
        if saved[1:3] != (torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled()):  # the trainer ends with them off
            torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])  # (sets TORCHINDUCTOR_CACHE_DIR)
        torch.backends.cudnn.deterministic = saved[3]
        cv2.setNumThreads(saved[4])  # ultralytics sets 0 at import
        # last: ultralytics sets OMP_NUM_THREADS (import), CUBLAS_WORKSPACE_CONFIG (YOLO()), ...: none leaks out
        for k in set(os.environ) - set(env_before):
            del os.environ[k]
        os.environ.update({k: v for k, v in env_before.items() if os.environ.get(k) != v})


def ultralytics_compute_ap() -> Callable[[np.ndarray, np.ndarray], tuple]:
    """ultralytics' own ``utils.metrics.compute_ap(recall, precision) -> (ap, envelope, recall)``, the AP of its
    validator, imported inside :func:`ultralytics_env` (for :mod:`medtasks.metrics.detection`, which sits below
    the engine and never imports ultralytics itself)."""
    with ultralytics_env(progress=False):
        from ultralytics.utils.metrics import compute_ap
    return compute_ap


def _ul_device(device: str) -> str:
    """medtasks' ``auto``/``cpu``/``cuda[:N]`` as ultralytics' ``cpu``/``N`` (no GPU for cuda raises)."""
    from medtasks.engine.runtime import select_device

    dev = select_device(device)
    return str(dev.index or 0) if dev.type == "cuda" else dev.type


def _resolve_model(model: str | Path) -> str:
    """A local .pt (must exist) or a model yaml (local or shipped in ultralytics); never a download."""
    s = str(model).strip()
    if "://" in s:
        raise ValueError(f"model={s!r}: URLs are not allowed (medtasks never downloads weights)")
    p = Path(s).expanduser()
    if p.suffix.lower() in {".yaml", ".yml"}:
        return str(p.resolve()) if p.is_file() else s  # bare names (yolov8n.yaml) are built from ultralytics' cfg
    if p.suffix.lower() != ".pt":
        raise ValueError(f"model={s!r}: expected a model .yaml or a local .pt checkpoint")
    if not p.is_file():
        raise FileNotFoundError(f"YOLO weights not found: {p.resolve()} (medtasks never downloads weights)")
    return str(p.resolve())


def check_data_yaml(data_yaml: str | Path, splits: Sequence[str] = ("train", "val")) -> Path:
    """Local checks ultralytics would otherwise answer with a download: the yaml and every split path exist.

    Example: ``check_data_yaml("data.yaml", ("train", "val", "test"))``.
    """
    f = Path(data_yaml).expanduser().resolve()
    if not f.is_file():
        raise FileNotFoundError(f"data yaml not found: {f}")
    data = yaml.safe_load(f.read_text()) or {}
    if data.get("download"):
        raise ValueError(f"{f} has a 'download' key; medtasks never downloads datasets, remove it")
    root = Path(data.get("path") or f.parent)
    if not root.is_absolute() and not root.exists():  # ultralytics would look under its datasets_dir
        raise FileNotFoundError(f"{f}: dataset path {root} not found (relative to the cwd); use an absolute path")
    for split in splits:
        if not data.get(split):
            raise FileNotFoundError(f"{f}: no '{split}' split")
        for rel in data[split] if isinstance(data[split], list) else [data[split]]:
            if not (root / rel).exists():
                raise FileNotFoundError(f"{f}: '{split}' path not found: {(root / rel).resolve()}")
    return f


@dataclass
class YoloTrainResult:
    """Where ultralytics wrote a training run, and how long it took."""

    best_pt: Path
    last_pt: Path
    results_csv: Path
    save_dir: Path
    epochs_run: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)  # the final validation of best.pt


def yolo_train_args(data_yaml: str | Path, project_dir: str | Path, *, epochs: int, patience: int, imgsz: int,
                    batch: int, device: str, seed: int, workers: int, amp: bool, name: str = "train",
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exact keyword arguments :func:`train_yolo` passes to ``YOLO(model).train``.

    Example:
        >>> a = yolo_train_args("/d/data.yaml", "/r", epochs=1, patience=5, imgsz=64, batch=4, device="cpu",
        ...                     seed=0, workers=0, amp=False)
        >>> a["project"], a["name"], a["exist_ok"]
        ('/r', 'train', True)
    """
    clash = {"data", "project", "name", "exist_ok"} & set(extra or {})
    if clash:
        raise ValueError(f"extra may not set {sorted(clash)}: the outputs must land in project_dir/name")
    return {**dict(data=str(data_yaml), project=str(Path(project_dir).resolve()), name=name, exist_ok=True,
                   epochs=int(epochs), patience=int(patience), imgsz=int(imgsz), batch=batch, device=device,
                   seed=int(seed), workers=int(workers), amp=bool(amp)), **(extra or {})}  # extra wins


def train_yolo(data_yaml: str | Path, project_dir: str | Path, model: str | Path = "yolov8n.yaml", *,
               epochs: int = 100, patience: int = 50, imgsz: int = 512, batch: int = 16, device: str = "auto",
               seed: int = 0, workers: int = 2, amp: bool = True, progress: bool = True, name: str = "train",
               config_dir: str | Path | None = None, extra: dict[str, Any] | None = None) -> YoloTrainResult:
    """Train with ultralytics' own trainer; every output lands in ``project_dir/name``.

    The call is ``YOLO(model).train(**yolo_train_args(...))`` inside :func:`ultralytics_env`,
    nothing else: to time ultralytics directly on the same data, run exactly that yourself.

    Args:
        data_yaml: ultralytics data yaml (train/val[/test], names); paths must exist.
        project_dir: Run folder; ultralytics writes ``project_dir/name/{weights,results.csv,...}``.
        model: A yaml shipped in ultralytics (``yolov8n.yaml``: from scratch, no weights) or a
            local ``.pt`` (missing -> ``FileNotFoundError``; nothing is ever downloaded).
        epochs, patience, imgsz, batch, seed, workers, amp, name: ultralytics' train arguments.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        progress: False quiets ultralytics' console (logger to WARNING, no progress bars).
        config_dir: ultralytics' settings dir (default :func:`default_config_dir`).
        extra: More ultralytics train arguments (``lr0``, ``plots``, ``mosaic``, ...).

    Example:
        >>> r = train_yolo("/d/data.yaml", "/runs/x/yolo", epochs=1, imgsz=64, device="cpu")  # doctest: +SKIP
        >>> r.best_pt.is_file()  # doctest: +SKIP
        True
    """
    model = _resolve_model(model)
    data_yaml = check_data_yaml(data_yaml)
    args = yolo_train_args(data_yaml, project_dir, epochs=epochs, patience=patience, imgsz=imgsz, batch=batch,
                           device=_ul_device(device), seed=seed, workers=workers, amp=amp, name=name, extra=extra)
    log.info("YOLO training %s on %s -> %s/%s", model, data_yaml, args["project"], name)
    with ultralytics_env(config_dir, progress=progress) as ul:
        t0 = time.perf_counter()
        yolo = ul.YOLO(model)
        metrics = yolo.train(**args)
        seconds = time.perf_counter() - t0
        trainer = yolo.trainer
    save_dir = Path(trainer.save_dir)
    csv = save_dir / "results.csv"
    epochs_run = len(pd.read_csv(csv)) if csv.is_file() else int(trainer.epoch) + 1
    final = {k: float(v) for k, v in getattr(metrics, "results_dict", {}).items()}
    log.info("YOLO trained %d epoch(s) in %.1f s: %s", epochs_run, seconds, final)
    return YoloTrainResult(best_pt=Path(trainer.best), last_pt=Path(trainer.last), results_csv=csv,
                           save_dir=save_dir, epochs_run=epochs_run, seconds=seconds, metrics=final)


def _floats(x: Any) -> list[float | None]:
    """Array-like -> list of finite-or-None floats (JSON has no NaN)."""
    return [float(v) if math.isfinite(float(v)) else None for v in list(x)]


def validate_yolo(weights: str | Path, data_yaml: str | Path, split: str = "test", *, imgsz: int = 512,
                  batch: int = 16, device: str = "auto", conf: float = 0.001, iou: float = 0.7,
                  save_dir: str | Path, progress: bool = False, config_dir: str | Path | None = None,
                  plots: bool = True) -> dict[str, Any]:
    """ultralytics' validator on one split: mAP50, mAP50-95, P, R overall and per class, PR curves.

    ``pr_curve`` is ultralytics' own (IoU 0.5): ``recall`` is its 1000-point grid and
    ``precision[name]`` the interpolated precision on that grid, per class with labels in the
    split; P and R are at the confidence that maximises mean F1. Plots land in ``save_dir``.

    Example:
        >>> m = validate_yolo("best.pt", "data.yaml", "test", imgsz=64, save_dir="/runs/x/val")  # doctest: +SKIP
        >>> 0 <= m["map50"] <= 1  # doctest: +SKIP
        True
    """
    weights = _resolve_model(weights)
    data_yaml = check_data_yaml(data_yaml, (split,))
    save_dir = Path(save_dir).resolve()
    with ultralytics_env(config_dir, progress=progress) as ul:
        m = ul.YOLO(weights).val(data=str(data_yaml), split=split, imgsz=int(imgsz), batch=int(batch),
                                 device=_ul_device(device), conf=float(conf), iou=float(iou), plots=plots,
                                 project=str(save_dir.parent), name=save_dir.name, exist_ok=True, verbose=False)
    box, names = m.box, dict(m.names)
    nt = [int(n) for n in m.nt_per_class] if m.nt_per_class is not None else [0] * len(names)
    prec, per_class, curves = getattr(box, "prec_values", []), {}, {}
    for i, c in enumerate(int(c) for c in box.ap_class_index):  # classes with labels in the split
        name = names.get(c, str(c))
        per_class[name] = {"class_id": c, "precision": float(box.p[i]), "recall": float(box.r[i]),
                           "map50": float(box.ap50[i]), "map50_95": float(box.ap[i]), "instances": nt[c]}
        curves[name] = _floats(prec[i]) if i < len(prec) else []
    mp, mr, map50, map_ = (float(v) for v in box.mean_results())
    return {"split": split, "map50": map50, "map50_95": map_, "precision": mp, "recall": mr,
            "fitness": float(m.fitness), "instances": int(sum(nt)), "per_class": per_class,
            "pr_curve": {"iou": 0.5, "recall": _floats(getattr(box, "px", [])), "precision": curves},
            "speed_ms": {k: float(v) for k, v in m.speed.items()}, "save_dir": str(save_dir)}


def predict_yolo(weights: str | Path, images: Sequence[str | Path], *, imgsz: int = 512, conf: float = 0.25,
                 iou: float = 0.7, device: str = "auto", batch: int = 16, progress: bool = False,
                 config_dir: str | Path | None = None) -> pd.DataFrame:
    """Boxes per image as a table: one row per box, one ``class_id="none"`` row per image without one.

    Columns: ``image`` (as given), ``class_id`` (int, or ``"none"``), ``confidence``, ``x1 y1 x2 y2``
    (pixels of the original image; NaN on ``none`` rows), ``class_name`` (None on ``none`` rows).
    Images go through ``batch`` at a time with ``stream=True``, so memory stays bounded.

    Example:
        >>> df = predict_yolo("best.pt", ["a.png", "b.png"], imgsz=64, conf=0.25)  # doctest: +SKIP
        >>> list(df.columns)  # doctest: +SKIP
        ['image', 'class_id', 'confidence', 'x1', 'y1', 'x2', 'y2', 'class_name']
    """
    weights = _resolve_model(weights)
    images = [str(p) for p in images]
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) not found, e.g. {missing[0]}")
    rows: list[dict[str, Any]] = []
    bs, dev = max(1, int(batch)), _ul_device(device)
    with ultralytics_env(config_dir, progress=progress) as ul:
        yolo = ul.YOLO(weights)
        for start in range(0, len(images), bs):  # a list source is one batch, opened in full: chunk it
            chunk = images[start:start + bs]
            results = yolo.predict(source=chunk, stream=True, imgsz=int(imgsz), conf=float(conf), iou=float(iou),
                                   device=dev, batch=bs, verbose=False, save=False)
            for path, r in zip(chunk, results):  # one result per source image, in order
                boxes = r.boxes
                if boxes is None or len(boxes) == 0:
                    rows.append(dict(_NONE_ROW, image=path))
                    continue
                for (x1, y1, x2, y2), c, k in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
                    rows.append({"image": path, "class_id": int(k), "confidence": float(c), "x1": x1, "y1": y1,
                                 "x2": x2, "y2": y2, "class_name": r.names.get(int(k), str(int(k)))})
    return pd.DataFrame(rows, columns=_PRED_COLUMNS)
