"""Config values that can be checked before any work are checked by the config layer (issue 16, "failing early"):
ranges, positive counts, fractions summing to 1, known registry names, each error naming the key path. A bad value
stops ``medtasks run`` in the config layer: no data synthesised, no run directory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from medtasks import api
from medtasks.config import Check, ConfigError, check_config, checked, field_rules, from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "medtasks" / "configs"
TASKS = ("cardiac_seg", "ich_classify", "ms_segment", "phe_classify", "phe_detect", "phe_multilabel", "phe_segment",
         "xray_classify")


def _load(task: str, overrides: list[str]):
    cls = api.get_task_class(task)
    return load_config(api.default_config(task, demo=True), cls.Config, overrides)


# (task, overrides, the whole message or its start): one line per rule kind, across the tasks' schemas
BAD = [
    ("ich_classify", ["train.epochs=-1"], r"train\.epochs: expected a value >= 1, got -1$"),
    ("phe_classify", ["train.batch_size=0"], r"train\.batch_size: expected a value >= 1, got 0$"),
    ("xray_classify", ["optim.lr=0"], r"optim\.lr: expected a value > 0, got 0$"),
    ("ms_segment", ["optim.lr=-1e-3"], r"optim\.lr: expected a value > 0, got -0\.001$"),
    ("phe_segment", ["data.split=[0.6,0.2,0.1]"],
     r"data\.split: expected values summing to 1, got \[0\.6, 0\.2, 0\.1\] \(sum 0\.9\) \(train / val / test"),
    ("ms_segment", ["data.split=[0.5,0.6,-0.1]"], r"data\.split\[2\]: expected a value in \[0, 1\], got -0\.1"),
    ("cardiac_seg", ["data.split=[0.5,0.5]"], r"data\.split: expected 3 values, got 2 \(\[0\.5, 0\.5\]\)"),
    ("phe_multilabel", ["eval.threshold=1.5"], r"eval\.threshold: expected a value in \[0, 1\], got 1\.5$"),
    ("phe_detect", ["eval.conf=1.2"], r"eval\.conf: expected a value in \[0, 1\], got 1\.2$"),
    ("cardiac_seg", ["infer.classifier_threshold=2"], r"infer\.classifier_threshold: expected a value in \[0, 1\]"),
    ("ich_classify", ["cv.folds=1"], r"cv\.folds: expected 0 or a value >= 2, got 1 \(0 = off\)$"),
    ("phe_segment", ["synth.slices=[8,4]"], r"synth\.slices: "),
    ("phe_classify", ["synth.n_patients=0"], r"synth\.n_patients: expected a value >= 1, got 0$"),
    ("ich_classify", ["train.early_stopping_patience=-1"], r"train\.early_stopping_patience: expected a value >= 0"),
    ("phe_segment", ["scheduler.patience=-2"], r"scheduler\.patience: expected a value >= 0, got -2$"),
    ("xray_classify", ["scheduler.factor=1.5"], r"scheduler\.factor: expected a value in \(0, 1\), got 1\.5$"),
    ("phe_classify", ["eval.n_boot=0"], r"eval\.n_boot: expected a value >= 1, got 0$"),
    ("phe_classify", ["data.num_workers=-1"], r"data\.num_workers: expected a value >= 0, got -1$"),
    ("ich_classify", ["seed=-1"], r"seed: expected a value in \[0, 4294967295\], got -1$"),
    ("phe_classify", ["augment.hflip=2"], r"augment\.hflip: expected a value in \[0, 1\], got 2$"),
    ("xray_classify", ["augment.resized_crop_scale=[0.9,0.5]"],
     r"augment\.resized_crop_scale: expected \[low, high\] with low <= high, got \[0\.9, 0\.5\]$"),
    ("ich_classify", ["synth.slices_per_series=[10,8]"], r"synth\.slices_per_series: expected \[low, high\]"),
    ("xray_classify", ["synth.n_children=1"], r"synth\.n_children: expected a value >= 2, got 1$"),
    ("ich_classify", ["loss.pos_weight=[1,1,1,1,1,0]"], r"loss\.pos_weight\[5\]: expected a value > 0, got 0"),
    ("ich_classify", ["input.size=0"], r"input\.size: expected a value >= 16, got 0$"),
    ("ich_classify", ["input.windows=[[40,0]]"], r"input\.windows\[0\]: the width must be > 0 HU"),
    ("ich_classify", ["sequence.kernel=4"], r"sequence\.kernel: expected an odd width"),
    ("ms_segment", ["input.empty_slice_fraction=1.5"], r"input\.empty_slice_fraction: expected a value in \[0, 1\]"),
    ("cardiac_seg", ["class12.epochs=0"], r"class12\.epochs: expected a value >= 1, got 0$"),
    ("cardiac_seg", ["class3.lr=0"], r"class3\.lr: expected a value > 0, got 0$"),
    ("cardiac_seg", ["class12.ratios=[1,1]"], r"class12\.ratios: expected 3 patch-centre odds"),
    ("cardiac_seg", ["input.hu_min=3000"], r"input\.hu_min: expected hu_min < hu_max"),
    ("cardiac_seg", ["synth.shape=[64,64]"], r"synth\.shape: expected 3 values, got 2"),
    # known registry names
    ("cardiac_seg", ["gate_model.model=resnet10_3"],
     r"gate_model\.model: unknown model 'resnet10_3'\. Did you mean 'resnet10_3d'"),
    ("cardiac_seg", ["gate_model.loss=cross_entropi"], r"gate_model\.loss: unknown loss 'cross_entropi'\. Did you"),
    ("phe_multilabel", ["loss.name=weighted_bc"],
     r"loss\.name: unknown loss 'weighted_bc'\. Did you mean 'weighted_bce'"),
    ("ich_classify", ["model.backbone=resnet5"], r"model\.backbone: unknown backbone 'resnet5'\. Did you mean"),
    # xray's model section redefines backbone's default: the base class's rule still holds
    ("xray_classify", ["model.backbone=vgg61"], r"model\.backbone: unknown backbone 'vgg61'\. Did you mean 'vgg16'"),
    ("phe_segment", ["model.encoder=resnet35"], r"model\.encoder: unknown smp encoder 'resnet35'\. Did you mean"),
    ("ms_segment", ["model.name=smp_unet", "model.encoder=resnet35"],
     r"model\.encoder: unknown smp encoder 'resnet35'"),
    # the segmentation kind's train section redefines monitor's default: the rule still holds
    ("ms_segment", ["train.monitor=dice"], r"train\.monitor: 'dice' does not have the expected form \(a validation"),
    ("phe_detect", ["detect.model=https://example.org/yolov8n.pt"], r"detect\.model: 'https://.*' is a URL"),
    ("phe_detect", ["detect.model=yolov8n"], r"detect\.model: expected a model \.yaml"),
]


@pytest.mark.parametrize("task,overrides,message", BAD, ids=[f"{t}:{o[-1]}" for t, o, _ in BAD])
def test_a_bad_value_is_an_error_naming_its_key(task: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        _load(task, overrides)


@pytest.mark.parametrize("task,overrides", [
    ("ich_classify", ["loss.pos_weight=prevalence", "cv.folds=0", "data.split=[1,0,0]"]),
    ("ich_classify", ["cv.folds=2", "eval.threshold=0", "augment.hflip=1", "seed=0"]),
    ("cardiac_seg", ["data.split=[0.8,0.2,0.0]", "class3.negatives_per_positive=0"]),
    ("ms_segment", ["model.name=smp_unet", "model.encoder=resnet18", "train.monitor=val_loss"]),
    ("xray_classify", ["augment.resized_crop_scale=null", "loss.alpha=null", "model.backbone=vgg16"]),
])
def test_values_at_the_bounds_and_null_pass(task: str, overrides: list[str]) -> None:
    _load(task, overrides)


def _packaged() -> list[tuple[str, Path]]:
    return [(p.name.split(".")[0], p) for p in sorted(CONFIGS.glob("*.yaml"))]


@pytest.mark.parametrize("task,path", _packaged(), ids=[p.name for _, p in _packaged()])
def test_every_packaged_config_validates(task: str, path: Path) -> None:
    cls = api.get_task_class(task)
    cfg = load_config(path, cls.Config)
    check_config(cfg)
    assert cfg.task == task
    if path.name.endswith(".report.yaml"):   # as `--protocol report` lays it over the demo and the real profile
        for base in (api.default_config(task, demo=True), api.default_config(task, demo=False)):
            check_config(load_config(base, cls.Config, overlays=[path]))


def test_packaged_configs_cover_every_task() -> None:
    assert {t for t, _ in _packaged()} == set(TASKS) == set(api.TASKS.names())
    for task in TASKS:
        assert {p.name for t, p in _packaged() if t == task} == {f"{task}.yaml", f"{task}.demo.yaml",
                                                                   f"{task}.report.yaml"}


@pytest.mark.parametrize("task", TASKS)
def test_the_tiny_test_profiles_validate(task: str) -> None:
    """tests/tasks/tiny_profiles.yaml (the slow tier's and scripts/behaviour_check.py's overrides) stays valid."""
    import yaml

    tiny = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks" / "tiny_profiles.yaml").read_text())
    cls = api.get_task_class(task)
    for overlays in ([], api.protocol_overlay(task, "report")):
        check_config(load_config(api.default_config(task, demo=True), cls.Config, tiny[task], overlays=overlays))


@pytest.mark.parametrize("task", TASKS)
def test_schema_defaults_pass_their_own_rules(task: str) -> None:
    check_config(api.get_task_class(task).Config())


@pytest.mark.parametrize("task", TASKS)
def test_the_shared_sections_keep_their_rules_in_every_task(task: str) -> None:
    cfg = api.get_task_class(task).Config()
    for section, names in (("train", ("epochs", "batch_size", "early_stopping_patience", "monitor")),
                           ("optim", ("lr", "weight_decay")), ("data", ("split", "num_workers")),
                           ("eval", ("threshold", "n_boot", "batch_size")), ("cv", ("folds",))):
        rules = field_rules(type(getattr(cfg, section)))
        assert set(names) <= set(rules), f"{task}: {section} lacks rules for {set(names) - set(rules)}"


def test_run_with_a_bad_value_fails_before_synthesis_or_a_run_directory(tmp_path, monkeypatch) -> None:
    """`medtasks run ich_classify train.epochs=-1`: the config error, in well under a second once the tasks are
    imported; nothing synthesised (the cache folder stays absent), no run directory."""
    monkeypatch.setenv("MEDTASKS_CACHE", str(tmp_path / "cache"))
    api.get_task_class("ich_classify")   # the imports, outside the timing
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^train\.epochs: expected a value >= 1, got -1$"):
        api.run("ich_classify", overrides=["train.epochs=-1"], runs_dir=tmp_path / "runs", progress=False)
    assert time.perf_counter() - start < 5.0
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected a value > 0, got 0$"):
        api.run("phe_segment", overrides=["optim.lr=0"], runs_dir=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


# ---- the mechanism itself


@dataclass
class _Section:
    count: int = checked(3, ge=1)
    fraction: float = checked(0.5, gt=0, lt=1, note="a share")
    folds: int = checked(0, ge=2, also=(0,))
    pair: Optional[list[float]] = checked(None, length=2, each=True, ge=0, ascending=True)
    name: str = checked("b", options=lambda: ["a", "b"], what="letter")
    plain: int = -5                                     # no rule: anything of the type goes


@dataclass
class _Child(_Section):
    count: int = 7                                      # a new default keeps the base's rule


@dataclass
class _Loose(_Section):
    count: int = checked(0, ge=0)                       # a new rule replaces the base's


def test_rules_are_checked_with_the_key_path() -> None:
    assert from_dict(_Section, {"pair": [0.1, 0.2], "folds": 2, "name": "a", "plain": -9}).pair == [0.1, 0.2]
    bad = [({"count": 0}, r"s\.count: expected a value >= 1, got 0$"),
           ({"fraction": 1.0}, r"s\.fraction: expected a value in \(0, 1\), got 1 \(a share\)$"),
           ({"fraction": float("nan")}, r"s\.fraction: expected a value in \(0, 1\), got nan"),
           ({"folds": 1}, r"s\.folds: expected 0 or a value >= 2, got 1$"),
           ({"pair": [0.1]}, r"s\.pair: expected 2 values, got 1"),
           ({"pair": [0.3, -1]}, r"s\.pair\[1\]: expected a value >= 0, got -1"),
           ({"pair": [0.3, 0.2]}, r"s\.pair: expected \[low, high\] with low <= high"),
           ({"name": "c"}, r"s\.name: unknown letter 'c'\. Valid options: a, b\.$")]
    for data, message in bad:
        with pytest.raises(ConfigError, match="^" + message):
            from_dict(_Section, data, "s")


def test_rules_are_inherited_unless_redeclared() -> None:
    assert field_rules(_Child)["count"] == Check(ge=1)
    with pytest.raises(ConfigError, match=r"^count: expected a value >= 1, got 0$"):
        from_dict(_Child, {"count": 0})
    assert from_dict(_Loose, {"count": 0}).count == 0


@dataclass
class _Inner:
    n: int = checked(0, ge=1)               # a default breaking its rule: only to see that defaults are checked


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)


def test_defaulted_sections_are_checked_too() -> None:
    """A section the YAML does not name is built from its defaults and checked like the others."""
    with pytest.raises(ConfigError, match=r"^inner\.n: expected a value >= 1, got 0$"):
        from_dict(_Outer, {})
    with pytest.raises(ConfigError, match=r"^inner\.n: expected a value >= 1, got 0$"):
        check_config(_Outer())
