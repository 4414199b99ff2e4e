"""Render a run directory into ``report.html`` plus ``figures/*.png``; never trains.

The report reads only the files the engine wrote (design §1): ``metrics.json`` is required,
everything else is optional and its section says "not available" when absent, so a report
can still be rendered for a run that stopped early or was copied without its manifest.
A run whose ``status.json`` says it failed (or is still running) and that has no ``metrics.json``
is named as such (:class:`~medtasks.rundir.FailedRunError`: the error and ``run.log``); a failed
run that did write its metrics (it failed later, e.g. drawing a figure) is rendered, with a
banner saying it failed. Run directories without ``status.json`` (older runs) render as before.

Sections that depend on the kind of task come from :data:`SECTIONS`, a registry from kind to
builder. A builder is ``builder(run: RunData, fig_dir: Path) -> list[str]`` returning HTML
``<section>`` fragments; a new kind (segmentation, detection) registers its own:

Example:
    >>> from medtasks.report import SECTIONS
    >>> @SECTIONS.register("segmentation")          # doctest: +SKIP
    ... def segmentation_sections(run, fig_dir): ...
    >>> render_report("runs/ich_classify/20240101-000000-demo")  # doctest: +SKIP
    PosixPath('runs/ich_classify/20240101-000000-demo/report.html')

Any ``figures/extra_*.png`` a task wrote (Grad-CAM, overlays) is shown under "Additional
figures" with its file name as caption.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from medtasks.io.atomic import write_text_atomic
from medtasks.registry import Registry, UnknownNameError, did_you_mean
from medtasks.report import detection as _detection
from medtasks.report import html as _html
from medtasks.report import multilabel as _multilabel
from medtasks.report import references as _references
from medtasks.report import segmentation as _segmentation
from medtasks.report import subgroups as _subgroups
from medtasks.rundir import FAILED, FINISHED, FailedRunError, read_status, unfinished_run_message

__all__ = ["render_report", "load_run", "RunData", "SECTIONS", "SectionBuilder"]

logger = logging.getLogger(__name__)

SectionBuilder = Callable[["RunData", Path], "list[str]"]

SECTIONS = Registry("report kind")
SECTIONS.register("multilabel")(_multilabel.build_sections)
# A binary run is a one-label multilabel run in predictions.csv and metrics.json.
SECTIONS.register("binary")(_multilabel.build_sections)
SECTIONS.register("segmentation")(_segmentation.build_sections)
SECTIONS.register("detection")(_detection.build_sections)


@dataclass
class RunData:
    """Everything the report reads from one run directory.

    Attributes:
        run_dir: The run directory.
        run_id: Its folder name.
        task: Task name (config ``task``, else metrics.json ``task``, else the parent folder).
        kind: Task kind selecting the section builder.
        labels: Label names in report order.
        synthetic: True when the run used generated phantoms.
        metrics: Parsed metrics.json.
        config: Parsed config.resolved.yaml ({} when absent).
        config_text: The YAML verbatim, or None when absent.
        env: Parsed env.json, or None.
        manifest: manifest.csv reduced to the ``patient_id``/``split`` columns, or None.
        rejected: rejected.csv (possibly empty), or None when absent.
        history: history.csv, or None.
        predictions: predictions.csv, or None.
        status: Parsed status.json (``status``: running / failed / finished, ``error``), or None for a run
            directory made before statuses were recorded.
    """

    run_dir: Path
    run_id: str
    task: str
    kind: str
    labels: list[str]
    synthetic: bool
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    env: dict[str, Any] | None = None
    manifest: pd.DataFrame | None = None
    rejected: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    status: dict[str, Any] | None = None


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame | None:
    """Read a CSV; None when the file is absent, an empty frame when it is a 0-byte file."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def load_run(run_dir: str | Path) -> RunData:
    """Load the files of a run directory that the report needs.

    Args:
        run_dir: A run directory written by the engine.

    Returns:
        The parsed run.

    Raises:
        FileNotFoundError: ``run_dir`` or its ``metrics.json`` does not exist.
        FailedRunError: (a ``ValueError``) the run failed, or has not finished, before writing metrics.json.
        ValueError: Neither config.resolved.yaml nor metrics.json names the kind.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory {run_dir} does not exist.")
    status = read_status(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None and status is not None and status.get("status") != FINISHED:
        raise FailedRunError(unfinished_run_message(run_dir, status))
    if status is not None and status.get("status") == FAILED:
        logger.warning("%s; rendering what it wrote", unfinished_run_message(run_dir, status))
    if metrics is None:
        raise FileNotFoundError(
            f"{run_dir / 'metrics.json'} not found: a report is rendered from a finished run. "
            "Run `medtasks run <task>` first, or check the run's log for why evaluation did not finish."
        )
    config_path = run_dir / "config.resolved.yaml"
    config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    config = (yaml.safe_load(config_text) or {}) if config_text is not None else {}

    kind = config.get("kind") or metrics.get("kind")
    if not kind:
        raise ValueError(f"{run_dir}: neither config.resolved.yaml nor metrics.json has a 'kind' key.")
    if metrics.get("kind") and config.get("kind") and metrics["kind"] != config["kind"]:
        logger.warning("kind differs: config %r vs metrics.json %r; using the config's",
                       config["kind"], metrics["kind"])
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    ids = {"case_id": str, "patient_id": str, "split": str}
    return RunData(
        run_dir=run_dir,
        run_id=run_dir.resolve().name,
        task=str(config.get("task") or metrics.get("task") or run_dir.resolve().parent.name),
        kind=str(kind),
        labels=[str(x) for x in (config.get("labels") or metrics.get("labels") or [])],
        synthetic=bool(data_cfg.get("synthetic")) or bool(metrics.get("synthetic")),
        metrics=metrics,
        config=config,
        config_text=config_text,
        env=_read_json(run_dir / "env.json"),
        # Real manifests can hold ~10^6 slices; the report needs only two columns of them.
        manifest=_read_csv(run_dir / "manifest.csv", usecols=lambda c: c in ("patient_id", "split"),
                           dtype=str),
        rejected=_read_csv(run_dir / "rejected.csv", dtype=str, keep_default_na=False),
        history=_read_csv(run_dir / "history.csv"),
        predictions=_read_csv(run_dir / "predictions.csv", dtype=ids),
        status=status,
    )


def _section_builder(run: RunData) -> SectionBuilder:
    try:
        return SECTIONS.get(run.kind)
    except UnknownNameError:
        raise UnknownNameError(
            f"{run.run_dir}: no report sections for kind {run.kind!r} (from config.resolved.yaml / "
            f"metrics.json).{did_you_mean(run.kind, SECTIONS.names())} A new kind registers its "
            "builder with `@medtasks.report.SECTIONS.register(kind)`."
        ) from None


def render_report(run_dir: str | Path) -> Path:
    """Render ``<run_dir>/report.html`` and ``<run_dir>/figures/*.png`` from the run's files.

    Re-rendering overwrites the same files (idempotent); every file is written atomically.

    Args:
        run_dir: A run directory written by the engine.

    Returns:
        Path of the written ``report.html``.

    Raises:
        FileNotFoundError: The run directory or its metrics.json is missing.
        FailedRunError: The run failed (or has not finished) before writing metrics.json.
        UnknownNameError: No section builder is registered for the run's kind (a ``KeyError``).
    """
    run = load_run(run_dir)
    builder = _section_builder(run)  # before writing anything, so an unknown kind leaves no debris
    fig_dir = run.run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    parts = [
        _html.title_block(run),
        _html.headline_section(run),
        *([ref] if (ref := _references.references_section(run.task, run.metrics, run.synthetic)) else []),
        _html.data_section(run),
        _html.history_section(run, fig_dir),
        *builder(run, fig_dir),
        *([sub] if (sub := _subgroups.subgroups_section(run, fig_dir)) else []),
    ]
    extras = _html.extra_figures_section(fig_dir)
    if extras:
        parts.append(extras)
    parts.append(_html.environment_section(run))

    out = run.run_dir / "report.html"
    write_text_atomic(out, _html.page(f"{run.task} — {run.run_id}", parts))
    logger.info("wrote %s", out)
    return out
