"""The calibration section's note when the fitted temperature sits at an end of its search range."""

from __future__ import annotations

from medtasks.report.multilabel import _bound_note


def test_bound_note_only_at_the_range_ends() -> None:
    assert "end of the search range" in _bound_note({"temperature": 0.6, "temperature_range": [0.6, 3.0]})
    assert "end of the search range" in _bound_note({"temperature": 3.0, "temperature_range": [0.6, 3.0]})
    assert _bound_note({"temperature": 1.3, "temperature_range": [0.6, 3.0]}) == ""
    assert _bound_note({"temperature": 1.0}) == ""
