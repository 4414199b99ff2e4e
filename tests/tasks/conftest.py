"""Shared fixtures of the task tests: one tiny synthetic PHE-SICH-CT-IDS release per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtasks.synth.phe_sich import generate_phe_sich


@pytest.fixture(scope="session")
def phe_release(tmp_path_factory) -> Path:
    """6 patients x 8 slices of 128 px (the layout, naming quirk, MedInfo and task4_labels.csv included)."""
    return generate_phe_sich(tmp_path_factory.mktemp("phe") / "release", n_patients=6, matrix=128, slices=(8, 8),
                             seed=0, progress=False, workers=1)
