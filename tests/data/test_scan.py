"""scan_files' journal: an interrupted scan, started again, reads only what it had not reached."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest

from medtasks.data.scan import read_journal, scan_files

CALLS: list[str] = []


def _reader(path: str, stop_after: int | None = None) -> dict:
    if stop_after is not None and len(CALLS) >= stop_after:
        raise KeyboardInterrupt  # not an Exception: stops the scan like Ctrl-C or a kill
    CALLS.append(path)
    text = Path(path).read_text()
    if text == "bad":
        raise ValueError("cannot parse")
    return {"path": path, "value": float(text), "name": Path(path).name}


@pytest.fixture()
def files(tmp_path) -> list[str]:
    out = []
    for i in range(10):
        f = tmp_path / "in" / f"{i:02d}.txt"
        f.parent.mkdir(exist_ok=True)
        f.write_text("bad" if i == 3 else f"{i / 7}")
        out.append(str(f))
    return out


def test_interrupted_scan_resumes_from_its_journal(files, tmp_path) -> None:
    journal = tmp_path / "m.scan-journal.jsonl"
    CALLS.clear()
    fresh_rows, fresh_rej = scan_files(files, _reader, workers=1, progress=False)
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        scan_files(files, partial(_reader, stop_after=6), workers=1, progress=False, journal=journal)
    assert len(read_journal(journal)) == 6             # 5 rows + the rejected file 03, one line each
    CALLS.clear()
    rows, rej = scan_files(files, _reader, workers=1, progress=False, journal=journal)
    assert CALLS == files[6:]                           # only the files the first attempt never reached
    assert rows == fresh_rows
    assert rej.frame().equals(fresh_rej.frame()) and list(rej.frame().reason) == ["unreadable"]


def test_a_changed_file_is_read_again_and_a_torn_line_is_ignored(files, tmp_path) -> None:
    journal = tmp_path / "j.jsonl"
    CALLS.clear()
    scan_files(files, _reader, workers=1, progress=False, journal=journal)
    with open(journal, "a") as fh:
        fh.write('{"p": "cut mid-')                      # a crash while writing the last line
    Path(files[5]).write_text("2.5")
    st = os.stat(files[5])
    os.utime(files[5], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    CALLS.clear()
    rows, _ = scan_files(files, _reader, workers=1, progress=False, journal=journal)
    assert CALLS == [files[5]] and rows[4]["value"] == 2.5   # file 03 is rejected: row 4 is file 05
    assert all(json.loads(line)["p"] for line in journal.read_text().splitlines()[:10])
