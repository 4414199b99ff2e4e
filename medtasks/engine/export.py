"""``medtasks export <task> --run R --format torchscript|onnx|bundle``: the trained network out of the run directory.

Each network a task exports (:meth:`~medtasks.tasks.contract.Task.export_networks`) is written as
``<out>/<name>.onnx`` (torch's exporter, dynamic batch axis) or ``<out>/<name>.ts`` (TorchScript, traced), with
``<name>.json`` beside it: the preprocessing contract (input names, shapes and dtypes, CT windows, normalisation,
the slice-position input, temperature, thresholds, labels, what the output means and what is *not* inside the
file, e.g. test-time augmentation or a second-stage head) so the file can be used without medtasks.

Every export is checked on the run's own test inputs before it is kept: the exported file is run (onnxruntime
for ONNX, ``torch.jit.load`` for TorchScript) on a batch of the evaluation split's rows, through the task's own
preprocessing, and its outputs are compared with the torch network's. A max |diff| above :data:`TOLERANCE`
removes the file and raises :class:`ExportError`; the diff is printed and written into the sidecar.

``--format bundle`` writes a MONAI bundle instead (the same TorchScript network plus MONAI's inference config,
metadata and README; runs with ``python -m monai.bundle run``): :mod:`medtasks.engine.bundle`, which reuses the
trace and parity check here; :meth:`~medtasks.tasks.contract.Task.export` sends that format there.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtasks.io.atomic import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
BUNDLE = "bundle"         # a MONAI bundle: medtasks.engine.bundle (Task.export sends it there)
TOLERANCE = 1e-4          # max |diff| of the outputs, exported file vs torch, on the run's own test inputs
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx"}


class ExportError(RuntimeError):
    """An export that failed its parity check (or could not be made)."""


@dataclass
class ExportedNetwork:
    """One network to export: the module in eval mode, example inputs taken from the run's own test rows, the
    names of its inputs and outputs, and the preprocessing contract for the sidecar."""

    name: str
    model: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] = ("logits",)
    contract: dict[str, Any] = field(default_factory=dict)


def _plain(t: Any) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (exporters trace plain tensors)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


def batch_inputs(batch: dict[str, Any], prepare_batch: Any) -> tuple[torch.Tensor, ...]:
    """The network's positional inputs of one loader batch: ``image`` plus what the task's MONAI
    ``prepare_batch`` passes on (e.g. ich_classify's slice position ``z``)."""
    if prepare_batch is None:
        return (_plain(batch["image"]).float(),)
    image, _, args, kwargs = prepare_batch(batch, torch.device("cpu"), False)
    if kwargs:
        raise ExportError(f"the network takes keyword inputs {sorted(kwargs)}: not exportable as positional inputs")
    return (_plain(image).float(), *(_plain(a).float() for a in args))


def _export_onnx(net: ExportedNetwork, path: Path) -> str:
    """torch's ONNX exporter (torch.export based; the TorchScript-based one on torch versions without it), batch
    axis dynamic; returns which exporter made it."""
    names = list(net.input_names)
    with atomic_path(path) as tmp:
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(net.model, net.inputs, str(tmp), input_names=names, output_names=list(net.output_names),
                              dynamo=True, dynamic_shapes=tuple({0: batch} for _ in names), verbose=False,
                              external_data=False)
            return "torch.onnx (dynamo)"
        except TypeError:          # torch without the dynamo exporter's arguments
            axes = {n: {0: "batch"} for n in [*names, *net.output_names]}
            torch.onnx.export(net.model, net.inputs, str(tmp), input_names=names,
                              output_names=list(net.output_names), dynamic_axes=axes)
            return "torch.onnx (TorchScript-based)"


def _export_torchscript(net: ExportedNetwork, path: Path) -> str:
    with atomic_path(path) as tmp:
        traced = torch.jit.trace(net.model, net.inputs, check_trace=False)
        torch.jit.save(traced, str(tmp))
    return "torch.jit.trace"


def run_exported(path: Path, fmt: str, net: ExportedNetwork, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """The exported file's first output on ``inputs`` (onnxruntime on CPU, or the TorchScript module)."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {n: x.numpy() for n, x in zip(net.input_names, inputs)})[0]
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        out = module(*inputs)
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


def parity(path: Path, fmt: str, net: ExportedNetwork) -> dict[str, Any]:
    """Max |diff| between the exported file and torch on the example inputs, at full batch and at batch 1
    (the dynamic batch axis)."""
    with torch.no_grad():
        ref = net.model(*net.inputs)
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).float().numpy()
    full = run_exported(path, fmt, net, net.inputs)
    one = run_exported(path, fmt, net, tuple(x[:1] for x in net.inputs))
    if full.shape != ref.shape:
        raise ExportError(f"{path}: output shape {full.shape}, torch gives {ref.shape}")
    diff = max(float(np.abs(full - ref).max()), float(np.abs(one - ref[:1]).max()))
    return {"max_abs_diff": diff, "n_inputs": int(ref.shape[0]), "tolerance": TOLERANCE,
            "checked_with": "onnxruntime (CPU)" if fmt == "onnx" else "torch.jit.load"}


def export_run(task: Any, run: Any, df: Any, fmt: str, out: Path, n_inputs: int = 8) -> list[dict[str, Any]]:
    """Export every network of a trained run in ``fmt`` into ``out``; returns the sidecars written."""
    if fmt not in FORMATS:
        hint = " (a MONAI bundle: medtasks.engine.bundle.export_bundle)" if fmt == BUNDLE else ""
        raise ValueError(f"--format {fmt!r}: use one of {', '.join((*FORMATS, BUNDLE))}{hint}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for net in task.export_networks(run, df, n_inputs):
        path = out / f"{net.name}{SUFFIX[fmt]}"
        t0 = time.perf_counter()
        with torch.no_grad():
            exporter = _export_onnx(net, path) if fmt == "onnx" else _export_torchscript(net, path)
        seconds = time.perf_counter() - t0
        check = parity(path, fmt, net)
        if not check["max_abs_diff"] <= TOLERANCE:
            path.unlink(missing_ok=True)
            raise ExportError(f"{path.name}: max |diff| {check['max_abs_diff']:.3g} against torch on "
                              f"{check['n_inputs']} test inputs exceeds {TOLERANCE:g}; the file was removed")
        sidecar = {"file": path.name, "format": fmt, "exporter": exporter, "export_seconds": round(seconds, 2),
                   "torch": torch.__version__, "task": task.name, "kind": task.kind, "labels": list(task.labels),
                   "run": str(Path(run.path).resolve()), "synthetic": bool(task.cfg.data.synthetic),
                   "inputs": [{"name": n, "shape": ["batch", *x.shape[1:]], "dtype": str(x.dtype).replace("torch.", "")}
                              for n, x in zip(net.input_names, net.inputs)],
                   "outputs": list(net.output_names), "parity": check, **net.contract}
        write_json_atomic(out / f"{net.name}.json", sidecar)
        log.info("exported %s (%s, %.1f s): max |diff| %.2g against torch on %d test inputs (%s)", path,
                 exporter, seconds, check["max_abs_diff"], check["n_inputs"], check["checked_with"])
        written.append(sidecar)
    return written


def describe(sidecars: list[dict[str, Any]], out: Path) -> str:
    """Terminal lines: one per exported file with its parity figure (a bundle: its folder and how to run it)."""
    if sidecars and sidecars[0].get("format") == "bundle":
        s = sidecars[0]
        return (f"{out}: MONAI bundle; network {out / s['file']} (weights {out / s['weights']}): max |diff| "
                f"{s['parity']['max_abs_diff']:.2g} vs torch on {s['parity']['n_inputs']} test inputs; run it with\n"
                f"  cd {out} && python -m monai.bundle run --config_file {s['config']} --dataset_dir <inputs> "
                f"--output_dir <outputs>\n  (needs medtasks installed: {', '.join(s['medtasks_components'])}; "
                f"see {out / 'docs' / 'README.md'})")
    return "\n".join(f"{out / s['file']}: max |diff| {s['parity']['max_abs_diff']:.2g} vs torch on "
                     f"{s['parity']['n_inputs']} test inputs ({s['parity']['checked_with']}); contract: "
                     f"{out / (Path(s['file']).stem + '.json')}" for s in sidecars)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
