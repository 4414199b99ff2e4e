"""Test helper: run Debian's ``dciodvfy`` (dicom3tools) on a DICOM file and return its errors.

``.ci/run`` installs dicom3tools; where the program is missing the calling test is skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (warnings are not errors); skips without dciodvfy."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (out.stdout + out.stderr).splitlines()
    assert not any(ln.startswith("Abort") for ln in lines), lines      # it could not read the file at all
    return [ln for ln in lines if ln.startswith("Error")]
