"""``medtasks export <task> --run R --format bundle``: a trained one-network run as a MONAI bundle.

The folder (MONAI's bundle layout) runs offline with MONAI's own runner, on a folder of inputs, and writes what
``medtasks predict`` writes for them (a test checks it for every covered task: probabilities within 1e-5 and the
same calls, identical masks)::

    configs/inference.json   configs/metadata.json   configs/logging.conf
    models/model.ts          models/model.pt         docs/README.md

    cd <bundle> && python -m monai.bundle run --config_file configs/inference.json \\
        --dataset_dir <inputs> --output_dir <outputs>

``inference.json`` is MONAI's: a ``Dataset`` over the inputs found in ``dataset_dir``, the task's preprocessing
(MONAI transforms, plus the medtasks ones that MONAI's cannot reproduce: :mod:`medtasks.transforms.bundle`), a
``SupervisedEvaluator`` whose network is ``models/model.ts`` (``torch.jit.load``: the TorchScript trace of the
best checkpoint, the architecture without medtasks' model code) with the weights of ``models/model.pt`` (the state
dict, MONAI's bundle convention) loaded into it by MONAI's ``CheckpointLoader``, and the task's postprocessing and
writers (temperature + sigmoid + per-label thresholds into ``predictions.csv`` by ``ClassificationSaver``; masks by
``SaveImaged``). ``metadata.json`` follows MONAI's bundle schema (versions, task, network_data_format, ...);
``docs/README.md`` tells how to run it, what medtasks pieces it needs and why, and carries the run's headline
metrics and the task card's measured figures (marked SYNTHETIC when the run was).

Before the folder is kept, the trace is checked against torch on the run's own test inputs
(:func:`medtasks.engine.export.parity`), and the bundle with MONAI's own checkers: ``ConfigWorkflow``'s
inference properties and ``verify_net_in_out`` (the network's input/output against ``network_data_format``).
``verify_metadata`` needs to download MONAI's JSON schema and is not run (nothing here downloads).

A task declares its parts through :meth:`~medtasks.tasks.contract.Task.bundle_spec` (a
:class:`~medtasks.engine.bundle_spec.BundleSpec`; :mod:`medtasks.engine.bundle_spec` builds the parts kinds share);
the documents are :mod:`medtasks.engine.bundle_docs`'s. A task that has no bundle refuses with the reason and what
to use instead (:meth:`~medtasks.tasks.contract.Task.bundle_refusal`).
"""

from __future__ import annotations

import inspect
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from medtasks.engine.bundle_docs import metadata, readme
from medtasks.engine.bundle_spec import BundleSpec
from medtasks.io.atomic import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


# ---- the bundle ---------------------------------------------------------------------------------
def inference_config(spec: BundleSpec, amp: bool) -> dict[str, Any]:
    """``configs/inference.json``: MONAI's inference workflow around the task's parts."""
    handlers = [{"_target_": "CheckpointLoader", "load_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
                 "load_dict": {"model": "@network_def"}, "strict": True, "map_location": "@device"},
                {"_target_": "StatsHandler", "iteration_log": False}, *spec.writers]
    evaluator: dict[str, Any] = {"_target_": "SupervisedEvaluator", "device": "@device",
                                 "val_data_loader": "@dataloader", "network": "@network", "inferer": "@inferer",
                                 "postprocessing": "@postprocessing", "val_handlers": "@handlers",
                                 "amp": f"$@device.type == 'cuda' and {bool(amp)}"}
    if spec.prepare_batch is not None:
        evaluator["prepare_batch"] = "@prepare_batch"
    config: dict[str, Any] = {
        "imports": ["$import functools", "$import os", "$import pathlib", "$import numpy", "$import pandas",
                    "$import torch", "$import monai", "$import medtasks", "$import medtasks.transforms.bundle"],
        "bundle_root": ".",
        "dataset_dir": "inputs",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        **spec.params,
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location='cpu')",
        "network": ("$@network_def.to(@device)" if spec.network_wrapper is None
                    else {**spec.network_wrapper, "network": "$@network_def.to(@device)"}),
        "datalist": spec.datalist,
        "preprocessing": {"_target_": "Compose", "transforms": spec.preprocessing},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": int(spec.batch_size),
                       "shuffle": False, "num_workers": 0},
        "inferer": spec.inferer,
        **({"prepare_batch": spec.prepare_batch} if spec.prepare_batch is not None else {}),
        "postprocessing": {"_target_": "Compose", "transforms": spec.postprocessing},
        "handlers": handlers,
        "evaluator": evaluator,
        "initialize": ["$os.makedirs(@output_dir, exist_ok=True)"],
        "run": ["$@evaluator.run()"],
    }
    if spec.finalize:
        config["finalize"] = list(spec.finalize)
    return config


