"""What the PHE-SICH-CT-IDS tasks share about their data: ``prepare`` from the release's own layout and
the embedded synthetic release (one cache folder for every PHE task with the same ``synth`` settings)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

from medtasks.config import to_dict
from medtasks.tasks.base import PrepareResult


class PheSichSource:
    """Mixin for tasks on PHE-SICH-CT-IDS: ``prepare`` and ``synthesize`` (task-specific: the files each
    slice must have, ``phe_require``, and the manifest file name of the synthetic release)."""

    phe_require: ClassVar[tuple[str, ...]] = ("xml",)
    phe_manifest: ClassVar[str] = "manifest.csv"
    name: ClassVar[str]

    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """PHE-SICH-CT-IDS layout -> manifest (one row per slice with the required files) + rejected.csv.

        ``workers`` is accepted for the CLI's sake (indexing reads headers only; it is serial).
        """
        from medtasks.data.phe_sich import index_phe_sich, write_phe_manifest

        if labels is not None:
            raise ValueError(f"{self.name} takes its labels from the release's own annotations; --labels is not used")
        df, rejected = index_phe_sich(source, require=self.phe_require, progress=progress)
        manifest, rej_path = write_phe_manifest(df, out, rejected)
        return PrepareResult(Path(manifest), Path(rej_path), len(df), len(rejected))

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        """Generate (once per settings) the synthetic release in ``cache_dir`` and prepare it."""
        from medtasks.synth.phe_sich import generate_phe_sich

        s = self.cfg.synth  # type: ignore[attr-defined]
        tag = hashlib.sha256(json.dumps(to_dict(s), sort_keys=True).encode()).hexdigest()[:8]
        folder = Path(cache_dir) / f"phe_sich-synth-n{s.n_patients}-m{s.matrix}-seed{s.seed}-{tag}"
        generate_phe_sich(folder, n_patients=s.n_patients, seed=s.seed, matrix=s.matrix, slices=tuple(s.slices),
                          progress=False)
        return self.prepare(folder, folder / self.phe_manifest, progress=False)
