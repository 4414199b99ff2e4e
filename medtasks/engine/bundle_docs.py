"""The documents of a MONAI bundle (:mod:`medtasks.engine.bundle`): ``configs/metadata.json`` in MONAI's bundle
schema and ``docs/README.md`` (how to run it, what medtasks pieces it needs and why, the run's headline metrics and
the task card's measured figures, marked SYNTHETIC when the run was).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtasks.engine.bundle_spec import BundleSpec

BUNDLE_VERSION = "0.1.0"
META_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
               "meta_schema_20240725.json")   # named, never fetched
RUN_COMMAND = ("python -m monai.bundle run --config_file configs/inference.json "
               "--dataset_dir <input folder> --output_dir <output folder>")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _network_inputs(net: Any, spec: BundleSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, x in zip(net.input_names, net.inputs):
        if x.ndim >= 3:
            out[name] = {"type": "image", "format": "magnitude", "modality": spec.modality,
                         "num_channels": int(x.shape[1]), "spatial_shape": [int(s) for s in x.shape[2:]],
                         "dtype": "float32", "value_range": [], "is_patch_data": False,
                         "channel_def": {str(i): f"channel {i}" for i in range(int(x.shape[1]))}}
        else:
            out[name] = {"type": "tensor", "format": "numeric", "num_channels": 1, "spatial_shape": [],
                         "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                         "channel_def": {"0": name}}
    return out


def _network_outputs(task: Any, net: Any, spec: BundleSpec) -> dict[str, Any]:
    with torch.no_grad():
        ref = net.model(*(x[:1] for x in net.inputs))
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    labels = list(task.labels)
    if spec.output_format == "classes":
        return {"pred": {"type": "probabilities", "format": "classes", "num_channels": int(ref.shape[1]),
                         "spatial_shape": [int(ref.shape[1])], "dtype": "float32", "value_range": [],
                         "is_patch_data": False, "channel_def": {str(i): lab for i, lab in enumerate(labels)},
                         "note": "logits; the bundle's postprocessing applies the temperature and the sigmoid"}}
    return {"pred": {"type": "image", "format": "segmentation", "num_channels": int(ref.shape[1]),
                     "spatial_shape": [int(s) for s in ref.shape[2:]], "dtype": "float32", "value_range": [],
                     "is_patch_data": False, "channel_def": {"0": labels[0]},
                     "note": "logits; the bundle's postprocessing applies the sigmoid and the threshold"}}


def metadata(task: Any, run: Any, net: Any, spec: BundleSpec, check: dict[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json`` in MONAI's bundle schema (plus a ``medtasks`` record of the run)."""
    import monai

    from medtasks import __version__

    synthetic = bool(task.cfg.data.synthetic)
    required = {"medtasks": __version__}
    for dist in ("pytorch-ignite", "fire", *spec.packages):   # fire: MONAI's command line (python -m monai.bundle)
        v = _version(dist)
        if v is not None:
            required[dist] = v
    metrics = _read_json(Path(run.path) / "metrics.json")
    return {
        "schema": META_SCHEMA,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by medtasks {__version__} from run {Path(run.path).name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": required,
        "name": f"medtasks_{task.name}",
        "task": task.summary,
        "description": (f"{task.name} ({task.kind}) network of medtasks run {Path(run.path).name}, with its "
                        f"preprocessing and postprocessing: {spec.outputs_doc}. Runs offline with `{RUN_COMMAND}`; "
                        "needs medtasks installed (docs/README.md says which components and why)."
                        + (" Trained on SYNTHETIC data: its figures say nothing about patients." if synthetic else "")),
        "authors": "medtasks (exported from a trained run)",
        "copyright": "the trainer of the run; see the data's licence",
        "data_source": ("SYNTHETIC phantoms (medtasks' embedded default)" if synthetic
                        else "the run's manifest (manifest.csv of the run)"),
        "data_type": spec.data_type,
        "image_classes": f"{spec.modality}; see network_data_format.inputs",
        "label_classes": ", ".join(task.labels),
        "pred_classes": ", ".join(task.labels),
        "eval_metrics": {k: v.get("value") for k, v in (metrics.get("headline") or {}).items() if isinstance(v, dict)},
        "intended_use": "research only; not a medical device",
        "references": [f"medtasks source report: {task.source_report}"],
        "network_data_format": {"inputs": _network_inputs(net, spec), "outputs": _network_outputs(task, net, spec)},
        "medtasks": {"task": task.name, "kind": task.kind, "run": Path(run.path).name, "synthetic": synthetic,
                     "network_file": "models/model.ts", "weights_file": "models/model.pt",
                     "medtasks_components": dict(spec.medtasks_components), "trace_parity": check},
    }


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def task_card(name: str) -> Path | None:
    """``tasks/<name>.md`` of a source checkout (an installed wheel has none)."""
    path = Path(__file__).resolve().parents[2] / "tasks" / f"{name}.md"
    return path if path.is_file() else None


def measured_section(card: str) -> str:
    """The task card's ``## Measured ...`` section (with its subsections), or ``""``."""
    m = re.search(r"^## Measured.*?(?=^## |\Z)", card, flags=re.M | re.S)
    return m.group(0).strip() if m else ""


def _headline_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for k, v in (metrics.get("headline") or {}).items():
        if isinstance(v, dict) and isinstance(v.get("value"), (int, float)):
            ci = (f" (95% CI {v['ci_low']:.4f} - {v['ci_high']:.4f})"
                  if isinstance(v.get("ci_low"), (int, float)) and isinstance(v.get("ci_high"), (int, float)) else "")
            lines.append(f"| {k} | {v['value']:.4f}{ci} |")
    return lines


def readme(task: Any, run: Any, spec: BundleSpec, check: dict[str, Any]) -> str:
    """``docs/README.md``: how to run the bundle, what it needs, its figures."""
    synthetic = bool(task.cfg.data.synthetic)
    metrics = _read_json(Path(run.path) / "metrics.json")
    banner = ("> **SYNTHETIC.** This run was trained and evaluated on synthetic phantoms (medtasks' embedded "
              "default): every figure below shows that the pipeline works, not how a model does on patients.\n\n"
              if synthetic else "")
    comps = "\n".join(f"- `{c}`: {why}" for c, why in spec.medtasks_components.items())
    notes = "\n".join(f"- {n}" for n in spec.notes)
    head = _headline_lines(metrics)
    split = metrics.get("split", task.cfg.eval.split)
    card = task_card(task.name)
    measured = measured_section(card.read_text(encoding="utf-8")) if card else ""
    if measured and "SYNTHETIC" not in measured.splitlines()[0]:
        measured = measured.replace("\n", "\n\n(SYNTHETIC data)\n", 1) if synthetic else measured
    measured = re.sub(r"^(#{2,5}) ", r"#\1 ", measured, flags=re.M)   # one level below this README's sections
    card_text = (f"From the task card `tasks/{task.name}.md` (medtasks' own measurements, not this run's):\n\n"
                 f"{measured}" if measured
                 else f"The task card `tasks/{task.name}.md` (in medtasks' source tree) holds the measured figures.")
    return f"""# medtasks {task.name} — MONAI bundle

{banner}{task.summary}. Exported by `medtasks export {task.name} --run <run> --format bundle` from run
`{Path(run.path).name}` (task `{task.name}`, kind `{task.kind}`, labels {', '.join(task.labels)}).

## Run it (offline)

```
pip install medtasks fire        # medtasks for the components below; fire for MONAI's command line
cd <this folder>
{RUN_COMMAND}
```

(`--bundle_root <this folder>` instead of `cd`.) The defaults are `dataset_dir: inputs` and
`output_dir: <bundle_root>/eval`. Nothing is downloaded.

- **Inputs** (`dataset_dir`): {spec.inputs_doc}.
- **Outputs** (`output_dir`): {spec.outputs_doc}.

These are the outputs of `medtasks predict {task.name} --run <run> --input <the same folder>` for the same
inputs (medtasks' test suite checks it for every task it exports: probabilities within 1e-5, the same calls,
identical masks).

## What is inside

- `configs/inference.json`: MONAI's inference workflow: `Dataset` + `DataLoader` over the inputs, the
  preprocessing, `SupervisedEvaluator`, `CheckpointLoader`, the postprocessing and the writers.
- `models/model.ts`: the network, a TorchScript trace of the run's best checkpoint (`network_def` in
  inference.json loads it with `torch.jit.load`: no medtasks model code is needed). Checked against the torch
  network on {check['n_inputs']} of the run's test inputs: max |diff| {check['max_abs_diff']:.2g} (limit
  {check['tolerance']:g}).
- `models/model.pt`: the same weights as a state dict (MONAI's bundle convention); inference.json's
  `CheckpointLoader` loads **this file** into the traced network (strict), so a retrained state dict of the same
  architecture can replace it.
- `configs/metadata.json`: MONAI's bundle metadata (versions, network_data_format describing the network's
  own input and output).

## medtasks components (medtasks must be installed)

Every other component is MONAI's or torch's. These are medtasks' because MONAI's own do not give the values
medtasks trained and evaluated with:

{comps}

{notes}

## This run's figures (`metrics.json`, split `{split}`{', SYNTHETIC' if synthetic else ''})

| metric | value |
|---|---|
{chr(10).join(head) if head else '| (none recorded) | |'}

## Task card figures

{card_text}
"""

