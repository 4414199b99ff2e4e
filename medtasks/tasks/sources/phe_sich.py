"""The PHE-SICH-CT-IDS dataset source, shared by the four PHE tasks: ``prepare`` from the release's own
layout, the embedded synthetic release (one cache folder for every PHE task with the same ``synth``
settings), its ``synth`` config section, the reader of image files for ``predict`` and what the
release's label means."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from medtasks.config import checked, to_dict
from medtasks.data.manifest import Rejected
from medtasks.data.phe_sich import index_phe_sich, parse_slice_name, write_phe_manifest
from medtasks.io import images
from medtasks.synth.phe_sich import generate_phe_sich
from medtasks.tasks.contract import PrepareResult

PHE_LABEL_NOTE = ("Label = perihematomal edema (PHE): phe = 1 when the slice's annotation has a PHE box. The dataset "
                  "marks the edema, not the hematoma, and every patient has a hemorrhage: this is not "
                  "hemorrhage-vs-normal classification (the source notes call it 'Hemorrhage vs Non-Hemorrhage').")


@dataclass
class PheSynthConfig:
    """Embedded default: :func:`medtasks.synth.phe_sich.generate_phe_sich` parameters."""

    n_patients: int = checked(20, ge=1)
    matrix: int = checked(512, ge=32)
    slices: tuple[int, int] = checked((26, 32), length=2, each=True, ge=1, ascending=True, what="(min, max) slices")
    seed: int = checked(0, ge=0)


def find_images(source: Path) -> tuple[pd.DataFrame, Rejected]:
    """Image files under ``source`` (a file or a folder, recursive) that decode; the others rejected.
    ``patient_id`` / ``slice_index`` come from the PHE-SICH name when it parses (else empty)."""
    found, bad = images.find_images(source)
    rows = []
    for p in found:
        key = parse_slice_name(p.name)
        rows.append({"image": str(p), "patient_id": str(key[0]) if key else "", "slice_index": key[1] if key else None})
    return pd.DataFrame(rows, columns=["image", "patient_id", "slice_index"]), Rejected(bad)


class PheSichSource:
    """Mixin for tasks on PHE-SICH-CT-IDS: ``prepare`` and ``synthesize`` (task-specific: the files each
    slice must have, ``phe_require``, and the manifest file name of the synthetic release)."""

    phe_require: ClassVar[tuple[str, ...]] = ("xml",)
    phe_manifest: ClassVar[str] = "manifest.csv"
    input_column: ClassVar[str] = "image"
    name: ClassVar[str]

    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """PHE-SICH-CT-IDS layout -> manifest (one row per slice with the required files) + rejected.csv.

        ``workers`` is accepted for the CLI's sake (indexing reads headers only; it is serial).
        """
        if labels is not None:
            raise ValueError(f"{self.name} takes its labels from the release's own annotations; --labels is not used")
        df, rejected = index_phe_sich(source, require=self.phe_require, progress=progress)
        manifest, rej_path = write_phe_manifest(df, out, rejected)
        return PrepareResult(Path(manifest), Path(rej_path), len(df), len(rejected))

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        """Generate (once per settings) the synthetic release in ``cache_dir`` and prepare it."""
        s = self.cfg.synth  # type: ignore[attr-defined]
        tag = hashlib.sha256(json.dumps(to_dict(s), sort_keys=True).encode()).hexdigest()[:8]
        folder = Path(cache_dir) / f"phe_sich-synth-n{s.n_patients}-m{s.matrix}-seed{s.seed}-{tag}"
        generate_phe_sich(folder, n_patients=s.n_patients, seed=s.seed, matrix=s.matrix, slices=tuple(s.slices),
                          progress=False)
        return self.prepare(folder, folder / self.phe_manifest, progress=False)
