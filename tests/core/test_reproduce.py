"""``medtasks reproduce``: the metric comparison, the environment differences, and end to end on a tiny
synthetic phe_classify run (equal on this machine, also after the synthetic cache was cleared; a perturbed
metric fails with exit status 1; an older record without environment fields still reproduces)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from medtasks import api, cli
from medtasks.reproduce import compare_metrics, default_tolerance, environment_differences, flatten

TINY = ["synth.n_patients=10", "synth.matrix=64", "synth.slices=[7,7]", "input.size=64", "input.norm_samples=16",
        "train.batch_size=8", "train.threads=1", "train.epochs=2", "eval.n_boot=20", "eval.batch_size=16",
        "data.split=[0.5,0.3,0.2]"]


def test_compare_metrics_tolerance_nan_timing_and_missing() -> None:
    a = {"auc": 0.9, "ci": [0.8, 1.0], "nan": float("nan"), "train_time_s": 3.0, "fps": 10.0, "label": "x",
         "per_class": {"a": {"f1": 0.5}}}
    b = {"auc": 0.9, "ci": [0.8, 1.0], "nan": float("nan"), "train_time_s": 9.0, "fps": 20.0, "label": "x",
         "per_class": {"a": {"f1": 0.5}}}
    res = compare_metrics(a, b, 0.0)
    assert res["ok"] and res["compared"] == 6 and res["max_abs_diff"] == 0.0   # time and fps left out
    b["per_class"]["a"]["f1"] = 0.5004
    assert compare_metrics(a, b, 1e-3)["ok"]
    res = compare_metrics(a, b, 1e-4)
    assert not res["ok"] and res["differences"][0]["metric"] == "per_class.a.f1"
    assert res["differences"][0]["diff"] == pytest.approx(4e-4)
    b["extra"] = 1
    b["label"] = "y"
    names = {r["metric"] for r in compare_metrics(a, b, 1.0)["differences"]}
    assert names == {"extra", "label"}                      # a missing key and a changed string, whatever the tol
    assert flatten({"a": [{"b": 1}, 2]}) == {"a[0].b": 1, "a[1]": 2}


def test_environment_differences_and_default_tolerance() -> None:
    env = {"python": "3.11.2", "platform": "Linux", "device": "cpu", "torch_threads": 2, "cpu_native_bf16": True,
           "packages": {"torch": "2.14.1", "monai": "1.6.1", "medtasks": "0.1"}}
    assert environment_differences(env, json.loads(json.dumps(env))) == []
    assert default_tolerance([], "cpu") == 0.0 and default_tolerance([], "cuda:0") == 0.01
    other = {**env, "torch_threads": 4, "packages": {**env["packages"], "torch": "2.15.0", "medtasks": "0.2"}}
    assert environment_differences(env, other) == ["torch_threads: 2 -> 4", "torch: 2.14.1 -> 2.15.0"]
    old = {"seed": 0, "device": "cpu"}                    # an early record
    diffs = environment_differences(old, env)
    assert "package versions: not recorded" in diffs and "torch_threads: not recorded -> 2" in diffs
    assert default_tolerance(diffs, "cpu") == 0.01


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDTASKS_CACHE", str(cache))
    runs = tmp_path_factory.mktemp("runs")
    rd, _ = api.run("phe_classify", overrides=TINY, runs_dir=runs, progress=False)
    yield rd, cache
    mp.undo()


def test_reproduce_is_exact_here_even_after_the_cache_is_cleared(original, monkeypatch) -> None:
    rd, cache = original
    monkeypatch.setenv("MEDTASKS_CACHE", str(cache))
    synth = list(cache.glob("phe_sich-synth-*"))
    assert synth
    for folder in synth:
        shutil.rmtree(folder)                              # the synthetic inputs are gone: generated again
    assert not list(cache.glob("phe_sich-synth-*"))
    new, result = api.reproduce(rd.path, progress=False)
    assert new.path != rd.path and new.path.parent == rd.path.parent and "reproduce" in new.name
    assert result["ok"] and result["tolerance"] == 0.0 and result["max_abs_diff"] == 0.0
    assert result["compared"] > 20 and result["environment_differences"] == []
    assert json.loads((new / "reproduce.json").read_text())["ok"]
    a, b = (pd.read_csv(r / "manifest.csv", dtype={"patient_id": str}) for r in (rd, new))
    pd.testing.assert_frame_equal(a, b)                    # same rows, same split
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (rd, new))
    assert ma["synthetic"] is True and mb["synthetic"] is True and ma["config_hash"] == mb["config_hash"]
    assert (new / "report.html").is_file()


def test_reproduce_fails_on_a_perturbed_metric_and_reads_an_old_record(original, monkeypatch, tmp_path,
                                                                       capsys) -> None:
    rd, cache = original
    monkeypatch.setenv("MEDTASKS_CACHE", str(cache))
    old = tmp_path / "old" / "phe_classify" / rd.name
    shutil.copytree(rd.path, old)
    metrics = json.loads((old / "metrics.json").read_text())
    key = next(k for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_s"))
    metrics[key] += 0.05
    (old / "metrics.json").write_text(json.dumps(metrics))
    (old / "env.json").write_text(json.dumps({"seed": 42, "device": "cpu"}))   # a record from an older version
    rc = cli.main(["reproduce", str(old)])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "NOT reproduced" in out and key in out and "tolerance 0.01" in out
    assert "differs: package versions: not recorded" in out
    made = [p for p in (tmp_path / "old" / "phe_classify").iterdir() if p.name != rd.name]
    assert len(made) == 1 and not json.loads((made[0] / "reproduce.json").read_text())["ok"]


def test_reproduce_refuses_an_unfinished_run(tmp_path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.resolved.yaml").write_text("task: phe_classify\n")
    assert cli.main(["reproduce", str(run)]) == 2
