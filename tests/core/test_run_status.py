"""A run that fails is marked failed in its run directory (``status.json``; the traceback in ``run.log``), and
``report`` / ``compare`` name it as a failed run instead of tripping over its missing files; a manifest that cannot
be used stops the run before any run directory exists (issue 16, "failing early and cleanly")."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtasks import api
from medtasks.cli import main
from medtasks.compare import RunNotFinished, compare_runs
from medtasks.data.manifest import ManifestError
from medtasks.report import load_run, render_report
from medtasks.rundir import FailedRunError, RunDir, read_status

TINY = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks" / "tiny_profiles.yaml").read_text())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One synthetic-data cache for the module (the tiny PHE release is generated once)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTASKS_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def failed_run(cache, tmp_path_factory) -> Path:
    """A phe_classify run whose training raises once the run directory exists."""
    from medtasks.tasks.kinds.classification import ClassificationTask

    def broken_train(self, *a, **k):
        raise RuntimeError("training broke")

    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ClassificationTask, "train", broken_train)
        with pytest.raises(RuntimeError, match="training broke"):
            api.run("phe_classify", overrides=TINY["phe_classify"], runs_dir=runs, progress=False)
    rd, = (runs / "phe_classify").iterdir()
    return rd


def _message(rd: Path) -> str:
    return f"{rd} is a failed run (RuntimeError: training broke): see {rd / 'run.log'}"


def test_a_failed_run_is_marked_failed_with_its_traceback(failed_run: Path) -> None:
    status = json.loads((failed_run / "status.json").read_text(encoding="utf-8"))
    assert status["status"] == "failed" and status["error"] == "RuntimeError: training broke"
    assert status["started"] <= status["updated"]
    assert RunDir(failed_run).status == "failed"
    log = (failed_run / "run.log").read_text(encoding="utf-8")
    assert "ERROR medtasks.api: phe_classify failed: RuntimeError: training broke" in log
    assert "Traceback (most recent call last)" in log and "in broken_train" in log
    assert not (failed_run / "metrics.json").exists() and not (failed_run / "report.html").exists()


def test_report_names_the_failed_run(failed_run: Path, capsys) -> None:
    with pytest.raises(FailedRunError) as exc:
        api.report(failed_run)
    assert str(exc.value) == _message(failed_run)
    assert main(["report", str(failed_run)]) == 2
    assert capsys.readouterr().err.strip() == f"medtasks report: error: {_message(failed_run)}"
    assert not (failed_run / "report.html").exists()


def test_compare_names_the_failed_run(failed_run: Path, tmp_path, capsys) -> None:
    import shutil

    other = shutil.copytree(failed_run, tmp_path / "other")
    with pytest.raises(RunNotFinished) as exc:
        compare_runs([failed_run, other], tmp_path / "cmp", n_boot=10, progress=False)
    assert str(exc.value) == _message(failed_run)
    assert isinstance(exc.value, FailedRunError) and isinstance(exc.value, ValueError)
    assert main(["compare", str(failed_run), str(other), "--out", str(tmp_path / "cmp2")]) == 2
    assert capsys.readouterr().err.strip() == f"medtasks compare: error: {_message(failed_run)}"
    assert not (tmp_path / "cmp").exists() and not (tmp_path / "cmp2").exists()


def test_a_run_without_a_status_is_judged_by_its_files(failed_run: Path, tmp_path) -> None:
    """A run directory from before status.json: the old 'metrics.json not found' error, no failed-run claim."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(failed_run, old)
    (old / "status.json").unlink()
    assert read_status(old) is None and RunDir(old).status is None
    RunDir(old).check_finished()
    with pytest.raises(FileNotFoundError, match=r"metrics\.json not found: a report is rendered from a finished run"):
        load_run(old)


def test_a_run_still_marked_running_is_named_as_unfinished(tmp_path) -> None:
    rd = RunDir.create(tmp_path / "runs", "phe_classify", "demo")
    assert read_status(rd.path)["status"] == "running"
    (rd / "config.resolved.yaml").write_text("task: phe_classify\nkind: binary\n")
    with pytest.raises(FailedRunError, match=rf"^{rd.path} has not finished \(status running since .*: still "
                                             r"running, or it was killed\): see .*run\.log$"):
        render_report(rd.path)
    with pytest.raises(FailedRunError, match="has not finished"):
        rd.check_finished()
    rd.set_status("finished")
    rd.check_finished()
    assert read_status(rd.path)["status"] == "finished"
    with pytest.raises(ValueError, match="status 'done': one of running, failed, finished"):
        rd.set_status("done")


def test_a_failure_while_setting_the_run_up_marks_it_failed(cache, tmp_path, monkeypatch) -> None:
    from medtasks.tasks.contract import Task

    def broken(self, run, df):
        raise OSError("disk full")

    monkeypatch.setattr(Task, "write_manifest", broken)
    with pytest.raises(OSError, match="disk full"):
        api.run("phe_classify", overrides=TINY["phe_classify"], runs_dir=tmp_path / "runs", progress=False)
    rd, = (tmp_path / "runs" / "phe_classify").iterdir()
    assert read_status(rd) == {**read_status(rd), "status": "failed", "error": "OSError: disk full"}
    assert "in broken" in (rd / "run.log").read_text(encoding="utf-8")


def test_a_manifest_missing_a_required_column_stops_before_any_run_directory(tmp_path, capsys) -> None:
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.parent.mkdir()
    pd.DataFrame({"patient_id": ["1", "2"], "image": ["a.png", "b.png"]}).to_csv(manifest, index=False)
    runs = tmp_path / "runs"
    with pytest.raises(ManifestError, match=r"manifest .*manifest\.csv lacks column\(s\) \['has_phe'\]"):
        api.run("phe_classify", manifest=manifest, runs_dir=runs, progress=False)
    assert not runs.exists()
    assert main(["run", "phe_classify", "--manifest", str(manifest), "--runs-dir", str(runs)]) == 2
    assert "lacks column(s) ['has_phe']" in capsys.readouterr().err
    assert not runs.exists()


def test_a_resumed_run_is_running_again_then_records_its_own_outcome(failed_run: Path, tmp_path, monkeypatch) -> None:
    import shutil

    from medtasks.tasks.kinds.classification import ClassificationTask

    copy = shutil.copytree(failed_run, tmp_path / "copy")
    first = read_status(copy)
    seen = {}

    def train_again(self, run, *a, **k):
        seen.update(read_status(run.path))
        raise RuntimeError("broke again")

    monkeypatch.setattr(ClassificationTask, "train", train_again)
    with pytest.raises(RuntimeError, match="broke again"):
        api.run("phe_classify", resume=copy, progress=False)
    assert seen["status"] == "running" and "resumed" in seen and "error" not in seen
    now = read_status(copy)
    assert now["status"] == "failed" and now["error"] == "RuntimeError: broke again"
    assert now["started"] == first["started"]
    assert (copy / "run.log").read_text(encoding="utf-8").count("Traceback (most recent call last)") == 2
