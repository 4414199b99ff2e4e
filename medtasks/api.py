"""Python API behind the CLI: run / prepare / predict / report / reproduce / bench / list_tasks.

Example:
    >>> from medtasks import api
    >>> run_dir, metrics = api.run("ich_classify", overrides=["train.epochs=1"])
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from medtasks.config import from_dict, load_config, to_dict
from medtasks.data.manifest import Rejected
from medtasks.paths import cache_dir, config_dir  # noqa: F401  (public: api.cache_dir, api.config_dir)
from medtasks.registry import TASKS
from medtasks.rundir import FINISHED, RUNNING, RunDir, RunLog
from medtasks.tasks.contract import Task, write_rejected

log = logging.getLogger(__name__)

def _load_tasks() -> None:
    importlib.import_module("medtasks.tasks")


def get_task_class(name: str) -> type[Task]:
    """The registered task class; unknown names raise with a suggestion."""
    _load_tasks()
    return TASKS.get(name)


def list_tasks() -> list[dict[str, str]]:
    """Name, kind, source report and one-line summary of every registered task."""
    _load_tasks()
    return [{"name": n, "kind": TASKS.get(n).kind, "source": TASKS.get(n).source_report,
             "summary": TASKS.get(n).summary} for n in TASKS.names()]


def default_config(task: str, demo: bool) -> Path:
    """``<task>.demo.yaml`` (the embedded default) or ``<task>.yaml`` (real data) in :func:`config_dir`."""
    path = config_dir() / f"{task}{'.demo' if demo else ''}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass --config or set MEDTASKS_CONFIG_DIR")
    return path


def protocol_overlay(task: str, protocol: str | None) -> list[Path]:
    """``[<task>.<protocol>.yaml]`` from :func:`config_dir` (``protocol=report``: the source report's own
    protocol); ``[]`` for ``None`` / ``medtasks``. A clear error names the profiles that exist."""
    if protocol in (None, "medtasks"):
        return []
    path = config_dir() / f"{task}.{protocol}.yaml"
    if not path.is_file():
        have = sorted(p.name.split(".")[1] for p in config_dir().glob(f"{task}.*.yaml")
                      if p.name.count(".") == 2 and p.name.split(".")[1] != "demo")
        raise FileNotFoundError(f"{path} not found: {task} has no {protocol!r} protocol profile "
                                f"(protocol profiles of {task}: {', '.join(have) or 'none'})")
    return [path]


def write_resolved_config(task_name: str, path: str | Path, out: str | Path, protocol: str | None = None) -> Path:
    """``path`` with its ``base:`` chain and every default resolved, written to ``out`` as a YAML of one's own
    (then ``medtasks run <task> --config <out>``)."""
    from medtasks.config import dump_yaml
    from medtasks.io.atomic import write_text_atomic

    cls = get_task_class(task_name)
    data = to_dict(load_config(path, cls.Config, overlays=protocol_overlay(task_name, protocol)))
    return write_text_atomic(out, dump_yaml(data))


def resolved_dict(task: Task) -> dict[str, Any]:
    data = to_dict(task.cfg)
    return {"task": data.pop("task"), "kind": task.kind, "labels": list(task.labels), **data}


def task_from_run(run: RunDir) -> Task:
    raw = run.read_config()
    cls = get_task_class(raw.get("task", ""))
    task = cls(from_dict(cls.Config, {k: v for k, v in raw.items() if k not in ("kind", "labels")}))
    task.load_state(run)
    return task


def run(task_name: str, manifest: str | Path | None = None, config: str | Path | None = None,
        overrides: Sequence[str] = (), runs_dir: str | Path = "runs", resume: str | Path | None = None,
        progress: bool = True, protocol: str | None = None) -> tuple[RunDir, dict[str, Any]]:
    """Train, evaluate and report one task; returns the run directory and metrics.

    No manifest (and none in the config) -> the embedded synthetic default with the demo profile.
    ``protocol="report"`` lays ``<task>.report.yaml`` (the source report's protocol) over the config.

    It fails before any work, and before a run directory exists, on a bad config value (``ConfigError`` naming the
    key) or a manifest that cannot be used (``ManifestError`` naming the file). Once the run directory exists, its
    ``status.json`` says ``running``, then ``failed`` (the error; the traceback in ``run.log``) or ``finished``.
    """
    with RunLog() as run_log:
        return _run(run_log, task_name, manifest, config, overrides, runs_dir, resume, progress, protocol)


def _run(run_log: RunLog, task_name: str, manifest: str | Path | None, config: str | Path | None,
         overrides: Sequence[str], runs_dir: str | Path, resume: str | Path | None,
         progress: bool, protocol: str | None = None, record: RunDir | None = None) -> tuple[RunDir, dict[str, Any]]:
    """One run; under torchrun every rank comes here: rank 0 sets the run up and broadcasts it (run directory,
    split manifest, config), every rank trains, rank 0 alone evaluates and reports (the others return ``{}``).
    ``record``: a finished run to reproduce (its resolved config and split manifest, unchanged)."""
    from medtasks.engine import distributed
    from medtasks.engine.runtime import seed_everything, set_threads
    from medtasks.io.atomic import writes_disabled
    from medtasks.report import render_report

    cls = get_task_class(task_name)
    cfg = None
    if record is not None:
        cfg_path, overlays = record / "config.resolved.yaml", []
        cfg = _recorded_config(cls, record)
        device_name = cfg.train.device
    elif resume is None:
        demo = manifest is None
        cfg_path = Path(config) if config else default_config(task_name, demo=demo)
        overlays = protocol_overlay(task_name, protocol)
        cfg = load_config(cfg_path, cls.Config, overrides, overlays=overlays)
        if cfg.task != task_name:
            raise ValueError(f"{cfg_path} is a config for task {cfg.task!r}, not {task_name!r}")
        device_name = cfg.train.device
    else:
        device_name = RunDir.open(resume).read_config().get("train", {}).get("device", "auto")
    if distributed.init_from_env(device_name):
        if not cls.distributed_training:
            raise ValueError(f"{task_name} does not train under torchrun: {cls.distributed_hint}")
        if resume is None and distributed.restart_count() > 0:  # torchrun --max-restarts: this launch's run, resumed
            found = _restarted_run(runs_dir, task_name) if distributed.is_main() else None
            resume = distributed.broadcast_object(found)
    main = distributed.is_main()
    with writes_disabled(not main):  # under torchrun rank 0 alone writes the run directory
        if resume is not None:
            rd = RunDir.open(resume)
            if main:
                run_log.open(rd / "run.log")
            task = task_from_run(rd)
            if task.name != task_name:
                raise ValueError(f"{resume} is a {task.name} run, not {task_name}")
            set_threads(task.cfg.train.threads)
            seed_everything(task.cfg.seed)
            df = distributed.broadcast_object(task.load_manifest(rd / "manifest.csv") if main else None)
            warnings: list[str] = []
        else:
            if record is None:
                if manifest is not None:
                    cfg.data.manifest = str(manifest)
                cfg.data.synthetic = cfg.data.manifest is None
            set_threads(cfg.train.threads)
            seed_everything(cfg.seed)
            setup = _setup_run(run_log, cls(cfg), cfg_path, overlays, runs_dir, record) if main else None
            path, cfg, df, warnings = distributed.broadcast_object(setup)
            rd, task = RunDir(Path(path)), cls(cfg)
        if main:
            log.info("run directory: %s", rd.path)
            if resume is not None:
                rd.set_status(RUNNING)
        try:
            fit = task.train(rd, df, resume=resume is not None, progress=progress)
            if not main:
                return rd, {}
            metrics = task.evaluate(rd, df, fit, warnings)
            render_report(rd.path)
            rd.set_status(FINISHED)
        except BaseException as exc:  # one line on the terminal; the traceback in run.log; status failed; re-raise
            if main:
                log.error("%s failed: %s: %s (traceback in %s)", task_name, type(exc).__name__, exc, rd / "run.log")
                rd.mark_failed(exc)
            raise
    return rd, metrics


def _setup_run(run_log: RunLog, task: Task, cfg_path: Path, overlays: list[Path], runs_dir: str | Path,
               record: RunDir | None = None) -> tuple[str, Any, Any, list[str]]:
    """Rank 0's part of a new run: data (synthetic or the manifest; a reproduced run's own split manifest), the
    run directory, its config, env, split manifest and rejected list; returns what every rank needs (path,
    config, split frame, warnings).

    The manifest is read and checked (required columns, labels) and split before the run directory is made, so an
    unusable manifest leaves no directory behind; a failure after that marks the directory failed."""
    from medtasks.engine import distributed
    from medtasks.engine.runtime import select_device

    cfg = task.cfg
    if record is not None:
        manifest_path, rejected = _recorded_inputs(task, record), Rejected.read(record / "rejected.csv")
    elif cfg.data.synthetic:
        log.info("no manifest given: using the embedded SYNTHETIC default (%s)", cfg_path.name)
        prep = task.synthesize(cache_dir())
        manifest_path, rejected = prep.manifest, Rejected.read(prep.rejected)
    else:
        manifest_path = Path(cfg.data.manifest)
        rejected = Rejected.read(manifest_path.with_name(manifest_path.stem + ".rejected.csv"))
    df = task.load_manifest(manifest_path)   # ManifestError naming the file and the missing columns: no directory yet
    df, warnings = task.make_splits(df)
    profile = "-".join([cfg_path.name.removesuffix(".yaml")] + [o.name.split(".")[1] for o in overlays])
    if record is not None:
        profile = "reproduce"
    rd = RunDir.create(runs_dir, task.name, profile.replace(".", "-"))   # status.json: running
    run_log.open(rd / "run.log")
    try:
        rd.write_config(resolved_dict(task))
        extra = {}
        if distributed.is_distributed():
            import torch.distributed as dist

            extra = {"distributed": {"world_size": distributed.world_size(), "backend": dist.get_backend(),
                                     "local_world_size": distributed.local_world_size(),
                                     "launch": distributed.launch_key()}}
        rd.write_env(cfg.seed, str(select_device(cfg.train.device)), extra)
        task.write_manifest(rd, df)
        write_rejected(rd / "rejected.csv", rejected)
    except BaseException as exc:
        log.error("%s failed: %s: %s (traceback in %s)", task.name, type(exc).__name__, exc, rd / "run.log")
        rd.mark_failed(exc)
        raise
    return str(rd.path), cfg, df, warnings


def _recorded_config(cls: type[Task], record: RunDir) -> Any:
    """The config a run recorded (``config.resolved.yaml``), as this version reads it; a key this version no
    longer knows is a clear error naming the run."""
    from medtasks.config import ConfigError

    raw = record.read_config()
    try:
        return from_dict(cls.Config, {k: v for k, v in raw.items() if k not in ("kind", "labels")})
    except ConfigError as exc:
        raise ConfigError(f"{record / 'config.resolved.yaml'} cannot be read by this medtasks version: {exc}; "
                          f"reproduce it with the version that made it (env.json: packages.medtasks)") from None


def _recorded_inputs(task: Task, record: RunDir) -> Path:
    """The run's own ``manifest.csv`` (its rows and splits), after checking that its input files are still there.
    A synthetic run whose cache was cleared gets its files generated again (the synthesis is seeded: the same
    files); a real-data run whose files moved is an error naming the first missing file."""
    path = record / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {record.path} has no split manifest to reproduce from")
    col = task.input_column

    def missing() -> list[str]:
        df = task.load_manifest(path)
        return [p for p in df[col].astype(str) if p and not Path(p).exists()] if col in df.columns else []

    gone = missing()
    if gone and task.cfg.data.synthetic:
        log.info("%d of the run's SYNTHETIC inputs are gone (cache cleared?): generating them again", len(gone))
        task.synthesize(cache_dir())
        gone = missing()
    if gone:
        raise FileNotFoundError(f"{len(gone)} input file(s) of {path} are missing, e.g. {gone[0]}: put the data "
                                f"back at the recorded paths (or set data.root / MEDTASKS_DATA_ROOT where the "
                                f"manifest's paths are relative)")
    return path


def reproduce(run_dir: str | Path, runs_dir: str | Path | None = None, tolerance: float | None = None,
              progress: bool = True) -> tuple[RunDir, dict[str, Any]]:
    """Re-run a finished run from its record into a new run directory (beside it unless ``runs_dir``) and compare
    the two ``metrics.json`` (see :mod:`medtasks.reproduce`); ``reproduce.json`` in the new run holds the
    comparison, which is returned with the new run directory."""
    from medtasks.engine.runtime import select_device
    from medtasks.io.atomic import write_json_atomic
    from medtasks.reproduce import compare_metrics, default_tolerance, environment_differences
    from medtasks.rundir import environment

    orig = RunDir.open(run_dir)
    orig.check_finished()
    if not (orig / "metrics.json").is_file():
        raise FileNotFoundError(f"{orig / 'metrics.json'} not found: {orig.path} did not finish; nothing to compare")
    task_name = orig.read_config().get("task", "")
    cls = get_task_class(task_name)
    cfg = _recorded_config(cls, orig)
    here = environment(cfg.seed, str(select_device(cfg.train.device)))
    differences = environment_differences(orig.read_env(), here)
    for line in differences:
        log.warning("differs from the original run: %s", line)
    tol = default_tolerance(differences, here["device"]) if tolerance is None else float(tolerance)
    log.info("reproducing %s (%s); metrics must agree within %g", orig.path, task_name, tol)
    with RunLog() as run_log:
        rd, _ = _run(run_log, task_name, None, None, (), runs_dir or orig.path.parent.parent, None, progress,
                     record=orig)
    import json

    a, b = (json.loads((r / "metrics.json").read_text(encoding="utf-8")) for r in (orig, rd))
    result = compare_metrics(a, b, tol)
    result.update(original=str(orig.path), environment_differences=differences)
    write_json_atomic(rd / "reproduce.json", result)
    return rd, result


def _restarted_run(runs_dir: str | Path, task_name: str) -> str | None:
    """After a torchrun restart: the run directory this launch created (env.json's launch key), to resume
    when it finished an epoch (a ``last.pt`` anywhere in it); None: start afresh."""
    from medtasks.engine import distributed

    key = distributed.launch_key()
    mine = [p for p in sorted(Path(runs_dir, task_name).glob("*/env.json"))
            if RunDir(p.parent).read_env().get("distributed", {}).get("launch") == key]
    if not mine:
        log.warning("torchrun restart %d: no run directory of this launch yet; starting afresh",
                    distributed.restart_count())
        return None
    rd = mine[-1].parent
    if not any(rd.rglob("last.pt")):
        log.warning("torchrun restart %d: %s never finished an epoch; starting afresh", distributed.restart_count(), rd)
        return None
    log.warning("torchrun restart %d: resuming %s from its last.pt", distributed.restart_count(), rd)
    return str(rd)


def prepare(task_name: str, source: str | Path, out: str | Path, **options: Any):
    """Turn a public dataset's own layout into a manifest (+ ``<stem>.rejected.csv``).

    Raises:
        FileNotFoundError: ``source`` does not exist (checked first, for every task: before a label file or the
            layout is looked for).
        ValueError: ``source`` is a file; ``prepare`` reads a dataset's folder.
    """
    cls = get_task_class(task_name)
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"--source {source}: the source folder does not exist"
                                f"{f' ({source.resolve()})' if not source.is_absolute() else ''}; pass the folder "
                                f"of the downloaded dataset (`medtasks prepare {task_name} --source <folder> "
                                f"--out <manifest.csv>`)")
    if not source.is_dir():
        raise ValueError(f"--source {source}: is a file, not a folder; pass the folder of the downloaded dataset "
                         f"(a label file goes to --labels)")
    task = cls(load_config(None, cls.Config))
    return task.prepare(source, Path(out), **options)


def predict(task_name: str, run_dir: str | Path, input_path: str | Path, out: str | Path | None = None,
            progress: bool = True, probabilities: bool = False, store: str | None = None) -> Path:
    """Predict with a trained run on a file, a folder or a ``dicomweb:`` study / series; ``probabilities``: the
    segmentation maps too; ``store``: STOW-RS the DICOM outputs there (:mod:`medtasks.predict`). Returns the folder."""
    from medtasks.predict import predict_into
    from medtasks.rundir import FAILED

    rd = RunDir.open(run_dir)
    if (rd.read_status() or {}).get("status") == FAILED:
        rd.check_finished()   # a failed run is refused; a killed one (still "running") predicts with its best.pt
    task = task_from_run(rd)
    if task.name != task_name:
        raise ValueError(f"{run_dir} is a {task.name} run, not {task_name}")
    out_dir = Path(out) if out else rd / "predict" / time.strftime("%Y%m%d-%H%M%S")
    return predict_into(task, rd, input_path, out_dir, progress=progress, probabilities=probabilities, store=store)


def export(task_name: str, run_dir: str | Path, fmt: str, out: str | Path | None = None, n_inputs: int = 8
           ) -> tuple[Path, list[dict[str, Any]]]:
    """Export a trained run's networks (``torchscript`` / ``onnx`` / a MONAI ``bundle``) with their contract, each
    checked against torch on the run's own test inputs (see :mod:`medtasks.engine.export`); returns the folder and
    the sidecars."""
    rd = RunDir.open(run_dir)
    rd.check_finished()
    task = task_from_run(rd)
    if task.name != task_name:
        raise ValueError(f"{run_dir} is a {task.name} run, not {task_name}")
    out_dir = Path(out) if out else rd / "export" / fmt
    return out_dir, task.export(rd, task.load_manifest(rd / "manifest.csv"), fmt, out_dir, n_inputs)


def evaluate(task_name: str, run_dir: str | Path, manifest: str | Path, split: str | None = None,
             out: str | Path | None = None, by: Sequence[str] = ()) -> tuple[Path, dict[str, Any]]:
    """External evaluation of a trained run on another labelled manifest, into ``<run>/evaluate/<timestamp>/``
    (see :mod:`medtasks.evaluate`); ``by``: manifest columns for subgroup tables (:mod:`medtasks.subgroups`).
    Returns the folder and its metrics."""
    from medtasks.evaluate import evaluate_run

    rd = RunDir.open(run_dir)
    rd.check_finished()
    task = task_from_run(rd)
    if task.name != task_name:
        raise ValueError(f"{run_dir} is a {task.name} run, not {task_name}")
    return evaluate_run(task, rd, manifest, split=split, out=out, by=list(by))


def report(run_dir: str | Path) -> Path:
    """Re-render ``report.html`` from a run directory's files."""
    from medtasks.report import render_report

    return render_report(RunDir.open(run_dir).path)


def compare(run_dirs: Sequence[str | Path], out: str | Path | None = None, n_boot: int = 1000, seed: int = 0,
            progress: bool = True, unpaired: bool = False) -> Path:
    """Side-by-side metrics of runs of one task, with paired patient-bootstrap differences on the same cases
    (unpaired ones when the runs were scored on different cases, or with ``unpaired``); returns
    ``compare.html`` (see :mod:`medtasks.compare`)."""
    from medtasks.compare import compare_runs

    return compare_runs(run_dirs, out, n_boot=n_boot, seed=seed, progress=progress, unpaired=unpaired)
