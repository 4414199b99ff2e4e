"""Fixtures of tests/io: a real Orthanc DICOMweb server and a synthetic study on it (see tests/orthanc.py)."""

from __future__ import annotations

from tests.orthanc import orthanc, orthanc_study  # noqa: F401
