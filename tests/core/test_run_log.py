"""run.log: what the terminal shows, in the run directory (log lines from the start, no progress-bar
redraws, the CLI's summary, and the traceback of a run that fails)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from medtasks import api
from medtasks.cli import main

TINY = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks" / "tiny_profiles.yaml").read_text())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTASKS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_cli_run_writes_run_log_with_the_summary(cache, capsys) -> None:
    runs = cache / "runs"
    assert main(["run", "phe_multilabel", *TINY["phe_multilabel"], "--runs-dir", str(runs)]) == 0
    printed = capsys.readouterr().out
    rd, = (runs / "phe_multilabel").iterdir()
    text = (rd / "run.log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert "embedded SYNTHETIC default" in lines[0]                    # logged before the run directory existed
    assert any("run directory:" in ln for ln in lines) and any(" epoch 1: " in ln for ln in lines)
    assert "\r" not in text                                            # no progress-bar redraws
    assert text.rstrip().endswith(printed.strip().splitlines()[-1])   # the summary the terminal showed
    assert "micro_f1" in text
    status = json.loads((rd / "status.json").read_text(encoding="utf-8"))
    assert status["status"] == "finished" and "error" not in status


def test_a_failed_run_leaves_its_traceback_in_run_log(cache, monkeypatch) -> None:
    from medtasks.tasks.kinds.classification import ClassificationTask

    def broken(self, *a, **k):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(ClassificationTask, "evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        api.run("phe_classify", overrides=TINY["phe_classify"], runs_dir=cache / "runs", progress=False)
    rd, = (cache / "runs" / "phe_classify").iterdir()
    text = (rd / "run.log").read_text(encoding="utf-8")
    assert "ERROR medtasks.api: phe_classify failed: RuntimeError: evaluation broke" in text
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert json.loads((rd / "status.json").read_text(encoding="utf-8"))["error"] == "RuntimeError: evaluation broke"
    assert logging.getLogger("medtasks").level == logging.NOTSET       # the run left logging as it found it
