"""HTML building blocks and the report sections that every kind of run shares.

The report is one static HTML file: inline CSS, no JavaScript, images linked by the relative
path ``figures/<name>.png`` so the run directory can be zipped or copied and still open. Every
value read from the run directory goes through :func:`esc`, because rejected-file reasons,
config values and command lines are arbitrary text.

Kind-specific sections (per-class tables, curves, ...) live in their own modules
(``multilabel.py``); this module holds the title, headline, data summary, training curves,
additional figures and environment sections.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from medtasks.report import figures

if TYPE_CHECKING:
    from medtasks.report import RunData

SYNTHETIC_BANNER = "SYNTHETIC DATA — these figures are from generated phantoms, not patients"
PROTOCOL_BANNER = ("SOURCE REPORT'S PROTOCOL — this run reproduces the report's evaluation, flaws included "
                   "(see the warnings); its figures are not patient-grouped, held-out estimates")
MAX_REJECTED_ROWS = 50

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 1.5em 2em; color: #1d2329; line-height: 1.45; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 2px solid #d5dbe1; padding-bottom: .2em;
     margin-top: 1.8em; } h3 { margin-bottom: .3em; }
.meta { color: #57606a; margin-top: 0; }
.banner { background: #b3261e; color: #fff; font-weight: 700; font-size: 1.25em;
          padding: .8em 1em; border-radius: 6px; margin: 1em 0; letter-spacing: .02em; }
.warning { background: #fff4ce; border-left: 6px solid #d4a000; padding: .6em 1em;
           margin: 1em 0; border-radius: 4px; }
.warning ul { margin: .3em 0; }
.note { color: #57606a; font-style: italic; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .93em; }
th, td { border: 1px solid #d5dbe1; padding: .3em .65em; text-align: left; vertical-align: top; }
th { background: #f0f3f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.summary td { background: #f7f9fb; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto;
         border: 1px solid #e1e5ea; } figcaption { color: #57606a; font-size: .9em; }
.pair { display: flex; flex-wrap: wrap; gap: 1em; } .pair figure { flex: 1 1 460px; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
details { margin: .6em 0; } summary { cursor: pointer; font-weight: 600; }
"""


def esc(value: object) -> str:
    """HTML-escape ``str(value)``, quotes included (values also land in attributes)."""
    return html.escape(str(value), quote=True)


