from __future__ import annotations

from medtasks.cli import main


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