def _verify(out: Path, net: Any) -> dict[str, Any]:
    """MONAI's own checks of the folder: the inference workflow's required properties, and the network's
    input/output against ``network_data_format`` (``verify_net_in_out``); ``verify_metadata`` needs a download."""
    import tempfile

    from monai.bundle import ConfigWorkflow, verify_net_in_out

    with tempfile.TemporaryDirectory(prefix="medtasks-bundle-check-") as scratch:   # no inputs: an empty datalist
        wf = ConfigWorkflow(config_file=str(out / "configs" / "inference.json"), workflow_type="infer",
                            logging_file=False, bundle_root=str(out), datalist=[], output_dir=scratch)
        wf.initialize()
        missing = wf.check_properties()
    if missing:
        raise ValueError(f"the bundle's inference.json lacks MONAI's inference properties {missing}")
    params = list(inspect.signature(net.model.forward).parameters)
    extra = {name: torch.rand(1, *x.shape[1:]) for name, x in zip(params[1:], net.inputs[1:])}
    verify_net_in_out(net_id="network_def", meta_file=str(out / "configs" / "metadata.json"),
                      config_file=str(out / "configs" / "inference.json"), device="cpu", n=1, any=1,
                      extra_forward_args=extra, bundle_root=str(out))
    return {"check_properties": "passed (workflow_type=infer)", "verify_net_in_out": "passed",
            "verify_metadata": "not run: it downloads MONAI's JSON schema"}


def export_bundle(task: Any, run: Any, df: Any, out: Path, n_inputs: int = 8) -> list[dict[str, Any]]:
    """Write the bundle of ``run`` into ``out`` (see the module docstring); returns its one sidecar-like record
    (``file``, ``format``, ``parity``, ...). Raises ``ValueError`` (with the reason) for a run or task that has no
    bundle and :class:`~medtasks.engine.export.ExportError` when the trace fails its parity check."""
    from medtasks.engine.export import TOLERANCE, ExportError, _export_torchscript, parity

    spec = task.bundle_spec(run, df)
    if getattr(task.cfg.train, "cpu_bf16", False):
        spec.notes.append("This run has train.cpu_bf16=true: medtasks predict runs the network in bfloat16 on a CPU "
                          "with native bfloat16; the bundle runs it in float32, so on such a CPU its probabilities "
                          "differ from predict's by bfloat16 rounding (about 1e-2).")
    spec.notes.append("Measured equal to medtasks predict on CPU; on CUDA both run the network under AMP when the "
                      "run's train.amp is on (fp16 rounding; not measured here).")
    nets = task.export_networks(run, df, n_inputs)
    if len(nets) != 1:
        raise ValueError(f"--format bundle: {task.name} has {len(nets)} networks; a bundle holds one")
    net = nets[0]
    out = Path(out)
    t0 = time.perf_counter()
    if out.exists():
        for sub in ("configs", "models", "docs"):
            shutil.rmtree(out / sub, ignore_errors=True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    ts = out / "models" / "model.ts"
    with torch.no_grad():
        _export_torchscript(net, ts)
    check = parity(ts, "torchscript", net)
    if not check["max_abs_diff"] <= TOLERANCE:
        shutil.rmtree(out / "models", ignore_errors=True)
        raise ExportError(f"{ts.name}: max |diff| {check['max_abs_diff']:.3g} against torch on {check['n_inputs']} "
                          f"test inputs exceeds {TOLERANCE:g}; the bundle was not written")
    torch.save({k: v.detach().cpu() for k, v in net.model.state_dict().items()}, out / "models" / "model.pt")
    write_json_atomic(out / "configs" / "inference.json", inference_config(spec, bool(task.cfg.train.amp)))
    write_json_atomic(out / "configs" / "metadata.json", metadata(task, run, net, spec, check))
    write_text_atomic(out / "configs" / "logging.conf", LOGGING_CONF)
    write_text_atomic(out / "docs" / "README.md", readme(task, run, spec, check))
    try:
        verified = _verify(out, net)
    except Exception:
        shutil.rmtree(out / "configs", ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    log.info("MONAI bundle of %s -> %s (%.1f s); trace max |diff| %.2g on %d test inputs; %s", run.path, out,
             seconds, check["max_abs_diff"], check["n_inputs"], verified)
    return [{"file": "models/model.ts", "format": "bundle", "bundle": str(out), "task": task.name,
             "config": "configs/inference.json", "weights": "models/model.pt", "export_seconds": round(seconds, 2),
             "parity": check, "verified": verified, "medtasks_components": sorted(spec.medtasks_components)}]
