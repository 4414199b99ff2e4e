"""Tests for medtasks.report: render a fake run directory and inspect the HTML and PNGs."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imsave

from medtasks.registry import UnknownNameError
from medtasks.report import SECTIONS, render_report
from medtasks.report.html import SYNTHETIC_BANNER

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTION_ORDER = ["headline", "reference", "data", "history", "per-class", "confusion", "curves", "reliability",
                 "environment"]


class ReportParser(HTMLParser):
    """Collects img sources, section ids in order, and the rows of every table with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.sections: list[str] = []
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._row_class = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "section":
            self.sections.append(a.get("id") or "")
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row, self._row_class = [], a.get("class") or ""
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if self._row:  # header rows have <th> only
                self.tables[self._table].append((self._row_class, self._row))
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(report: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(report.read_text(encoding="utf-8"))
    return parser


def section_text(report: Path, section_id: str) -> str:
    text = report.read_text(encoding="utf-8")
    start = text.index(f'<section id="{section_id}">')
    return text[start:text.index("</section>", start)]


def run_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def test_every_image_is_a_png_next_to_the_report(rendered: Path) -> None:
    parser = parse(rendered)
    assert len(parser.images) == 5  # loss, confusion, roc, pr, reliability
    for src in parser.images:
        assert src.startswith("figures/") and src.endswith(".png"), src
        path = rendered.parent / src
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), src
    assert not list(rendered.parent.rglob("*.tmp"))


def test_sections_in_documented_order(rendered: Path) -> None:
    assert parse(rendered).sections == SECTION_ORDER


def test_synthetic_banner_and_warnings(rendered: Path) -> None:
    text = rendered.read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" in text and SYNTHETIC_BANNER in text
    assert text.index("SYNTHETIC DATA") < text.index('<section id="headline">')
    assert 'id="warnings"' in text and "Split is slice-level" in text


def test_headline_table_shows_ci(rendered: Path) -> None:
    metrics = json.loads((rendered.parent / "metrics.json").read_text())
    rows = {cells[0]: cells for _, cells in parse(rendered).tables["headline-table"]}
    assert set(rows) == set(metrics["headline"])
    wf1 = metrics["headline"]["weighted_f1"]
    assert rows["weighted_f1"][1] == f"{wf1['value']:.4f}"
    assert rows["weighted_f1"][2] == f"[{wf1['ci_low']:.4f}, {wf1['ci_high']:.4f}]"
    assert rows["weighted_f1"][3] == "3" and "resampled by patient" in rows["weighted_f1"][5]
    assert rows["rsna_weighted_log_loss"][2].startswith("n/a (fixture: bootstrap deliberately skipped")


def test_per_class_table_one_row_per_label(rendered: Path) -> None:
    labels = json.loads((rendered.parent / "metrics.json").read_text())["labels"]
    assert len(labels) == 6
    rows = parse(rendered).tables["per-class"]
    label_rows = [cells for cls, cells in rows if cls == "label-row"]
    assert [cells[0] for cells in label_rows] == labels
    assert all(len(cells) == 9 for cells in label_rows)
    assert [cells[0] for cls, cells in rows if cls == "summary"] == \
        ["macro average", "weighted average", "micro average"]
    epidural = label_rows[0]
    assert epidural[4] == "n/a"  # no positives in the test split -> ROC-AUC null
    overall = {cells[0]: cells[1] for _, cells in parse(rendered).tables["overall-table"]}
    assert {"RSNA weighted log loss", "Expected calibration error (ECE)", "Brier score"} <= set(overall)


def test_data_summary_and_skipped_label(rendered: Path) -> None:
    parser = parse(rendered)
    splits = {cells[0]: cells[1:] for _, cells in parser.tables["split-table"]}
    assert splits["test"] == ["60", "3"] and splits["train"] == ["80", "4"] and splits["total"] == ["160", "8"]
    assert len(parser.tables["rejected-table"]) == 2
    assert {c[0] for _, c in parser.tables["rejected-reasons"]} == {"unreadable_dicom", "missing_label"}
    curves = section_text(rendered, "curves")
    assert "epidural (only one class present" in curves and "60 rows" in curves


def test_rerender_is_idempotent(run_dir_factory) -> None:
    run = run_dir_factory()
    first = render_report(run)
    files, html_text = run_files(run), first.read_text()
    assert render_report(run) == first
    assert run_files(run) == files
    assert first.read_text() == html_text


