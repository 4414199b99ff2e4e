"""phe_multilabel end to end on the tiny synthetic release: prepare (with its task4_labels.csv) -> train ->
evaluate (per-label / micro / macro F1 against scikit-learn, per-label thresholds) -> report -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from medtasks import api
from medtasks.config import ConfigError, load_config
from medtasks.tasks.phe_multilabel.config import PheMultilabelConfig
from medtasks.tasks.phe_multilabel.task import LABEL_NOTE

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "phe_multilabel.demo.yaml"
TINY = ["train.epochs=1", "train.batch_size=8", "train.threads=1", "input.size=64", "input.norm_samples=16",
        "eval.n_boot=20", "eval.batch_size=16", "data.split=[0.5,0.25,0.25]"]
LABELS = ["IVH", "IPH", "SAH"]


@pytest.fixture(scope="module")
def prepared(phe_release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifests") / "ml.csv"
    res = api.prepare("phe_multilabel", phe_release, out, progress=False)
    assert res.n_rows == 48 and res.n_rejected == 0
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    return api.run("phe_multilabel", manifest=prepared, config=CONFIG, overrides=TINY,
                   runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_prepare_joins_the_label_table(prepared, phe_release) -> None:
    df = pd.read_csv(prepared, dtype={"patient_id": str})
    table = pd.read_csv(phe_release / "task4_labels.csv")
    assert set(LABELS) <= set(df.columns) and df[LABELS].isin([0, 1]).all().all()
    key = {Path(i).stem: row for i, row in zip(table.image, table[LABELS].values)}
    for _, r in df.iterrows():                                       # every slice has its own row's labels
        assert list(key[Path(r.image).stem]) == [r[c] for c in LABELS]


def test_prepare_without_a_table_says_how(phe_release, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="--labels"):
        api.prepare("phe_multilabel", phe_release, tmp_path / "x.csv", labels=tmp_path / "none.csv", progress=False)


def test_bad_label_rows_are_rejected(phe_release, tmp_path) -> None:
    table = pd.read_csv(phe_release / "task4_labels.csv")
    table.loc[0, "IVH"] = 7                                          # not 0/1
    table = pd.concat([table, table.iloc[[1]]])                      # duplicate
    table.loc[len(table)] = ["ct/9999_00.png", 0, 0, 0]             # no such slice
    path = tmp_path / "labels.csv"
    table.to_csv(path, index=False)
    res = api.prepare("phe_multilabel", phe_release, tmp_path / "m.csv", labels=path, progress=False)
    reasons = pd.read_csv(res.rejected).reason.value_counts().to_dict()
    assert reasons == {"bad_label": 1, "duplicate": 1, "no_image": 1, "no_label": 1} and res.n_rows == 47


def test_run_metrics_match_sklearn(trained) -> None:
    rd, metrics = trained
    saved = json.loads((rd / "metrics.json").read_text())
    assert saved["kind"] == "multilabel" and saved["labels"] == LABELS and LABEL_NOTE in saved["warnings"]
    preds = pd.read_csv(rd / "predictions.csv")
    y = preds[[f"true_{c}" for c in LABELS]].to_numpy()
    p = preds[[f"pred_{c}" for c in LABELS]].to_numpy()
    for avg in ("micro", "macro"):
        assert np.isclose(saved["headline"][f"{avg}_f1"]["value"], f1_score(y, p, average=avg, zero_division=0))
    for j, lab in enumerate(LABELS):
        assert np.isclose(saved["per_class"][lab]["f1"], f1_score(y[:, j], p[:, j], zero_division=0))
        thr = saved["thresholds"][lab]
        assert thr == 0.5                                   # the notes' rule (l.717): 0.5 for every label
        assert ((preds[f"prob_{lab}"] >= 0.5).astype(int) == preds[f"pred_{lab}"]).all()
    assert set(saved["classification_report"]) >= {*LABELS, "micro avg", "macro avg"}
    assert (rd / "classification_report.txt").is_file() and "IVH" in (rd / "report.html").read_text()


def test_predict(trained, phe_release, tmp_path) -> None:
    rd, _ = trained
    src = sorted((phe_release / "SubdatasetC_PNG" / "set").rglob("*.png"))[0]
    out = api.predict("phe_multilabel", rd.path, src, out=tmp_path / "o", progress=False)
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 1 and all(f"prob_{c}" in preds.columns for c in LABELS)


def test_pos_weight_needs_one_per_label() -> None:
    with pytest.raises(ConfigError, match=r"loss\.pos_weight: expected 3 positive"):
        load_config(CONFIG, PheMultilabelConfig, ["loss.pos_weight=[1.0,2.0]"])
    assert (load_config(CONFIG, PheMultilabelConfig, ["loss.pos_weight=[1.0,1.0,2.0]"]).loss.pos_weight
            == [1.0, 1.0, 2.0])
