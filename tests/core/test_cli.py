from __future__ import annotations

import pytest

from medtasks import api
from medtasks.cli import main

TASKS = ("cardiac_seg", "ich_classify", "ms_segment", "phe_classify", "phe_detect", "phe_multilabel", "phe_segment",
         "xray_classify")


def test_list_shows_registered_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ich_classify" in out and "multilabel" in out and "ich_classify_rsna_report.txt" in out


def test_unknown_task_suggests(capsys):
    assert main(["run", "ich_clasify"]) == 2
    err = capsys.readouterr().err
    assert "Unknown task 'ich_clasify'" in err and "Did you mean 'ich_classify'" in err


def test_bad_override_is_reported_with_key_path(capsys, tmp_path):
    assert main(["run", "ich_classify", "--runs-dir", str(tmp_path), "train.epocs=1"]) == 2
    assert "train.epocs: unknown key. Did you mean 'epochs'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_missing_manifest_is_clear(capsys, tmp_path):
    assert main(["run", "ich_classify", "--manifest", str(tmp_path / "nope.csv"), "--runs-dir", str(tmp_path)]) == 2
    assert "nope.csv does not exist" in capsys.readouterr().err


def test_a_bad_value_fails_before_synthesis_and_names_the_key(capsys, tmp_path, monkeypatch):
    """`medtasks run ich_classify train.epochs=-1`: the config layer's error; nothing synthesised, no run folder."""
    monkeypatch.setenv("MEDTASKS_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    assert main(["run", "ich_classify", "--runs-dir", str(runs), "train.epochs=-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "medtasks run: error: train.epochs: expected a value >= 1, got -1"
    assert not runs.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("task", TASKS)
def test_prepare_names_a_missing_source_folder_first(task, tmp_path):
    """Before any label file or layout is looked for (ich_classify used to say "no label file")."""
    missing = tmp_path / "does" / "not" / "exist"
    out = tmp_path / "out" / "manifest.csv"
    with pytest.raises(FileNotFoundError, match=rf"^--source {missing}: the source folder does not exist; pass "):
        api.prepare(task, missing, out)
    (tmp_path / "labels.csv").write_text("x\n")
    with pytest.raises(ValueError, match=rf"^--source {tmp_path / 'labels.csv'}: is a file, not a folder"):
        api.prepare(task, tmp_path / "labels.csv", out)
    assert not out.parent.exists()


def test_cli_prepare_says_the_source_does_not_exist(capsys, tmp_path):
    assert main(["prepare", "ich_classify", "--source", "/does/not/exist", "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert "--source /does/not/exist: the source folder does not exist" in err and "label" not in err


def test_ich_prepare_checks_its_source_before_the_label_file(tmp_path):
    from medtasks.config import load_config

    cls = api.get_task_class("ich_classify")
    with pytest.raises(FileNotFoundError, match=r"nope: the source folder does not exist"):
        cls(load_config(None, cls.Config)).prepare(tmp_path / "nope", tmp_path / "m.csv")


def test_the_prepare_checks_cover_every_task():
    assert set(TASKS) == {t["name"] for t in api.list_tasks()}
