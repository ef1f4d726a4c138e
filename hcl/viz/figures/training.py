"""Comparing runs: per-level metric bars, and training curves read from the metrics log."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hcl.rundir import HIERARCHY_FILE, read_hierarchy, read_metrics_log
from hcl.viz.figures.common import LEVEL_DASHES, RUN_PALETTE

__all__ = ["per_level_metric_bars", "training_curves"]


def per_level_metric_bars(
    results: Mapping[str, Mapping[Any, Mapping[str, float]]],
    metrics: str | Sequence[str] = "map@r",
    *,
    title: str | None = None,
) -> go.Figure:
    """Grouped bars of per-level metrics, one bar per run, one panel per metric.

    Args:
        results: ``{run name: {level: {metric: value}}}``, e.g. one
            :func:`hcl.metrics.per_level_retrieval` result per run (HiMulConE, SupCon, ...).
        metrics: the metric name(s) to plot.
    """
    metric_list = [metrics] if isinstance(metrics, str) else list(metrics)
    if not results:
        raise ValueError("results is empty: give at least one run")
    if not metric_list:
        raise ValueError("metrics must name at least one metric")
    levels: list[Any] = []
    for per_level in results.values():
        levels += [lv for lv in per_level if lv not in levels]
    fig = make_subplots(rows=1, cols=len(metric_list), subplot_titles=metric_list, horizontal_spacing=0.08)
    for r, (run, per_level) in enumerate(results.items()):
        for c, metric in enumerate(metric_list, start=1):
            values = []
            for lv in levels:
                if lv not in per_level:
                    values.append(None)
                    continue
                if metric not in per_level[lv]:
                    raise ValueError(
                        f"run {run!r}, level {lv!r} has no metric {metric!r} (has {sorted(per_level[lv])})"
                    )
                values.append(float(per_level[lv][metric]))
            fig.add_trace(
                go.Bar(
                    x=[str(lv) for lv in levels],
                    y=values,
                    name=str(run),
                    legendgroup=str(run),
                    showlegend=c == 1,
                    marker_color=RUN_PALETTE[r % len(RUN_PALETTE)],
                    texttemplate="%{y:.3f}",
                    textposition="outside",
                    hovertemplate=f"{run}<br>%{{x}}<br>{metric} = %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=c,
            )
    fig.update_layout(
        title=title or "per-level metrics",
        barmode="group",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.15},
        height=450,
    )
    fig.update_yaxes(rangemode="tozero")
    return fig


def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing slider)."""
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for k, v in enumerate(values):
        acc = smoothing * acc + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out[k] = acc / weight
    return out


