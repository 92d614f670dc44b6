"""One self-contained HTML page for a run directory: set-up, tables, figures, the chosen t and why.

Everything the page shows comes from files the run wrote (``config.json``, ``summary.json``,
``comparison.csv``, ``path.csv``, ``sweep.csv``, ``*.png``); figures are embedded as base64 data
URIs so the page can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

from modeconn.defenses.repair.results import slug
from modeconn.errors import MissingInput, ModeconnError
from modeconn.io import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: .5em; } figure img { max-width: 520px; }
figcaption { text-align: center; font-size: .85em; color: #555; }
.why { background: #f6f8fa; border-left: 4px solid #4a7; padding: .6em 1em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""

# Marks the body with how many figures actually decoded, so a headless browser test can check
# that the page renders with its figures.
ONLOAD = (
    "window.addEventListener('load',function(){var n=0;document.querySelectorAll('img')"
    ".forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});"
    "document.body.setAttribute('data-figures-rendered',n);});"
)

TABLES = (
    ("comparison.csv", "Comparison"),
    ("sweep.csv", "Bonafide-size sweep"),
    ("path.csv", "Metrics along the path"),
    ("table.csv", "Results"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if number.is_integer() and "." not in str(value):
        return str(int(number))
    return f"{number:.4f}"


def csv_table(path: Path) -> str:
    """An HTML table from a CSV file."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "<p>(empty)</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def dict_table(data: dict[str, Any]) -> str:
    """A two-column key/value table (nested values as compact JSON)."""
    rows = []
    for key, value in data.items():
        text = json.dumps(value) if isinstance(value, dict | list) else _fmt(value)
        rows.append(f"<tr><td>{html.escape(str(key))}</td><td>{text}</td></tr>")
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def embedded_figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(path.stem.replace("_", " "))
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f}%"


def repair_verdict(run: Path, summary: dict[str, Any]) -> str:
    """The repair page's lead: the scan's verdict on the tampered and the returned model, the
    returned candidate and why, and the headline figures in percent."""
    scans = {}
    for side in sorted((run / "scans").glob("*/summary.json")):
        scans[side.parent.name] = _read_json(side)
    chosen = str(summary.get("method", ""))
    chosen_slug = slug(chosen)
    items = []
    if "tampered" in scans:
        items.append(f"<li><b>Tampered model</b>: {html.escape(scans['tampered']['verdict'])}</li>")
    if chosen_slug in scans:
        items.append(
            f"<li><b>Returned model ({html.escape(chosen)})</b>: "
            f"{html.escape(scans[chosen_slug]['verdict'])}</li>"
        )
    items.append(
        f"<li><b>Why this model</b>: {html.escape(str(summary.get('choice_rule', '')))}</li>"
    )
    key = (
        "asr"
        if "asr" in summary
        else ("injection_success" if "injection_success" in summary else None)
    )
    figures = (
        f"clean accuracy {_pct(summary.get('clean_acc'))} "
        f"(tampered {_pct(summary.get('tampered_clean_acc'))})"
    )
    if key:
        label = "attack success" if key == "asr" else "injection success"
        figures += (
            f"; {label} {_pct(summary.get(key))} (tampered {_pct(summary.get('tampered_' + key))})"
        )
    if "retuning_asr" in summary:
        figures += f"; after the retuning attack {_pct(summary['retuning_asr'])}"
    items.append(f"<li><b>Measured on the test set</b> (never used to choose): {figures}</li>")
    return '<h2>Verdict</h2><div class="why"><ul>' + "".join(items) + "</ul></div>"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def render_report(run_dir: str | Path, title: str | None = None) -> str:
    """The report page of ``run_dir`` as an HTML string."""
    run = Path(run_dir)
    if not run.is_dir():
        raise MissingInput(f"run directory not found: {run}", run)
    summary = _read_json(run / "summary.json")
    config = _read_json(run / "config.json")
    if not summary:
        raise ModeconnError(f"{run} has no summary.json: the run has not finished")
    command = config.get("command", "run")
    parts = [f"<h1>{html.escape(title or f'modeconn {command}: {run.name}')}</h1>"]
    if command == "repair" and "method" in summary:
        parts.append(repair_verdict(run, summary))
        lead = run / "repair_candidates.png"
        if lead.exists():
            parts.append(embedded_figure(lead))
    elif command == "reproduce" and "holds" in summary:
        verdict = "The claim holds" if summary["holds"] else "The claim does not hold"
        parts.append(
            f'<h2>Verdict</h2><div class="why"><b>{verdict}</b> '
            f"({html.escape(str(summary.get('seeds_holding', '')))} seeds): "
            f"{html.escape(str(summary.get('claim', '')))}</div>"
        )
    elif command == "scan" and "verdict" in summary:
        parts.append(f'<h2>Verdict</h2><div class="why">{html.escape(summary["verdict"])}</div>')
    why = summary.get("t_rule") or summary.get("why")
    if "t" in summary and why:
        parts.append("<h2>Chosen point</h2>")
        parts.append(f'<div class="why"><b>t = {_fmt(summary["t"])}</b> — {html.escape(why)}</div>')
    parts.append("<h2>Summary</h2>" + dict_table(summary))
    for name, heading in TABLES:
        if (run / name).exists():
            parts.append(f"<h2>{heading}</h2>" + csv_table(run / name))
    figures = [p for p in sorted(run.glob("*.png")) if p.name != "repair_candidates.png"]
    if figures:
        parts.append("<h2>Figures</h2>" + "".join(embedded_figure(p) for p in figures))
    if config:
        shown = {k: v for k, v in config.items() if k != "versions"}
        parts.append("<h2>Set-up</h2>" + dict_table(shown))
        if "versions" in config:
            parts.append(
                "<p>"
                + html.escape(", ".join(f"{k} {v}" for k, v in config["versions"].items()))
                + "</p>"
            )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title or 'modeconn report')}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}<script>{ONLOAD}</script></body></html>\n"
    )


def write_report(
    run_dir: str | Path, out: str | Path | None = None, title: str | None = None
) -> Path:
    """Write ``report.html`` (or ``out``) for ``run_dir``; returns its path."""
    page = render_report(run_dir, title)
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(target, page)
    return target
