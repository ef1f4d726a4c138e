"""``study.html``: one self-contained page of a study's tables and trade-off plots.

Written from ``study.json`` alone (so it can be redrawn at any time), with the page helpers of
:mod:`hcl.viz.report`: plotly.js inlined once, nothing fetched from a CDN.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hcl.atomic import write_text_atomic
from hcl.extras import requires_extra
from hcl.study.stats import ALL_LEVELS, cell_rows

__all__ = ["write_study_report"]

_METRIC_NAMES = {"map@r": "MAP@R", "precision@1": "precision@1", "knn_accuracy": "k-NN accuracy", "cpcc": "CPCC"}
_STYLE = """
table.metrics td.up { background: #e6f4ea; } table.metrics td.down { background: #fce8e6; }
table.metrics td .ci { color: #666; font-size: 12px; } table.metrics td .p { color: #666; font-size: 11px; }
table.metrics td .sig { color: #111; font-weight: bold; }
details { margin: 8px 0 24px; } summary { cursor: pointer; color: #444; }
"""


def write_study_report(study_json: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``study.html`` (default: next to ``study_json``) from a study's ``study.json``.

    The page holds, per protocol and embedding: a table of each variant's mean [95% CI] over
    seeds per level and metric; a table of each variant's paired difference from the baseline
    with its CI, paired t-test and Wilcoxon p-values (shaded where the CI excludes zero); and
    the trade-off plot (:func:`hcl.study.figures.tradeoff_figure`). A list of every cell with its
    status and timing closes it.

    Returns:
        The path written.
    """
    with requires_extra("hcl.study.write_study_report (study.html; hcl study --no-report skips it)"):
        from hcl.study.figures import tradeoff_figure
        from hcl.viz.figures import to_html
        from hcl.viz.report import html_page, html_section

    path = Path(study_json)
    document = json.loads(path.read_text())
    config = document["config"]
    variants, baseline, num_seeds = list(config["variants"]), config["baseline"], len(config["seeds"])
    rows = [row for cell in document["cells"] if cell["status"] == "ok" for row in cell_rows(cell)]
    sections = []
    notes = [f"cell {c['key']} failed: {c.get('error')}" for c in document["cells"] if c["status"] == "failed"]
    counts = document["counts"]
    if counts["pending"] or counts["interrupted"]:
        notes.append(f"{counts['pending'] + counts['interrupted']} cells have not finished; the tables cover the rest")
    sections.append(html_section("Status", "", notes) if notes else "")
    for protocol in config["protocols"]:
        for embedding in config["embeddings"]:

            def match(r: Mapping[str, Any], protocol: str = protocol, embedding: str = embedding) -> bool:
                return r["protocol"] == protocol and r["embedding"] == embedding

            summary = [s for s in document["summary"] if match(s)]
            heading = f"Protocol '{protocol}', {embedding} embedding"
            if not summary:
                sections.append(html_section(heading, "", ["no finished cell has this embedding"]))
                continue
            levels = _ordered(s["level"] for s in summary)
            finest, coarsest = [lv for lv in levels if lv != ALL_LEVELS][-1], levels[0]
            figure = tradeoff_figure(
                [r for r in rows if match(r)],
                summary,
                variants=variants,
                finest=finest,
                coarsest=coarsest,
                title=f"trade-off ({protocol}, {embedding}): one small point per run, means with 95% CIs",
            )
            paired = [p for p in document["paired"] if match(p)]
            body = (
                f"<h3>Mean [95% CI] over seeds</h3>{_summary_table(summary, variants)}"
                f"<h3>Difference from {html.escape(baseline)} on the same seeds</h3>{_paired_table(paired, variants)}"
                "<p class='meta'>mean difference [95% CI]; p<sub>t</sub>: paired t-test, p<sub>W</sub>: Wilcoxon "
                f"signed-rank (two-sided; with {num_seeds} seeds it cannot go below 2/2<sup>{num_seeds}</sup> = "
                f"{2 / 2**num_seeds:.4g}); p &lt; 0.05 in bold. Shaded where the CI excludes 0.</p>"
                + to_html(figure, include_plotlyjs=False, full_html=False)
            )
            absent = {
                c["cell"]["variant"]: c["absent"][embedding]
                for c in document["cells"]
                if c["cell"]["protocol"] == protocol and embedding in (c.get("absent") or {})
            }
            sections.append(html_section(heading, body, [f"{v}: {reason}" for v, reason in absent.items()]))
    sections.append(html_section("Cells", _cells_table(document["cells"]), []))
    env = document.get("environment", {})
    meta = (
        f"{counts['ok']} of {len(document['cells'])} cells finished; variants {', '.join(map(html.escape, variants))}"
        f" (baseline {html.escape(baseline)}); seeds {config['seeds']}; hcl {html.escape(str(env.get('hcl')))}"
        + (f" at <code>{html.escape(env['git_commit'][:12])}</code>" if env.get("git_commit") else "")
        + (" (with uncommitted changes)" if env.get("git_dirty") else "")
    )
    title = config.get("title") or f"hcl study: {Path(config['output_dir']).name}"
    out = Path(out_path) if out_path is not None else path.with_name("study.html")
    return write_text_atomic(out, html_page(title, meta, sections, style=_STYLE))


def _ordered(values: Any) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _metric_label(metric: str) -> str:
    prefix, _, name = metric.rpartition("/")
    return (prefix + " " if prefix else "") + _METRIC_NAMES.get(name, name)


def _num(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _p(value: Any) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}" if value >= 0.001 else f"{value:.0e}"
    return f"<span class='sig'>{text}</span>" if value < 0.05 else text


def _summary_table(summary: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> str:
    by_key = {(s["level"], s["metric"], s["variant"]): s for s in summary}
    shown = [v for v in variants if any(s["variant"] == v for s in summary)]
    header = "<tr><th>level</th><th>metric</th>" + "".join(f"<th>{html.escape(v)}</th>" for v in shown) + "</tr>"
    body = []
    for level, metric in _ordered((s["level"], s["metric"]) for s in summary):
        stats = [by_key.get((level, metric, v)) for v in shown]
        means = [s["mean"] for s in stats if s and s["mean"] is not None]
        best = max(means) if len(means) > 1 and min(means) < max(means) else None
        cells = "".join(
            "<td>–</td>"
            if s is None
            else f"<td>{_bold(_num(s['mean']), best is not None and s['mean'] == best)}"
            f" <span class='ci'>[{_num(s['ci_low'])}, {_num(s['ci_high'])}] n={s['n']}</span></td>"
            for s in stats
        )
        body.append(
            f"<tr><td class='name'>{html.escape(level)}</td>"
            f"<td class='name'>{html.escape(_metric_label(metric))}</td>{cells}</tr>"
        )
    return f"<table class='metrics'>{header}{''.join(body)}</table>"


def _paired_table(paired: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> str:
    shown = [v for v in variants if any(p["variant"] == v for p in paired)]
    if not shown:
        return "<p class='meta'>no other variant shares finished seeds with the baseline</p>"
    by_key = {(p["level"], p["metric"], p["variant"]): p for p in paired}
    header = "<tr><th>level</th><th>metric</th>" + "".join(f"<th>{html.escape(v)}</th>" for v in shown) + "</tr>"
    body = []
    for level, metric in _ordered((p["level"], p["metric"]) for p in paired):
        cells = []
        for variant in shown:
            p = by_key.get((level, metric, variant))
            if p is None:
                cells.append("<td>–</td>")
                continue
            low, high = p["ci_low"], p["ci_high"]
            shade = "up" if low is not None and low > 0 else "down" if high is not None and high < 0 else ""
            cells.append(
                f"<td class='{shade}'>{_num(p['mean_diff'], True)} <span class='ci'>[{_num(low, True)}, "
                f"{_num(high, True)}]</span><br><span class='p'>p<sub>t</sub> {_p(p['p_t'])} · "
                f"p<sub>W</sub> {_p(p['p_wilcoxon'])} · n={p['n']}</span></td>"
            )
        body.append(
            f"<tr><td class='name'>{html.escape(level)}</td>"
            f"<td class='name'>{html.escape(_metric_label(metric))}</td>{''.join(cells)}</tr>"
        )
    return f"<table class='metrics'>{header}{''.join(body)}</table>"


def _cells_table(cells: Sequence[Mapping[str, Any]]) -> str:
    header = "<tr><th>cell</th><th>status</th><th>train s</th><th>eval s</th><th>finished</th><th>note</th></tr>"
    body = []
    for cell in cells:
        timing = cell.get("timing") or {}
        note = cell.get("error") or "; ".join(f"no {k}: {v}" for k, v in (cell.get("absent") or {}).items())
        body.append(
            f"<tr><td class='name'><code>{html.escape(cell['key'])}</code></td><td class='name'>{cell['status']}</td>"
            f"<td>{_seconds(timing.get('train_s'))}</td><td>{_seconds(timing.get('eval_s'))}</td>"
            f"<td class='name'>{html.escape(str(cell.get('finished', '')))}</td>"
            f"<td class='name'>{html.escape(note)}</td></tr>"
        )
    return (
        f"<details><summary>{len(cells)} cells (run directories under <code>cells/</code>)</summary>"
        f"<table class='metrics'>{header}{''.join(body)}</table></details>"
    )


def _bold(text: str, bold: bool) -> str:
    return f"<b>{text}</b>" if bold else text


def _seconds(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"
