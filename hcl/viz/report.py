"""One self-contained HTML report comparing training runs (the demo's ``report.html``)."""

from __future__ import annotations

import datetime
import html
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hcl import rundir
from hcl.atomic import write_text_atomic
from hcl.losses.registry import loss_display_name
from hcl.viz.figures import (
    distance_vs_tree_distance,
    per_level_metric_bars,
    scatter_levels_grid,
    to_html,
    training_curves,
)
from hcl.viz.projection import project_2d

__all__ = ["html_page", "html_section", "write_report"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px 40px;
       color: #222; max-width: 1500px; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 20px; margin-top: 36px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.meta { color: #666; font-size: 13px; } p.note { color: #8a5a00; }
table.metrics { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
table.metrics th, table.metrics td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
table.metrics th { background: #f5f5f5; } table.metrics td.name { text-align: left; }
table.metrics td.best { font-weight: bold; }
"""


def write_report(
    runs: Mapping[str, str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    title: str = "hcl report",
    max_points: int = 3000,
    method: str = "umap",
    seed: int = 0,
) -> Path:
    """Write ONE self-contained ``report.html`` comparing training runs.

    The page holds: a per-level metrics table (from each run's ``results.json``, else its last
    ``"eval"`` record) and bars comparing the runs; the training curves of all runs; for each
    run, a 2-D projection of its test embeddings coloured by each level, and its embedding
    distance against tree distance (the projection is cached in the run directory, see
    :func:`hcl.viz.project_2d`). ``recall@1`` is left out where ``precision@1`` is shown: the
    two are the same number. plotly.js is inlined once; nothing is fetched from a CDN, so
    the file opens offline. A run lacking a part (no log yet, no embeddings) gets a note instead.

    Args:
        runs: ``{name: run directory}``, e.g. ``{"himulcone": "runs/demo/himulcone",
            "supcon": "runs/demo/supcon"}``. A name that is a config loss name is shown as the
            loss's proper name (``"HiMulConE"``, ``"SupCon"``; see
            :func:`hcl.losses.loss_display_name`), any other name as given.
        out_path: the HTML file to write (atomically; parent folders are created).
        title: the page title.
        max_points: the projection uses a seeded random subset of at most this many test
            embeddings (UMAP on all of a large test set takes minutes).
        method: ``"umap"``, ``"tsne"`` or ``"pca"``.
        seed: subset and projection seed.

    Returns:
        The path written.

    Raises:
        ValueError: ``runs`` is empty, or two names would be shown alike (``"supcon"`` and
            ``"SupCon"``). FileNotFoundError: a run directory does not exist.
    """
    if not runs:
        raise ValueError("runs is empty: give at least one {name: run directory}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    run_dirs: dict[str, Path] = {}
    given: dict[str, str] = {}
    for name, path in runs.items():
        shown = loss_display_name(str(name))
        if shown in run_dirs:
            raise ValueError(f"runs {given[shown]!r} and {str(name)!r} would both be shown as {shown!r}")
        run_dirs[shown], given[shown] = Path(path), str(name)
    for name, path in run_dirs.items():
        if not path.is_dir():
            raise FileNotFoundError(f"run {name!r}: {path} is not a directory")

    summaries = {name: _final_metrics(path) for name, path in run_dirs.items()}
    sections = [_metrics_section(summaries)]

    logged = {}
    for name, path in run_dirs.items():
        if (path / rundir.METRICS_FILE).is_file():
            logged[name] = rundir.read_metrics_log(path)
    notes = [f"{name}: no {rundir.METRICS_FILE}" for name in run_dirs if name not in logged]
    body = ""
    if logged:
        names = next((s["levels"] for s in summaries.values() if s["levels"]), None)
        body = to_html(training_curves(logged, level_names=names), include_plotlyjs=False, full_html=False)
    sections.append(html_section("Training curves", body, notes))

    for name, path in run_dirs.items():
        sections.append(_embedding_section(name, path, max_points, method, seed))

    run_list = ", ".join(f"<b>{html.escape(n)}</b> (<code>{html.escape(str(p))}</code>)" for n, p in run_dirs.items())
    return write_text_atomic(out_path, html_page(title, f"runs: {run_list}", sections))


def html_page(title: str, meta_html: str, sections: list[str], *, style: str = "") -> str:
    """One self-contained HTML page: the report's style (plus ``style``, CSS), plotly.js inlined
    once, a heading, a line of ``meta_html`` (HTML, followed by the time generated) and the
    ``sections`` (HTML)."""
    from plotly.offline import get_plotlyjs

    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}{style}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='meta'>{meta_html}; generated {generated}</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


def _final_metrics(run_dir: Path) -> dict[str, Any]:
    """``{"levels", "retrieval": {level name: {metric: v}}, "cpcc", "knn_accuracy", "source"}``."""
    results = rundir.read_results(run_dir)
    source = rundir.RESULTS_FILE + (f" (embedding: {results['embedding']})" if "embedding" in results else "")
    if "retrieval" not in results and (run_dir / rundir.METRICS_FILE).is_file():
        evals = [r for r in rundir.read_metrics_log(run_dir) if r.get("kind") == "eval" and "retrieval" in r]
        results = evals[-1] if evals else {}
        source = f"last eval record (epoch {results.get('epoch')})" if evals else ""
    levels = results.get("levels")
    if levels is None and (run_dir / rundir.HIERARCHY_FILE).is_file():
        levels = rundir.read_hierarchy(run_dir).level_names

    def by_name(per_level: Mapping[str, Any]) -> dict[str, Any]:
        return {
            (levels[int(k)] if levels and str(k).isdigit() and int(k) < len(levels) else str(k)): v
            for k, v in per_level.items()
        }

    return {
        "levels": list(levels) if levels else None,
        "retrieval": by_name(results.get("retrieval", {})),
        "cpcc": results.get("cpcc"),
        "knn_accuracy": by_name(results.get("knn_accuracy", {})),
        "source": source if results else "",
    }


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _metrics_section(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    names = list(summaries)
    with_metrics = [n for n in names if summaries[n]["retrieval"]]
    notes = [f"{n}: no {rundir.RESULTS_FILE} and no eval record" for n in names if n not in with_metrics]
    if not with_metrics:
        return html_section("Per-level metrics", "", notes)
    rows: list[tuple[str, str, list[Any]]] = []
    levels: list[str] = []
    for n in with_metrics:
        levels += [lv for lv in summaries[n]["retrieval"] if lv not in levels]
    metrics: list[str] = []
    for n in with_metrics:
        for lv in levels:
            metrics += [m for m in summaries[n]["retrieval"].get(lv, {}) if m not in metrics and m != "num_queries"]
    # recall@1 (a relevant item among the first one) is precision@1 by definition: show it once.
    metrics = [m for m in metrics if not (m == "recall@1" and "precision@1" in metrics)]
    for lv in levels:
        for m in metrics:
            rows.append((lv, m, [summaries[n]["retrieval"].get(lv, {}).get(m) for n in with_metrics]))
        if any(summaries[n]["knn_accuracy"] for n in with_metrics):
            rows.append((lv, "knn accuracy", [summaries[n]["knn_accuracy"].get(lv) for n in with_metrics]))
    rows.append(("(all levels)", "CPCC", [summaries[n]["cpcc"] for n in with_metrics]))
    header = "<tr><th>level</th><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in with_metrics) + "</tr>"
    body = []
    for lv, m, values in rows:
        numeric = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
        # Bold the best run, unless every run ties.
        best = max(numeric) if len(numeric) > 1 and min(numeric) < max(numeric) else None
        cells = "".join(
            f"<td class='{'best' if best is not None and v == best else ''}'>{_fmt(v)}</td>" for v in values
        )
        body.append(f"<tr><td class='name'>{html.escape(lv)}</td><td class='name'>{html.escape(m)}</td>{cells}</tr>")
    sources = "; ".join(f"{html.escape(n)}: {html.escape(summaries[n]['source'])}" for n in with_metrics)
    best_note = "; best in bold" if len(with_metrics) > 1 else ""
    table = f"<table class='metrics'>{header}{''.join(body)}</table><p class='meta'>from {sources}{best_note}</p>"
    bars_metrics = [m for m in ("map@r", "precision@1") if m in metrics] or metrics[:1]
    bars = per_level_metric_bars(
        {n: summaries[n]["retrieval"] for n in with_metrics}, bars_metrics, title="per-level retrieval, by run"
    )
    return html_section("Per-level metrics", table + to_html(bars, include_plotlyjs=False, full_html=False), notes)


def _embedding_section(name: str, run_dir: Path, max_points: int, method: str, seed: int) -> str:
    heading = f"Embeddings: {name}"
    try:
        run = rundir.load_embeddings(run_dir, split=None)
    except FileNotFoundError as err:
        return html_section(heading, "", [str(err)])
    rows = np.arange(len(run.labels))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
    emb, labels = run.embeddings[rows], run.labels[rows]
    if len(rows) < 2:
        return html_section(heading, "", [f"only {len(rows)} embedding(s) in {run.split}; nothing to project"])
    coords = project_2d(emb, method, seed, run_dir=run_dir)
    grid = scatter_levels_grid(
        coords,
        labels,
        run.hierarchy,
        panel_width=min(440, 1400 // run.hierarchy.num_levels),  # the page is at most 1500 px wide
        title=f"{method.upper()} of {len(rows)} {run.split} embeddings ({name}), coloured by each level",
    )
    preservation = distance_vs_tree_distance(emb, labels, run.hierarchy, seed=seed)
    preservation.update_layout(height=420, title_text=f"{name}: {preservation.layout.title.text}")
    body = to_html(grid, include_plotlyjs=False, full_html=False) + to_html(
        preservation, include_plotlyjs=False, full_html=False
    )
    return html_section(heading, body, [])


def html_section(heading: str, body: str, notes: list[str]) -> str:
    """A report section: a heading, ``notes`` (plain text, shown as warnings) and ``body`` (HTML)."""
    note_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return f"<section><h2>{html.escape(heading)}</h2>{note_html}{body}</section>"
