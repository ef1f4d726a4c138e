"""The study's figures: the trade-off (finest-level MAP@R against CPCC and against coarsest-level
MAP@R) and the paired differences from the baseline with their confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from hcl.study.stats import verdict

__all__ = ["paired_difference_figure", "tradeoff_figure", "variant_colors"]

# A paired difference's marker by its reading (hcl.study.verdict): filled where the CI excludes 0.
_READINGS = {
    "helps": ("#2ca02c", "diamond", "CI above 0"),
    "hurts": ("#d62728", "diamond", "CI below 0"),
    "no detectable difference": ("#7f7f7f", "circle-open", "CI includes 0"),
    "too few seeds": ("#bbbbbb", "x-thin-open", "no CI (one seed)"),
}


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    """One colour per variant, in order (the same in every figure of a report)."""
    palette = qualitative.D3 + qualitative.Dark24
    return {name: palette[i % len(palette)] for i, name in enumerate(variants)}


def tradeoff_figure(
    rows: Sequence[Mapping[str, Any]],
    summary: Sequence[Mapping[str, Any]],
    *,
    variants: Sequence[str],
    finest: str,
    coarsest: str,
    title: str = "",
) -> go.Figure:
    """Finest-level MAP@R (y) against CPCC (left) and against coarsest-level MAP@R (right).

    One small point per run (a seed), one colour per variant, and each variant's mean over seeds
    as a large marker with its 95% t-interval as error bars on both axes.

    Args:
        rows: per-cell metric rows of ONE protocol and embedding (:func:`hcl.study.cell_rows`).
        summary: the matching summary rows (:func:`hcl.study.aggregate`).
        variants: every variant of the study, in legend order (it fixes the colours; a variant
            without rows here is left out).
        finest, coarsest: the names of the finest and coarsest levels.
        title: the figure title.
    """
    axes = {"y": (finest, "map@r"), "cpcc": ("(all)", "cpcc"), "coarse": (coarsest, "map@r")}
    points: dict[tuple[str, int], dict[str, float]] = {}
    for row in rows:
        for axis, (level, metric) in axes.items():
            if row["level"] == level and row["metric"] == metric:
                points.setdefault((row["variant"], int(row["seed"])), {})[axis] = row["value"]
    means = {
        (s["variant"], axis): s
        for s in summary
        for axis, (level, metric) in axes.items()
        if s["level"] == level and s["metric"] == metric
    }
    colors = variant_colors(variants)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1)
    extent: dict[str, list[float]] = {axis: [] for axis in axes}
    for variant in variants:
        color = colors[variant]
        runs = {seed: p for (v, seed), p in points.items() if v == variant and "y" in p}
        for col, axis in ((1, "cpcc"), (2, "coarse")):
            seeds = [s for s in sorted(runs) if axis in runs[s]]
            extent[axis] += [runs[s][axis] for s in seeds]
            extent["y"] += [runs[s]["y"] for s in seeds]
            fig.add_trace(
                go.Scatter(
                    x=[runs[s][axis] for s in seeds],
                    y=[runs[s]["y"] for s in seeds],
                    mode="markers",
                    marker={"color": color, "size": 7, "opacity": 0.45},
                    name=variant,
                    legendgroup=variant,
                    showlegend=False,
                    text=[f"{variant}, seed {s}" for s in seeds],
                    hovertemplate="%{text}<br>x %{x:.4f}<br>y %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            mx, my = means.get((variant, axis)), means.get((variant, "y"))
            if mx is None or my is None:
                continue
            extent[axis] += [v for v in (mx["ci_low"], mx["ci_high"]) if _finite(v)]
            extent["y"] += [v for v in (my["ci_low"], my["ci_high"]) if _finite(v)]
            fig.add_trace(
                go.Scatter(
                    x=[mx["mean"]],
                    y=[my["mean"]],
                    mode="markers",
                    name=variant,
                    legendgroup=variant,
                    showlegend=col == 1,
                    marker={"color": color, "size": 13, "symbol": "diamond", "line": {"color": "#222", "width": 1}},
                    error_x=_error_bar(mx, color),
                    error_y=_error_bar(my, color),
                    hovertemplate=f"{variant}: mean of {my['n']} runs<br>x %{{x:.4f}}<br>y %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="CPCC", range=_range(extent["cpcc"], -1.0), row=1, col=1)
    fig.update_xaxes(
        title_text=f"MAP@R, {coarsest} (coarsest level)", range=_range(extent["coarse"], 0.0), row=1, col=2
    )
    fig.update_yaxes(title_text=f"MAP@R, {finest} (finest level)", range=_range(extent["y"], 0.0), row=1, col=1)
    fig.update_yaxes(range=_range(extent["y"], 0.0), row=1, col=2)
    fig.update_layout(
        title=title or None,
        template="plotly_white",
        height=430,
        legend={"orientation": "h", "y": -0.18},
        margin={"t": 50 if title else 20},
    )
    return fig


def paired_difference_figure(
    paired: Sequence[Mapping[str, Any]],
    *,
    variants: Sequence[str],
    metrics: Sequence[tuple[str, str, str]],
    title: str = "",
) -> go.Figure:
    """Each variant's mean paired difference from the baseline with its 95% t-interval (a forest
    plot), one panel per metric, a line at 0.

    A difference whose interval lies above 0 is a filled green diamond, below 0 a filled red one,
    one whose interval holds 0 an open grey circle (the reading of :func:`hcl.study.verdict`).

    Args:
        paired: paired rows of ONE protocol and embedding (:func:`hcl.study.aggregate`).
        variants: the variants, top to bottom (the baseline and variants without rows are left out).
        metrics: ``(level, metric, label)`` of each panel, e.g. :func:`hcl.study.headline_metrics`.
        title: the figure title.

    Raises:
        ValueError: no metric asked for.
    """
    if not metrics:
        raise ValueError("paired_difference_figure needs at least one (level, metric, label)")
    by_key = {(p["variant"], p["level"], p["metric"]): p for p in paired}
    shown = [v for v in variants if any((v, level, metric) in by_key for level, metric, _ in metrics)]
    fig = make_subplots(
        rows=1,
        cols=len(metrics),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[label for _, _, label in metrics],
    )
    legend: set[str] = set()
    for col, (level, metric, label) in enumerate(metrics, start=1):
        rows = [by_key[v, level, metric] for v in shown if (v, level, metric) in by_key]
        for reading, (color, symbol, meaning) in _READINGS.items():
            group = [r for r in rows if verdict(r["ci_low"], r["ci_high"]) == reading]
            if not group:
                continue
            low = [r["mean_diff"] - r["ci_low"] if _finite(r["ci_low"]) else 0.0 for r in group]
            high = [r["ci_high"] - r["mean_diff"] if _finite(r["ci_high"]) else 0.0 for r in group]
            fig.add_trace(
                go.Scatter(
                    x=[r["mean_diff"] for r in group],
                    y=[r["variant"] for r in group],
                    mode="markers",
                    name=f"{reading} ({meaning})",
                    legendgroup=reading,
                    showlegend=reading not in legend,
                    marker={"color": color, "symbol": symbol, "size": 11, "line": {"color": color, "width": 2}},
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": high,
                        "arrayminus": low,
                        "color": color,
                        "thickness": 1.5,
                        "width": 5,
                    },
                    customdata=[[r["ci_low"], r["ci_high"], r["p_t"], r["p_wilcoxon"], r["n"]] for r in group],
                    hovertemplate=f"%{{y}} vs {group[0]['baseline']}, {label}<br>difference %{{x:+.4f}}"
                    "<br>95% CI [%{customdata[0]:+.4f}, %{customdata[1]:+.4f}]<br>p_t %{customdata[2]:.3f}"
                    ", p_W %{customdata[3]:.3f}, n %{customdata[4]}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            legend.add(reading)
        fig.add_vline(x=0, line={"color": "#444", "width": 1, "dash": "dot"}, row=1, col=col)
        fig.update_xaxes(
            title_text=f"difference from {rows[0]['baseline'] if rows else 'the baseline'}",
            zeroline=False,
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=shown)
    # the legend sits at the foot of the figure, in pixels below the axis titles whatever the height
    fig.update_layout(
        title=title or None,
        template="plotly_white",
        height=(210 if title else 180) + 36 * len(shown),
        legend={"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom"},
        margin={"t": 90 if title else 60, "b": 100},
    )
    return fig


def _finite(value: Any) -> bool:
    """A number that is not NaN or infinite (study.json writes NaN as null)."""
    return value is not None and math.isfinite(value)


def _range(values: list[float], lowest: float) -> list[float] | None:
    """The span of the points and intervals, kept inside the metric's range [lowest, 1] (a t-interval
    of few seeds can reach past it), with a little margin."""
    finite = [v for v in values if _finite(v)]
    if not finite:
        return None
    low, high = max(min(finite), lowest), min(max(finite), 1.0)
    pad = max(high - low, 0.02) * 0.06
    return [low - pad, high + pad]


def _error_bar(stats: Mapping[str, Any], color: str) -> dict[str, Any]:
    """A t-interval as asymmetric error bars; none when it is undefined (one run)."""
    low, high, mean = stats.get("ci_low"), stats.get("ci_high"), stats["mean"]
    if not (_finite(low) and _finite(high)):
        return {"visible": False}
    return {
        "type": "data",
        "symmetric": False,
        "array": [high - mean],
        "arrayminus": [mean - low],
        "color": color,
        "thickness": 1.5,
        "width": 4,
    }