def training_curves(
    runs: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    metric: str = "map@r",
    smoothing: float = 0.6,
    level_names: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Training loss against step, and the per-level evaluation metric and CPCC.

    Each run's loss has its own panel and labelled y-axis: losses of different objectives live
    on different scales (HiMulConE's sum over levels is several times SupCon's), so one shared
    axis would flatten the smaller. Below them, the evaluation: lines against the epoch when a
    run was evaluated more than once, else bars (one per level and run, and one CPCC bar per run).

    Args:
        runs: a run directory (or its ``metrics.jsonl``), a list of metrics records, or a mapping
            ``{name: run directory or records}`` to compare several runs.
        metric: which retrieval metric of the ``"eval"`` records to plot per level.
        smoothing: EMA factor in [0, 1) for the loss curves (0: raw); raw values show faintly.
        level_names: names for the levels keyed ``"0"``, ``"1"``, ... in the records (default:
            from a run directory's ``hierarchy.json`` when there is one, else the keys).

    Records follow the run-directory contract: ``{"kind": "train", "step", "loss",
    "loss_levels"}`` and ``{"kind": "eval", "epoch", "retrieval": {level: {metric: v}}, "cpcc"}``.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    named = {str(k): v for k, v in runs.items()} if isinstance(runs, Mapping) else {"": runs}
    if not named:
        raise ValueError("runs is empty")
    logs = {name: read_metrics_log(v) if isinstance(v, (str, os.PathLike)) else list(v) for name, v in named.items()}
    if level_names is None:
        for v in named.values():
            if isinstance(v, (str, os.PathLike)) and (Path(v) / HIERARCHY_FILE).is_file():
                level_names = read_hierarchy(v).level_names
                break

    def level_label(key: str) -> str:
        if level_names is not None and str(key).isdigit() and int(key) < len(level_names):
            return str(level_names[int(key)])
        return str(key)

    trains = {n: [r for r in log if r.get("kind") == "train" and r.get("loss") is not None] for n, log in logs.items()}
    evals = {n: [r for r in log if r.get("kind") == "eval"] for n, log in logs.items()}
    loss_runs = [n for n in logs if trains[n]] or list(logs)[:1]
    has_metric = any(metric in lv for rs in evals.values() for r in rs for lv in r.get("retrieval", {}).values())
    has_cpcc = any(r.get("cpcc") is not None for rs in evals.values() for r in rs)
    eval_panels = ([f"eval {metric} per level"] if has_metric else []) + (["CPCC"] if has_cpcc else [])
    as_lines = max(len(rs) for rs in evals.values()) > 1
    if eval_panels and not as_lines:
        eval_panels = [f"{t} (one evaluation)" for t in eval_panels]
    cols = math.lcm(len(loss_runs), max(len(eval_panels), 1))
    specs = [[{"colspan": cols // len(loss_runs)} if c % (cols // len(loss_runs)) == 0 else None for c in range(cols)]]
    if eval_panels:
        span = cols // len(eval_panels)
        specs.append([{"colspan": span} if c % span == 0 else None for c in range(cols)])
    loss_titles = [f"{n} loss" if n else "training loss" for n in loss_runs]
    fig = make_subplots(
        rows=len(specs),
        cols=cols,
        specs=specs,
        subplot_titles=loss_titles + eval_panels,
        horizontal_spacing=min(0.08, 0.5 / max(cols - 1, 1)),
        vertical_spacing=0.2,
    )
    for i, name in enumerate(loss_runs):
        color = RUN_PALETTE[list(logs).index(name) % len(RUN_PALETTE)]
        col = 1 + i * (cols // len(loss_runs))
        _add_loss_traces(fig, trains[name], f"{name} · " if name else "", color, smoothing, level_label, col)
        fig.update_yaxes(title_text=loss_titles[i].replace("training ", ""), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    if eval_panels:
        _add_eval_traces(fig, evals, metric, level_label, as_lines, has_metric, has_cpcc, cols // len(eval_panels))
    fig.update_layout(
        title=title or "training curves", template="plotly_white", height=380 * len(specs), barmode="group"
    )
    return fig


def _add_loss_traces(
    fig: go.Figure,
    train: list[Mapping[str, Any]],
    prefix: str,
    color: str,
    smoothing: float,
    level_label: Callable[[str], str],
    col: int,
) -> None:
    """One run's smoothed loss (raw faintly behind it) and, legend-only, its per-level terms."""
    if not train:
        return
    step = np.array([rec.get("step", k) for k, rec in enumerate(train)], dtype=float)
    loss = np.array([rec["loss"] for rec in train], dtype=float)
    mode = "lines" if len(train) > 1 else "markers"  # a line through one point draws nothing
    where = {"row": 1, "col": col}
    if smoothing > 0:
        raw = go.Scatter(
            x=step, y=loss, mode="lines", line={"color": color, "width": 1}, opacity=0.25, showlegend=False
        )
        fig.add_trace(raw.update(hoverinfo="skip"), **where)
    smooth = go.Scatter(x=step, y=_ema(loss, smoothing), mode=mode, name=f"{prefix}loss", line={"color": color})
    fig.add_trace(smooth, **where)
    per_level = [rec.get("loss_levels") for rec in train]
    if all(isinstance(p, list) and p for p in per_level) and len({len(p) for p in per_level}) == 1:
        levels = np.array(per_level, dtype=float)
        for lv in range(levels.shape[1]):
            line = {"color": color, "width": 1, "dash": LEVEL_DASHES[(lv + 1) % 6]}
            term = go.Scatter(
                x=step,
                y=_ema(levels[:, lv], smoothing),
                mode=mode,
                name=f"{prefix}loss {level_label(str(lv))}",
                visible="legendonly",
                line=line,
            )
            fig.add_trace(term, **where)


def _add_eval_traces(
    fig: go.Figure,
    evals: Mapping[str, list[Mapping[str, Any]]],
    metric: str,
    level_label: Callable[[str], str],
    as_lines: bool,
    has_metric: bool,
    has_cpcc: bool,
    span: int,
) -> None:
    """The metric per level and the CPCC of every run: lines against epoch, or bars of the one evaluation."""
    single = len(evals) == 1
    metric_col, cpcc_col = 1, 1 + span * int(has_metric)
    for r, (name, records) in enumerate(evals.items()):
        color, prefix = RUN_PALETTE[r % len(RUN_PALETTE)], f"{name} · " if name else ""
        x_of = [rec.get("epoch", rec.get("step", k)) for k, rec in enumerate(records)]
        level_keys: list[str] = []
        for rec in records:
            level_keys += [lv for lv in rec.get("retrieval", {}) if lv not in level_keys]
        series = {
            lv: [
                (x, rec["retrieval"][lv][metric])
                for x, rec in zip(x_of, records)
                if metric in rec["retrieval"].get(lv, {})
            ]
            for lv in level_keys
        }
        series = {lv: points for lv, points in series.items() if points}
        cpcc = [(x, rec["cpcc"]) for x, rec in zip(x_of, records) if rec.get("cpcc") is not None]
        if not as_lines:
            if series:
                bar = go.Bar(
                    x=[level_label(lv) for lv in series],
                    y=[points[0][1] for points in series.values()],
                    name=name or metric,
                    marker_color=color,
                    texttemplate="%{y:.3f}",
                    textposition="outside",
                    showlegend=not single,
                )
                fig.add_trace(bar, row=2, col=metric_col)
            if cpcc:
                bar = go.Bar(x=[name or "CPCC"], y=[cpcc[0][1]], name=f"{prefix}CPCC", marker_color=color)
                bar.update(texttemplate="%{y:.3f}", textposition="outside", showlegend=False)
                fig.add_trace(bar, row=2, col=cpcc_col)
            continue
        for k, (lv, points) in enumerate(series.items()):
            line = {"color": RUN_PALETTE[k % len(RUN_PALETTE)] if single else color}
            line["dash"] = "solid" if single else LEVEL_DASHES[k % 6]
            x, y = [p[0] for p in points], [p[1] for p in points]
            trace = go.Scatter(x=x, y=y, mode="lines+markers", name=f"{prefix}{level_label(lv)}", line=line)
            fig.add_trace(trace, row=2, col=metric_col)
        if cpcc:
            x, y = [p[0] for p in cpcc], [p[1] for p in cpcc]
            trace = go.Scatter(x=x, y=y, mode="lines+markers", name=f"{prefix}CPCC", line={"color": color})
            fig.add_trace(trace, row=2, col=cpcc_col)
    for col, shown, y_title in ((metric_col, has_metric, metric), (cpcc_col, has_cpcc, "CPCC")):
        if shown:
            x_title = "epoch" if as_lines else ("level" if col == metric_col and has_metric else "run")
            fig.update_xaxes(title_text=x_title, row=2, col=col)
            if as_lines and max(len(rs) for rs in evals.values()) <= 20:
                fig.update_xaxes(dtick=1, row=2, col=col)  # whole epochs, not 1.5
            fig.update_yaxes(title_text=y_title, row=2, col=col)
    if not as_lines:
        fig.update_yaxes(rangemode="tozero", row=2)
