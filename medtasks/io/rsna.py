"""RSNA ICH label / submission CSVs: ``ID,Label`` with ``ID = ID_<sop>_<subtype>``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

log = logging.getLogger(__name__)


def read_rsna_labels(path: str | Path, labels: Sequence[str]) -> pd.DataFrame:
    """Wide label table indexed by SOP id (``ID_xxx``), one int column per label.

    Exact duplicate rows are dropped (the public file has some); an ID listed twice with
    different labels keeps the positive one and is logged.
    """
    path = Path(path)
    df = pd.read_csv(path, dtype={"ID": str})
    if list(df.columns[:2]) != ["ID", "Label"]:
        raise ValueError(f"{path}: expected the RSNA columns ID,Label; found {list(df.columns)}")
    n0 = len(df)
    df = df.drop_duplicates()
    parts = df["ID"].str.rsplit("_", n=1, expand=True)
    df = df.assign(sop=parts[0], subtype=parts[1])
    unknown = sorted(set(df.subtype) - set(labels))
    if unknown:
        raise ValueError(f"{path}: unknown subtype(s) {unknown[:5]}; expected {list(labels)}")
    conflicts = df.duplicated(["sop", "subtype"], keep=False).sum()
    if conflicts:
        log.warning("%s: %d rows give one slice/subtype two labels; keeping the positive", path, conflicts)
    wide = df.pivot_table(index="sop", columns="subtype", values="Label", aggfunc="max")
    missing = [lab for lab in labels if lab not in wide.columns]
    if missing:
        raise ValueError(f"{path}: no rows for subtype(s) {missing}")
    wide = wide[list(labels)]
    incomplete = wide.isna().any(axis=1)
    if incomplete.any():
        log.warning("%s: %d slices lack some subtype rows; they are dropped", path, int(incomplete.sum()))
        wide = wide[~incomplete]
    log.info("%s: %d rows (%d duplicates dropped), %d slices", path, n0, n0 - len(df), len(wide))
    return wide.astype(int)


def kaggle_id(sop: str, subtype: str) -> str:
    """Submission ID for a slice: RSNA SOP ids already start with ``ID_``."""
    return f"{sop}_{subtype}" if str(sop).startswith("ID_") else f"ID_{sop}_{subtype}"


def submission_frame(sops: Sequence[str], probs, labels: Sequence[str]) -> pd.DataFrame:
    """Long ``ID,Label`` frame in the Kaggle submission order (per slice, labels in order)."""
    ids, vals = [], []
    for i, sop in enumerate(sops):
        for j, lab in enumerate(labels):
            ids.append(kaggle_id(sop, lab))
            vals.append(float(probs[i][j]))
    return pd.DataFrame({"ID": ids, "Label": vals})
