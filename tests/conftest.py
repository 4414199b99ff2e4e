"""Shared test setup: small thread count (2 cores shared), non-interactive plotting, tiny runs shared by modules."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``tiny_run(task, *overrides)``: a finished run of ``task``'s embedded default on its tiny profile
    (``tests/tasks/tiny_profiles.yaml``) plus ``overrides``, trained once per session for each (task, overrides)
    and shared by the modules that ask for the same one (their outputs go to their own folders). The synthetic
    data live in a session cache (``MEDTASKS_CACHE``)."""
    import yaml

    from medtasks import api

    tiny = yaml.safe_load((Path(__file__).resolve().parent / "tasks" / "tiny_profiles.yaml").read_text())
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDTASKS_CACHE", str(tmp_path_factory.mktemp("tiny-cache")))
    root = tmp_path_factory.mktemp("tiny-runs")
    made: dict = {}

    def make(task: str, *overrides: str):
        key = (task, overrides)
        if key not in made:
            made[key] = api.run(task, overrides=tiny[task] + list(overrides), runs_dir=root, progress=False)[0]
        return made[key]

    yield make
    mp.undo()