def fmt_num(value: object, digits: int = 4) -> str:
    """Format a number for a table: ints as ints, floats to ``digits`` decimals, None as n/a."""
    if value is None or isinstance(value, str) and value == "":
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "n/a"
    return f"{number:.{digits}f}"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    table_id: str | None = None,
    row_classes: Sequence[str] | None = None,
    numeric: Sequence[bool] | None = None,
) -> str:
    """Render a table; cells are converted with ``str`` and escaped.

    Args:
        headers: Column titles.
        rows: One sequence of cells per row (format numbers before passing them).
        table_id: Optional ``id`` attribute, used by tests and anchors.
        row_classes: Optional CSS class per row (``"summary"`` for aggregate rows).
        numeric: Per column, whether to right-align it.
    """
    numeric = list(numeric) if numeric is not None else [False] * len(headers)
    id_attr = f' id="{esc(table_id)}"' if table_id else ""
    out = [f"<table{id_attr}>", "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes is not None and row_classes[i] else ""
        out.append(f'<tr class="{esc(cls)}">' if cls else "<tr>")
        for j, cell in enumerate(row):
            td = '<td class="num">' if j < len(numeric) and numeric[j] else "<td>"
            out.append(f"{td}{esc(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def fmt_ci(entry: object) -> str:
    """A bootstrap result ``{"value", "ci_low", "ci_high"}`` as ``value [low, high]`` (a bare number as itself)."""
    if not isinstance(entry, dict) or entry.get("value") is None:
        return fmt_num(entry) if isinstance(entry, (int, float)) else "n/a"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    return fmt_num(entry["value"]) + ("" if low is None or high is None else f" [{fmt_num(low)}, {fmt_num(high)}]")


def classification_report_table(rep: dict, table_id: str) -> str:
    """sklearn's ``classification_report(output_dict=True)`` as a table (classes, averages, accuracy)."""
    rows = [[k, fmt_num(v.get("precision")), fmt_num(v.get("recall")), fmt_num(v.get("f1-score")),
             fmt_num(v.get("support"))] for k, v in rep.items() if isinstance(v, dict)]
    rows.append(["accuracy", "", "", fmt_num(rep.get("accuracy")), ""])
    return table(["Class", "Precision", "Recall", "F1", "Support"], rows, table_id=table_id,
                 numeric=[False, True, True, True, True])


def section(section_id: str, title: str, *body: str) -> str:
    """Wrap body fragments (already HTML) in a ``<section>`` with an ``<h2>`` title."""
    return f'<section id="{esc(section_id)}">\n<h2>{esc(title)}</h2>\n' + "\n".join(body) + "\n</section>"


def note(text: str) -> str:
    """A muted paragraph, used for "not available" and skipped-item explanations."""
    return f'<p class="note">{esc(text)}</p>'


def figure(name: str, caption: str, alt: str | None = None) -> str:
    """A figure linking ``figures/<name>`` relatively, so the run directory stays relocatable."""
    return (
        f'<figure><img src="figures/{esc(name)}" alt="{esc(alt or caption)}" loading="eager">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def details(summary: str, body_html: str) -> str:
    """A collapsible block; ``body_html`` is already HTML."""
    return f"<details><summary>{esc(summary)}</summary>\n{body_html}\n</details>"


def page(title: str, body: Sequence[str]) -> str:
    """Assemble the full HTML document."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- shared sections


def title_block(run: RunData) -> str:
    """Title, run identity, a failed run's banner (status.json), the synthetic-data banner and any warnings from
    metrics.json."""
    m = run.metrics
    meta = [f"kind: {run.kind}", f"evaluated split: {m.get('split', 'n/a')}"]
    if m.get("config_hash"):
        meta.append(f"config hash: {m['config_hash']}")
    parts = [
        "<header>",
        f"<h1>{esc(run.task)} — run {esc(run.run_id)}</h1>",
        f'<p class="meta">{esc(" · ".join(meta))}</p>',
        "</header>",
    ]
    if (run.status or {}).get("status") == "failed":
        parts.append(f'<div class="warning" id="failed-banner"><strong>This run failed</strong> after writing its '
                     f'metrics: {esc(run.status.get("error") or "no error recorded")} (traceback in run.log). The '
                     'sections below show what it wrote.</div>')
    if run.synthetic:
        parts.append(f'<div class="banner" id="synthetic-banner">{esc(SYNTHETIC_BANNER)}</div>')
    if m.get("protocol") == "report":
        parts.append(f'<div class="banner" id="protocol-banner">{esc(PROTOCOL_BANNER)}</div>')
    warnings = m.get("warnings") or []
    if isinstance(warnings, str):
        warnings = [warnings]
    if warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
        parts.append(f'<div class="warning" id="warnings"><strong>Warnings</strong><ul>{items}</ul></div>')
    return "\n".join(parts)


def headline_section(run: RunData) -> str:
    """Headline metrics with their patient-level bootstrap 95% CIs."""
    headline = run.metrics.get("headline") or {}
    if not headline:
        return section("headline", "Headline metrics", note("metrics.json has no headline metrics."))
    rows = []
    for name, entry in headline.items():
        entry = entry if isinstance(entry, dict) else {"value": entry}
        low, high = entry.get("ci_low"), entry.get("ci_high")
        if low is None or high is None:
            ci = f"n/a ({entry.get('reason', 'not computed')})"
        else:
            ci = f"[{fmt_num(low)}, {fmt_num(high)}]"
        rows.append(
            [
                name,
                fmt_num(entry.get("value")),
                ci,
                fmt_num(entry.get("n_groups", run.metrics.get("n_patients"))),
                fmt_num(entry.get("n_boot")),
                entry.get("method", ""),
            ]
        )
    headers = ["Metric", "Value", "95% CI", "Patients", "Bootstrap samples", "Method"]
    return section(
        "headline",
        "Headline metrics",
        table(headers, rows, table_id="headline-table", numeric=[False, True, False, True, True, False]),
    )


def data_section(run: RunData) -> str:
    """Rows and patients per split from manifest.csv; rejected inputs from rejected.csv."""
    body: list[str] = ["<h3>Manifest</h3>"]
    manifest = run.manifest
    if manifest is None:
        body.append(note("manifest.csv not available."))
    elif "split" not in manifest.columns:
        body.append(note(f"manifest.csv has {len(manifest)} rows but no 'split' column."))
    else:
        rows = []
        for split, group in manifest.groupby("split", sort=True, dropna=False):
            patients = group["patient_id"].nunique() if "patient_id" in group.columns else None
            rows.append([split, len(group), fmt_num(patients)])
        total_patients = manifest["patient_id"].nunique() if "patient_id" in manifest.columns else None
        rows.append(["total", len(manifest), fmt_num(total_patients)])
        classes = [""] * (len(rows) - 1) + ["summary"]
        body.append(
            table(["Split", "Rows", "Patients"], rows, table_id="split-table",
                  row_classes=classes, numeric=[False, True, True])
        )

    body.append("<h3>Rejected inputs</h3>")
    rejected = run.rejected
    if rejected is None:
        body.append(note("rejected.csv not available."))
    elif rejected.empty:
        body.append('<p id="rejected-count">0 inputs were rejected.</p>')
    else:
        body.append(f'<p id="rejected-count">{len(rejected)} inputs were rejected.</p>')
        if "reason" in rejected.columns:
            counts = rejected["reason"].fillna("(none)").value_counts()
            body.append(table(["Reason", "Count"], [[r, int(c)] for r, c in counts.items()],
                              table_id="rejected-reasons", numeric=[False, True]))
        cols = [c for c in ("path", "reason", "detail") if c in rejected.columns]
        head = rejected.head(MAX_REJECTED_ROWS)[cols].fillna("")
        if len(rejected) > MAX_REJECTED_ROWS:
            body.append(note(f"Showing the first {MAX_REJECTED_ROWS} of {len(rejected)} rejected rows."))
        body.append(table(cols, head.itertuples(index=False, name=None), table_id="rejected-table"))
    return section("data", "Data summary", *body)


def history_section(run: RunData, fig_dir: Path) -> str:
    """Loss and validation-metric curves per epoch, with the best epoch marked."""
    title = "Training curves"
    history = run.history
    if history is None or history.empty:
        return section("history", title, note("history.csv not available."))
    best = run.metrics.get("best_epoch")
    written = figures.plot_loss_curves(history, best, fig_dir / "loss_curves.png")
    if written is None:
        return section("history", title, note("history.csv has no loss, metric or lr columns to plot."))
    caption = "Left: training and validation loss per epoch. Right: validation metrics; lr on a log axis."
    if best is not None:
        caption += f" Dashed line: best epoch ({best})."
    return section("history", title, figure(written.name, caption, alt="Loss curves"))


def extra_figures_section(fig_dir: Path) -> str | None:
    """Show task-provided ``figures/extra_*.png`` (Grad-CAM, overlays, ...) with their file names."""
    extras = sorted(p for p in fig_dir.glob("extra_*.png") if p.is_file())
    if not extras:
        return None
    return section("extra-figures", "Additional figures", *(figure(p.name, p.name) for p in extras))


def environment_section(run: RunData) -> str:
    """env.json as a table plus package versions, and the resolved config verbatim."""
    body: list[str] = []
    env = run.env
    if env is None:
        body.append(note("env.json not available."))
    else:
        scalar = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in env.items() if k != "packages"]
        body.append(table(["Key", "Value"], scalar, table_id="env-table"))
        packages = env.get("packages") or {}
        if packages:
            body.append(details(f"Package versions ({len(packages)})",
                                table(["Package", "Version"], sorted(packages.items()))))
    if run.config_text is None:
        body.append(note("config.resolved.yaml not available."))
    else:
        body.append(details("Resolved config (config.resolved.yaml)", f"<pre>{esc(run.config_text)}</pre>"))
    return section("environment", "Environment and configuration", *body)