def test_not_synthetic_missing_optional_files(run_dir_factory) -> None:
    run = run_dir_factory(synthetic=False)
    (run / "history.csv").unlink()
    (run / "rejected.csv").unlink()
    (run / "env.json").unlink()
    report = render_report(run)
    text = report.read_text()
    assert "SYNTHETIC DATA" not in text and 'id="warnings"' not in text
    assert "history.csv not available" in section_text(report, "history")
    assert "rejected.csv not available" in section_text(report, "data")
    assert "env.json not available" in section_text(report, "environment")
    assert "figures/loss_curves.png" not in text
    assert parse(report).sections == SECTION_ORDER


def test_header_only_rejected_and_escaping(run_dir_factory) -> None:
    run = run_dir_factory()
    (run / "rejected.csv").write_text("path,reason,detail\n")
    report = render_report(run)
    assert "0 inputs were rejected" in report.read_text()

    (run / "rejected.csv").write_text('path,reason,detail\n"<script>alert(1)</script>.dcm",bad & <b>,x\n')
    text = render_report(run).read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "bad &amp; &lt;b&gt;" in text


def test_binary_kind_and_extra_figures(run_dir_factory) -> None:
    run = run_dir_factory(kind="binary", labels=["hemorrhage"])
    (run / "figures").mkdir()
    imsave(run / "figures" / "extra_gradcam_case1.png", np.random.default_rng(0).random((32, 32)))
    report = render_report(run)
    parser = parse(report)
    assert [c[0] for cls, c in parser.tables["per-class"] if cls == "label-row"] == ["hemorrhage"]
    assert parser.sections == SECTION_ORDER[:-1] + ["extra-figures", "environment"]
    assert "figures/extra_gradcam_case1.png" in parser.images
    assert "<figcaption>extra_gradcam_case1.png</figcaption>" in section_text(report, "extra-figures")
    for src in parser.images:
        assert (run / src).read_bytes().startswith(PNG_SIGNATURE)


def test_unknown_kind_raises_before_writing(run_dir_factory) -> None:
    run = run_dir_factory(kind="segmentaton")
    with pytest.raises(KeyError, match="segmentaton") as info:
        render_report(run)
    assert isinstance(info.value, UnknownNameError)
    assert "binary" in str(info.value) and "multilabel" in str(info.value)
    assert not (run / "report.html").exists() and not (run / "figures").exists()


def test_missing_metrics_is_a_clear_error(run_dir_factory) -> None:
    run = run_dir_factory()
    (run / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        render_report(run)


def _status(run: Path, status: str, error: str | None = None) -> None:
    data = {"status": status, "started": "2024-01-01T12:00:00", "updated": "2024-01-01T12:05:00"}
    (run / "status.json").write_text(json.dumps({**data, **({"error": error} if error else {})}))


def test_a_failed_run_without_metrics_is_named_as_failed(run_dir_factory) -> None:
    from medtasks.rundir import FailedRunError

    run = run_dir_factory()
    (run / "metrics.json").unlink()
    _status(run, "failed", "RuntimeError: CUDA out of memory")
    with pytest.raises(FailedRunError) as exc:
        render_report(run)
    assert str(exc.value) == f"{run} is a failed run (RuntimeError: CUDA out of memory): see {run / 'run.log'}"
    assert not (run / "report.html").exists()


def test_a_failed_run_with_metrics_renders_with_a_banner(run_dir_factory) -> None:
    """It failed after evaluation (e.g. drawing a figure): what it wrote is shown, under a banner saying so."""
    run = run_dir_factory()
    _status(run, "failed", "ValueError: <figure> broke")
    html = render_report(run).read_text(encoding="utf-8")
    assert 'id="failed-banner"' in html and "ValueError: &lt;figure&gt; broke" in html
    _status(run, "finished")
    assert 'id="failed-banner"' not in render_report(run).read_text(encoding="utf-8")
    (run / "status.json").unlink()   # a run made before statuses were recorded
    assert 'id="failed-banner"' not in render_report(run).read_text(encoding="utf-8")


def test_registry_rejects_duplicate_kind() -> None:
    with pytest.raises(ValueError, match="already registered"):
        SECTIONS.register("multilabel")(lambda run, fig_dir: [])


# --------------------------------------------------------------------------- headless browser

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_chromium_renders_report(rendered: Path, tmp_path: Path) -> None:
    url = rendered.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = ReportParser()
    parser.feed(dom.stdout)
    assert "headline-table" in parser.tables and len(parser.tables["headline-table"]) == 3
    assert parser.images == parse(rendered).images and len(parser.images) == 5

    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", url)
    assert result.returncode == 0, result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    # The figures are coloured; a blank page or only broken-image icons would be near-uniform.
    assert pixels[..., :3].std() > 0.1
    assert np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0] > 500
