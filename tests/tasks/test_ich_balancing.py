"""ich_classify: balancing over training + validation (the report's protocol) and prevalence pos_weight."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtasks import api
from medtasks.config import load_config
from medtasks.losses.classification import prevalence_pos_weight
from medtasks.rundir import RunDir
from medtasks.tasks.ich_classify.config import LABELS

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "ich_classify.demo.yaml"


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sub = (rng.random((n, 5)) < [0.05, 0.2, 0.1, 0.15, 0.1]).astype(int)
    df = pd.DataFrame(sub, columns=list(LABELS[:-1]))
    df["any"] = sub.max(axis=1)
    df["patient_id"] = [f"p{i // 4}" for i in range(n)]
    df["series_instance_uid"] = df["patient_id"]
    df["sop_instance_uid"] = [f"s{i}" for i in range(n)]
    df["Z"], df["z_normalized"] = np.arange(n) % 4 * 5.0, 0.5
    df["path"] = "x.dcm"
    df["split"] = np.where(np.arange(n) < int(0.7 * n), "train", "val")
    return df


@pytest.mark.parametrize("scope", ["train", "train_val"])
def test_sampling_scope_balances_validation_only_when_asked(scope, tmp_path, monkeypatch) -> None:
    cfg = load_config(CONFIG, api.get_task_class("ich_classify").Config,
                      ["sampling.per_class=20", "sampling.normal=20", "sampling.replace=true",
                       f"sampling.scope={scope}", "loss.pos_weight=prevalence", "input.normalize=none"])
    task = api.get_task_class("ich_classify")(cfg)
    df = _frame(400, 0)
    seen = {}
    monkeypatch.setattr(task, "fit_split", lambda run, tr, va, **kw: seen.update(train=tr, val=va))
    monkeypatch.setattr(task, "calibrate", lambda run, va: seen.update(calibrated=va))
    (tmp_path / "checkpoints").mkdir()
    task.train(RunDir(tmp_path), df)
    info = json.loads((tmp_path / "sampling.json").read_text())
    assert info["scope"] == scope
    val = df[df.split == "val"]
    if scope == "train":   # validation keeps every row and its prevalence
        assert len(seen["val"]) == len(val) and sorted(seen["val"].sop_instance_uid) == sorted(val.sop_instance_uid)
        assert info["rows_after"] == len(seen["train"])
    else:                  # one balanced pool, each row in its own split, validation resampled too
        assert info["rows_after"] == len(seen["train"]) + len(seen["val"])
        assert set(seen["val"].sop_instance_uid) <= set(val.sop_instance_uid)
        assert len(seen["val"]) != len(val)
    assert (seen["train"].split == "train").all() and (seen["calibrated"].split == "val").all()
    # pos_weight = negatives / positives of the (balanced) training rows
    y = seen["train"][list(LABELS)].to_numpy()
    expected = [round(float((len(y) - y[:, j].sum()) / y[:, j].sum()), 4) for j in range(6)]
    assert task.state["pos_weight"] == expected
    assert task.build_loss().pos_weight.tolist() == pytest.approx(expected, rel=1e-6)


def test_prevalence_pos_weight_by_hand_and_undefined_labels(caplog) -> None:
    assert prevalence_pos_weight([[1, 1], [0, 1], [0, 0], [0, 1], [0, 1]]) == [4.0, 0.25]
    assert prevalence_pos_weight([[1, 0], [0, 0]], ["a", "b"]) == [1.0, 1.0]   # b: no positive -> 1.0, warned
    assert "b have no positive" in caplog.text
