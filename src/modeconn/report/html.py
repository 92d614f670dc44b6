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

from modeconn.defenses.repair.results import ENDPOINT_B, TAMPERED, slug
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
.warn { background: #fff8e1; border-left: 4px solid #d90; padding: .6em 1em; margin: .5em 0; }
tr.returned td { font-weight: bold; } td.text, th.text { text-align: left; }
details { margin: 1em 0; } details > summary { cursor: pointer; color: #555; }
code { background: #f3f3f3; padding: 0 .2em; }
"""

# Marks the body with how many figures actually decoded, so a headless browser test can check
# that the page renders with its figures.
ONLOAD = (
    "window.addEventListener('load',function(){var n=0;document.querySelectorAll('img')"
    ".forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});"
    "document.body.setAttribute('data-figures-rendered',n);});"
)

TAMPERED_SLUG = slug(TAMPERED)
#: The tampered models' scans come first in the repair's scan table.
REFERENCE_ORDER = {TAMPERED_SLUG: 0, slug(ENDPOINT_B): 1}

TABLES = (
    ("comparison.csv", "Comparison"),
    ("sweep.csv", "Bonafide-size sweep"),
    ("path.csv", "Metrics along the path"),
    ("table.csv", "Results"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
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


#: What a figure shows, in one sentence under its caption (figures not named here get none).
FIGURE_NOTES = {
    "depth.png": "The backdoor-connected path (Min et al. 2024): clean accuracy and ASR on the "
    "straight line in weight space from each model (t = 0) back to the tampered model (t = 1); "
    "a repair that only suppressed the backdoor stays in its basin and the ASR returns early on "
    "the line (backdoor_t, the first t with ASR above 50%, is small), a deep one keeps it low "
    "until close to the tampered end.",
}


def embedded_figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(path.stem.replace("_", " "))
    note = FIGURE_NOTES.get(path.name)
    text = caption if note is None else f"{caption}: {html.escape(note)}"
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
        f"<figcaption>{text}</figcaption></figure>"
    )


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f}%"


def verification_box(summary: dict[str, Any]) -> str:
    """The warning that opens a repair's verdict when the summary says the result could not be
    verified without the trigger (``verified`` false); empty otherwise."""
    if summary.get("verified") is not False:
        return ""
    text = html.escape(str(summary.get("warning", "")))
    return f'<div class="warn"><b>Not verified.</b> {text}</div>'


def measured_figures(summary: dict[str, Any]) -> list[str]:
    """The headline test-set figures in percent (never used to choose) and, when the attack's
    figure is absent, that it was not measured (when it was measured on the user's triggered
    images, on which)."""
    figures = (
        f"clean accuracy {_pct(summary.get('clean_acc'))} "
        f"(tampered {_pct(summary.get('tampered_clean_acc'))})"
    )
    key = next((k for k in ("asr", "injection_success") if k in summary), None)
    if key:
        label = "attack success" if key == "asr" else "injection success"
        figures += (
            f"; {label} {_pct(summary.get(key))} (tampered {_pct(summary.get('tampered_' + key))})"
        )
    if "retuning_asr" in summary:
        figures += f"; after the retuning attack {_pct(summary['retuning_asr'])}"
    items = [f"<li><b>Measured on the test set</b> (never used to choose): {figures}</li>"]
    if key is None or "attack_note" in summary:  # not measured, or on the user's own images
        note = summary.get("attack_note", "ASR is not measured: the trigger is unknown")
        items.append(f"<li><b>Attack success</b>: {html.escape(str(note))}</li>")
    return items


def read_scans(run: Path) -> dict[str, dict[str, Any]]:
    """Every scan of a repair (``scans/SLUG/summary.json``) by slug, the tampered models first."""
    paths = sorted(
        (run / "scans").glob("*/summary.json"),
        key=lambda p: (REFERENCE_ORDER.get(p.parent.name, len(REFERENCE_ORDER)), p.parent.name),
    )
    return {p.parent.name: _read_json(p) for p in paths}


def repair_verdict(run: Path, summary: dict[str, Any]) -> str:
    """The repair page's lead: whether the result could be verified (a warning first when not),
    the scan's verdict on the tampered and the returned model, the returned candidate and why,
    and the headline figures in percent."""
    scans = read_scans(run)
    chosen = str(summary.get("method", ""))
    chosen_slug = slug(chosen)
    items = []
    if summary.get("verified") is True:
        items.append(
            "<li><b>Verified without the trigger</b>: the scan found a backdoor in the tampered "
            "model(s) and finds none in the returned one</li>"
        )
    if TAMPERED_SLUG in scans:
        verdict = html.escape(scans[TAMPERED_SLUG]["verdict"])
        items.append(f"<li><b>Tampered model</b>: {verdict}</li>")
    if chosen_slug in scans:
        items.append(
            f"<li><b>Returned model ({html.escape(chosen)})</b>: "
            f"{html.escape(scans[chosen_slug]['verdict'])}</li>"
        )
    items.append(
        f"<li><b>Why this model</b>: {html.escape(str(summary.get('choice_rule', '')))}</li>"
    )
    items += measured_figures(summary)
    return (
        "<h2>Verdict</h2>"
        + verification_box(summary)
        + '<div class="why"><ul>'
        + "".join(items)
        + "</ul></div>"
    )


#: The comparison's columns a reader is shown, with their names; accuracies and attack figures
#: in percent, scan indices as numbers, the scan's flag as words.
COMPARISON_COLUMNS = (
    ("clean_acc", "Clean accuracy"),
    ("bonafide_holdout_acc", "Held-out bonafide accuracy"),
    ("asr", "ASR"),
    ("injection_success", "Injection success"),
    ("eot_asr", "Adaptive (EOT) ASR"),
    ("retuning_asr", "ASR after retuning"),
    ("max_anomaly_index", "Largest anomaly index"),
    ("untargeted_index", "Untargeted index"),
    ("backdoor_t", "Backdoor returns at t"),
    ("flagged", "Scan"),
)
#: The retuning attack's further strengths in ``comparison.csv``: ``retuning_asr@N``.
RETUNING_SWEEP = "retuning_asr@"
PERCENT_COLUMNS = {
    "clean_acc",
    "bonafide_holdout_acc",
    "asr",
    "injection_success",
    "eot_asr",
    "retuning_asr",
}


def _cell(column: str, text: str) -> str:
    """One comparison cell as a reader reads it."""
    if text == "":
        return "—"
    if column in PERCENT_COLUMNS or column.startswith(RETUNING_SWEEP):
        return _pct(text)
    if column == "flagged":
        return "flags a backdoor" if float(text) else "passes"
    return f"{float(text):.2f}"


def comparison_table(path: Path, returned: str) -> str:
    """The candidates and baselines, one row per model from ``comparison.csv``, with readable
    column names and percentages; the returned model's row in bold."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = []
    for key, name in COMPARISON_COLUMNS:
        columns.append((key, name))
        if key == "retuning_asr":
            sweep = [k for k in rows[0] if k.startswith(RETUNING_SWEEP)] if rows else []
            columns += [
                (k, f"ASR after retuning, {k[len(RETUNING_SWEEP) :]} poisoned") for k in sweep
            ]
    columns = [(k, name) for k, name in columns if any(r.get(k) for r in rows)]
    head = (
        "<th>Model</th>"
        + "".join(f"<th>{name}</th>" for _, name in columns)
        + "<th class='text'>Detail</th>"
    )
    body = []
    for row in rows:
        model = row.get("model", "")
        mark = ' class="returned"' if model == returned else ""
        label = html.escape(model) + (" (returned)" if model == returned else "")
        cells = "".join(f"<td>{_cell(k, row.get(k) or '')}</td>" for k, _ in columns)
        detail = html.escape(row.get("detail") or "")
        body.append(f"<tr{mark}><td>{label}</td>{cells}<td class='text'>{detail}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def scans_table(run: Path) -> str:
    """Every scan of the repair: the model, its largest anomaly index, untargeted index and
    verdict."""
    rows = []
    for side, scan in read_scans(run).items():
        untargeted = scan.get("untargeted_index")
        rows.append(
            f"<tr><td>{html.escape(str(scan.get('model', side)))}</td>"
            f"<td>{_fmt_index(scan.get('max_anomaly_index'))}</td>"
            f"<td>{_fmt_index(untargeted)}</td>"
            f"<td class='text'>{html.escape(str(scan.get('verdict', '')))}</td></tr>"
        )
    head = (
        "<th>Model</th><th>Largest anomaly index</th><th>Untargeted index</th>"
        "<th class='text'>Verdict</th>"
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _fmt_index(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f}"


#: The repair's timed steps (``seconds_STEP`` keys) in words.
STEP_NAMES = {
    "scan": "Scan of the tampered model(s)",
    "unlearning": "NC-unlearning",
    "curve_and_path": "Curve training and path evaluation",
    "evaluation_and_eot": "Evaluation and adaptive (EOT) attack",
    "verification_scans": "Scans of the candidates",
    "retuning": "Retuning attacks",
    "depth": "Backdoor-connected paths",
    "references": "Evaluation of the tampered model(s)",
    "baselines": "Baselines",
    "sweep": "Bonafide-size sweep",
}


def timings_table(summary: dict[str, Any]) -> str:
    """The ``seconds_*`` keys as a table of steps, with the total."""
    steps = {
        k.removeprefix("seconds_"): float(v) for k, v in summary.items() if k.startswith("seconds_")
    }
    if not steps:
        return ""
    rows = [
        f"<tr><td>{html.escape(STEP_NAMES.get(step, step.replace('_', ' ')))}</td>"
        f"<td>{seconds:.1f}</td></tr>"
        for step, seconds in steps.items()
    ]
    rows.append(f"<tr><td><b>Total</b></td><td><b>{sum(steps.values()):.1f}</b></td></tr>")
    return (
        "<h3>Timings</h3><table><thead><tr><th>Step</th><th>Seconds</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _nested(config: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        config = config.get(key) if isinstance(config, dict) else None
    return config


def attack_text(attack: dict[str, Any] | None) -> str:
    """The attack spec a repair was evaluated with, in words."""
    if not attack:
        return "unknown (no trigger: ASR not measured)"
    if attack.get("type") == "poisoned-test":
        return f"triggered test images in {attack.get('path')}, target class {attack.get('target')}"
    words = [str(attack.get("type", "attack"))]
    if "trigger" in attack:
        words.append(f"{attack['trigger']} trigger")
    if "target" in attack and attack.get("label_mode") != "all-to-all":
        words.append(f"target class {attack['target']}")
    if "label_mode" in attack:
        words.append(str(attack["label_mode"]))
    return ", ".join(words)


def settings_table(config: dict[str, Any], summary: dict[str, Any]) -> str:
    """The repair's main settings in words (every option is under Set-up)."""
    holdout = _nested(config, "data", "holdout_fraction")
    settings = (
        ("Tampered model(s)", ", ".join(config.get("models", []))),
        ("Data set", _nested(config, "data", "dataset")),
        ("Bonafide images", summary.get("bonafide")),
        ("Held out to choose", None if holdout is None else _pct(holdout)),
        ("Method", _nested(config, "repair", "method")),
        ("Attack", attack_text(config.get("attack"))),
        ("Scan threshold", _nested(config, "repair", "scan", "threshold")),
        (
            "Classes unlearnt on request",
            ", ".join(str(k) for k in summary.get("classes_unlearnt_on_request", ())),
        ),
        ("Seed", _nested(config, "repair", "seed")),
        ("Device", config.get("device")),
    )
    rows = [
        f"<tr><td>{label}</td><td class='text'>{html.escape(str(value))}</td></tr>"
        for label, value in settings
        if value not in (None, "")
    ]
    return f"<h3>Settings</h3><table><tbody>{''.join(rows)}</tbody></table>"


def repair_tables(run: Path, summary: dict[str, Any], config: dict[str, Any]) -> str:
    """The repair's figures as grouped tables — candidates and baselines, scans, timings,
    settings — with every raw summary key folded away below them."""
    parts = ["<h2>Summary</h2>"]
    if (run / "comparison.csv").exists():
        returned = str(summary.get("method", ""))
        parts.append(
            "<h3>Candidates and baselines</h3>" + comparison_table(run / "comparison.csv", returned)
        )
    if (run / "scans").is_dir():
        parts.append("<h3>Scans</h3>" + scans_table(run))
    parts.append(timings_table(summary))
    parts.append(settings_table(config, summary))
    parts.append(
        "<details><summary>Every summary key (summary.json)</summary>"
        + dict_table(summary)
        + "</details>"
    )
    return "".join(parts)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def lead(run: Path, command: str, summary: dict[str, Any]) -> list[str]:
    """The verdict that opens the page (repair, reproduce, scan) and the repair's lead figure."""
    if command == "repair" and "method" in summary:
        parts = [repair_verdict(run, summary)]
        figure = run / "repair_candidates.png"
        return parts + ([embedded_figure(figure)] if figure.exists() else [])
    if command == "reproduce" and "holds" in summary:
        verdict = "The claim holds" if summary["holds"] else "The claim does not hold"
        return [
            f'<h2>Verdict</h2><div class="why"><b>{verdict}</b> '
            f"({html.escape(str(summary.get('seeds_holding', '')))} seeds): "
            f"{html.escape(str(summary.get('claim', '')))}</div>"
        ]
    if command == "scan" and "verdict" in summary:
        return [f'<h2>Verdict</h2><div class="why">{html.escape(summary["verdict"])}</div>']
    return []


def chosen_point(command: str, summary: dict[str, Any]) -> str:
    """The chosen t and why — for a repair only when the returned model is that point of the
    path (not when the choice returned another candidate)."""
    why = summary.get("t_rule") or summary.get("why")
    if "t" not in summary or not why:
        return ""
    if command == "repair" and summary.get("method") != summary.get("path_candidate"):
        return ""
    return (
        f'<h2>Chosen point</h2><div class="why"><b>t = {_fmt(summary["t"])}</b> — '
        f"{html.escape(why)}</div>"
    )


def setup_section(config: dict[str, Any], folded: bool) -> str:
    """Every option of the run (and the versions); folded away under a repair's settings."""
    shown = {k: v for k, v in config.items() if k != "versions"}
    table = dict_table(shown)
    if "versions" in config:
        versions = ", ".join(f"{k} {v}" for k, v in config["versions"].items())
        table += f"<p>{html.escape(versions)}</p>"
    if folded:
        table = f"<details><summary>Every option (config.json)</summary>{table}</details>"
    return "<h2>Set-up</h2>" + table


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
    repair = command == "repair" and "method" in summary
    parts = [f"<h1>{html.escape(title or f'modeconn {command}: {run.name}')}</h1>"]
    parts += lead(run, command, summary)
    parts.append(chosen_point(command, summary))
    parts.append(
        repair_tables(run, summary, config) if repair else "<h2>Summary</h2>" + dict_table(summary)
    )
    for name, heading in TABLES:
        if (run / name).exists() and not (repair and name == "comparison.csv"):
            parts.append(f"<h2>{heading}</h2>" + csv_table(run / name))
    figures = [p for p in sorted(run.glob("*.png")) if p.name != "repair_candidates.png"]
    if figures:
        parts.append("<h2>Figures</h2>" + "".join(embedded_figure(p) for p in figures))
    if config:
        parts.append(setup_section(config, folded=repair))
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
