"""The task contract, checked for every registered task (design §2: tests/tasks/ is parametrised over the registry).

Fast tier: each task's name, kind, config schema, both configs, task card, report section, tiny profile
and hooks. Slow tier: each task's embedded default (`medtasks run <task>` with no manifest: the synthetic
set in the real file format) runs end to end on its tiny profile (``tiny_profiles.yaml``), and
``predict`` runs on one of its synthetic inputs.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtasks import api
from medtasks.config import load_config
from medtasks.paths import config_dir
from medtasks.registry import TASKS
from medtasks.report import SECTIONS
from medtasks.report.html import esc
from medtasks.schema import RunConfig
from medtasks.tasks.contract import KINDS, Task, register_task
from medtasks.tasks.kinds.classification import ClassificationTask

api.list_tasks()  # registers every task
NAMES = TASKS.names()
PROFILES = yaml.safe_load((Path(__file__).with_name("tiny_profiles.yaml")).read_text())
REPO_ROOT = Path(__file__).resolve().parents[2]
SEEDS = REPO_ROOT.parent / "shared" / "seeds"


def test_every_task_of_the_five_reports_is_registered() -> None:
    assert NAMES == sorted(["ich_classify", "phe_classify", "phe_detect", "phe_segment", "phe_multilabel",
                            "ms_segment", "cardiac_seg", "xray_classify"])


@pytest.mark.parametrize("name", NAMES)
def test_name_kind_labels_and_schema(name: str) -> None:
    cls = TASKS.get(name)
    assert issubclass(cls, Task) and cls.name == name and cls.kind in KINDS
    assert cls.labels and all(isinstance(lab, str) for lab in cls.labels)
    assert dataclasses.is_dataclass(cls.Config) and issubclass(cls.Config, RunConfig)
    assert cls.Config().task == name
    assert cls.summary and cls.source_report.endswith(".txt")
    if SEEDS.is_dir():
        assert (SEEDS / cls.source_report).is_file(), f"{cls.source_report} is not in {SEEDS}"


@pytest.mark.parametrize("name", NAMES)
def test_every_hook_implemented(name: str) -> None:
    cls = TASKS.get(name)
    assert not inspect.isabstract(cls), sorted(cls.__abstractmethods__)
    for hook in ("prepare", "synthesize", "predict_inputs", "train", "evaluate", "predict_frame",
                 "load_manifest", "make_splits", "write_predict_outputs"):
        assert callable(getattr(cls, hook)), hook
        assert getattr(Task, hook).__doc__, f"Task.{hook} has no docstring"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("demo", [False, True], ids=["paper", "demo"])
def test_both_configs_exist_and_load(name: str, demo: bool) -> None:
    path = api.default_config(name, demo=demo)
    cfg = load_config(path, TASKS.get(name).Config)
    assert cfg.task == name and path.stem.split(".")[0] == name


@pytest.mark.parametrize("name", NAMES)
def test_task_card_report_section_and_tiny_profile(name: str) -> None:
    card = REPO_ROOT / "tasks" / f"{name}.md"
    assert card.is_file() and name in card.read_text(encoding="utf-8")
    assert callable(SECTIONS.get(TASKS.get(name).kind))
    assert name in PROFILES, f"add a tiny profile for {name} to tests/tasks/tiny_profiles.yaml"
    cls = TASKS.get(name)
    load_config(api.default_config(name, demo=True), cls.Config, PROFILES[name])   # the overrides are valid keys


# ---- registration refuses a task that breaks the contract, at import time ------------------------------------
@dataclasses.dataclass
class _ToyConfig(RunConfig):
    task: str = "toy_task"


def _toy(**attrs):
    body = {"kind": "binary", "labels": ("x",), "Config": _ToyConfig, "source_report": "toy.txt", **attrs}
    return type("Toy", (ClassificationTask,), body)


def test_a_missing_hook_fails_at_registration() -> None:
    with pytest.raises(TypeError, match=r"toy_task.*does not implement .*build_model.*predict_inputs.*prepare"):
        register_task("toy_task")(_toy())
    assert "toy_task" not in TASKS


@pytest.mark.parametrize("attrs, message", [
    ({"kind": "regression"}, "kind 'regression' is not one of"),
    ({"labels": ()}, "has no labels"),
    ({"source_report": ""}, "names no source_report"),
    ({"Config": dataclasses.make_dataclass("Other", [("task", str, "other")], bases=(RunConfig,))},
     "defaults to 'other', not 'toy_task'"),
])
def test_contract_errors_name_the_problem(attrs: dict, message: str) -> None:
    hooks = {h: (lambda self, *a, **k: None) for h in ("prepare", "synthesize", "predict_inputs", "records",
                                                        "build_transforms", "build_model", "build_loss")}
    with pytest.raises(TypeError, match=message):
        register_task("toy_task")(_toy(**hooks, **attrs))
    assert "toy_task" not in TASKS


def test_a_complete_task_registers_under_the_name_given_once() -> None:
    hooks = {h: (lambda self, *a, **k: None) for h in ("prepare", "synthesize", "predict_inputs", "records",
                                                        "build_transforms", "build_model", "build_loss")}
    cls = _toy(**hooks)
    try:
        assert register_task("toy_task")(cls) is cls and cls.name == "toy_task" and TASKS.get("toy_task") is cls
        with pytest.raises(ValueError, match="already registered"):
            register_task("toy_task")(cls)
    finally:
        TASKS._items.pop("toy_task", None)


# ---- slow tier: the embedded default of every task, end to end, then predict --------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_embedded_default_runs_end_to_end_and_predicts(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDTASKS_CACHE", str(tmp_path / "cache"))
    rd, metrics = api.run(name, overrides=PROFILES[name], runs_dir=tmp_path / "runs", progress=False)
    assert metrics["task"] == name and metrics["kind"] == TASKS.get(name).kind and metrics["synthetic"] is True
    for f in ("config.resolved.yaml", "env.json", "manifest.csv", "rejected.csv", "history.csv", "predictions.csv",
              "metrics.json", "report.html"):
        assert (rd / f).is_file(), f
    assert json.loads((rd / "metrics.json").read_text())["config_hash"] == metrics["config_hash"]
    assert list(rd.path.rglob("best.pt")), "no best checkpoint"
    man = pd.read_csv(rd / "manifest.csv", dtype=str)
    assert set(man.split) <= {"train", "val", "test"} and (man.split == "test").any()
    one = man.loc[man.split == "test", TASKS.get(name).input_column].iloc[0]
    out = api.predict(name, rd.path, one, out=tmp_path / "predict", progress=False)
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) >= 1 and (out / "rejected.csv").is_file()
    # the source report's numbers sit beside the run's own, each comparable figure found in metrics.json
    from medtasks.report.references import reference

    for m in reference(name)["metrics"]:   # the path exists (on a tiny run the value itself may be undefined)
        if m["key"] is not None:
            node = metrics
            for part in m["key"].split("."):
                assert isinstance(node, dict) and part in node, f"{name}: {m['key']} not in metrics.json"
                node = node[part]
    html = (rd / "report.html").read_text(encoding="utf-8")
    assert 'id="reference"' in html and "NOT COMPARABLE" in html and 'id="protocol-banner"' not in html


REPORT_PROTOCOLS = sorted(p.name.split(".")[0] for p in config_dir().glob("*.report.yaml"))


def test_every_task_has_a_report_protocol_profile() -> None:
    assert REPORT_PROTOCOLS == sorted(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", REPORT_PROTOCOLS)
def test_report_protocol_runs_on_the_synthetic_default_and_is_marked(name: str, tmp_path: Path, monkeypatch) -> None:
    """``--protocol report``: the report's protocol over the demo profile; metrics.json and report.html say so."""
    monkeypatch.setenv("MEDTASKS_CACHE", str(tmp_path / "cache"))
    rd, metrics = api.run(name, overrides=PROFILES[name], runs_dir=tmp_path / "runs", progress=False,
                          protocol="report")
    cfg = load_config(api.default_config(name, demo=True), TASKS.get(name).Config, PROFILES[name],
                      overlays=api.protocol_overlay(name, "report"))
    assert metrics["protocol"] == "report" and cfg.protocol.departures
    for line in cfg.protocol.warnings():
        assert line in metrics["warnings"]
    assert metrics["split"] == cfg.eval.split and rd.path.name.endswith("demo-report")
    html = (rd / "report.html").read_text(encoding="utf-8")
    assert 'id="protocol-banner"' in html and esc(cfg.protocol.departures[0]) in html
    man = pd.read_csv(rd / "manifest.csv", dtype=str)
    assert man.split.isin([cfg.eval.split, "all"]).any()   # "all": ms_segment split by slice inside each scan
