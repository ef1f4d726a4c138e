"""Comparing runs: per-level metric bars, and training curves read from the metrics log."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    """Training loss against step, and per-level evaluation metric (and CPCC) against epoch.

    Args:
        runs: a run directory (or its ``metrics.jsonl``), a list of metrics records, or a mapping
            ``{name: run directory or records}`` to overlay several runs.
        metric: which retrieval metric of the ``"eval"`` records to plot per level.
        smoothing: EMA factor in [0, 1) for the loss curves (0: raw); raw values show faintly.
        level_names: names for the levels keyed ``"0"``, ``"1"``, ... in the records (default:
            from a run directory's ``hierarchy.json`` when there is one, else the keys).

    Records follow the run-directory contract: ``{"kind": "train", "step", "loss",
    "loss_levels"}`` and ``{"kind": "eval", "epoch", "retrieval": {level: {metric: v}}, "cpcc"}``.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if isinstance(runs, Mapping):
        named = {str(k): v for k, v in runs.items()}
    else:
        named = {"": runs}
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

    has_cpcc = any(r.get("kind") == "eval" and r.get("cpcc") is not None for log in logs.values() for r in log)
    titles = ["training loss", f"eval {metric} per level"] + (["CPCC"] if has_cpcc else [])
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07)
    single = len(logs) == 1
    for r, (name, log) in enumerate(logs.items()):
        run_color = RUN_PALETTE[r % len(RUN_PALETTE)]
        prefix = f"{name} · " if name else ""
        train = [rec for rec in log if rec.get("kind") == "train" and rec.get("loss") is not None]
        if train:
            step = np.array([rec.get("step", k) for k, rec in enumerate(train)], dtype=float)
            loss = np.array([rec["loss"] for rec in train], dtype=float)
            mode = "lines" if len(train) > 1 else "markers"  # a line through one point draws nothing
            if smoothing > 0:
                fig.add_trace(
                    go.Scatter(
                        x=step,
                        y=loss,
                        mode="lines",
                        line={"color": run_color, "width": 1},
                        opacity=0.25,
                        showlegend=False,
                        hoverinfo="skip",
                    ),
                    row=1,
                    col=1,
                )
            fig.add_trace(
                go.Scatter(
                    x=step,
                    y=_ema(loss, smoothing),
                    mode=mode,
                    name=f"{prefix}loss",
                    line={"color": run_color, "width": 2},
                ),
                row=1,
                col=1,
            )
            per_level = [rec.get("loss_levels") for rec in train]
            if all(isinstance(p, list) and p for p in per_level) and len({len(p) for p in per_level}) == 1:
                levels = np.array(per_level, dtype=float)
                for lv in range(levels.shape[1]):
                    fig.add_trace(
                        go.Scatter(
                            x=step,
                            y=_ema(levels[:, lv], smoothing),
                            mode=mode,
                            name=f"{prefix}loss {level_label(str(lv))}",
                            visible="legendonly",
                            line={"color": run_color, "width": 1, "dash": LEVEL_DASHES[(lv + 1) % 6]},
                        ),
                        row=1,
                        col=1,
                    )
        evals = [rec for rec in log if rec.get("kind") == "eval"]
        x_of = [rec.get("epoch", rec.get("step", k)) for k, rec in enumerate(evals)]
        level_keys: list[str] = []
        for rec in evals:
            level_keys += [lv for lv in rec.get("retrieval", {}) if lv not in level_keys]
        for k, lv in enumerate(level_keys):
            points = [
                (x, rec["retrieval"][lv][metric])
                for x, rec in zip(x_of, evals)
                if metric in rec.get("retrieval", {}).get(lv, {})
            ]
            if not points:
                continue
            color = RUN_PALETTE[k % len(RUN_PALETTE)] if single else run_color
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in points],
                    y=[p[1] for p in points],
                    mode="lines+markers",
                    name=f"{prefix}{level_label(lv)}",
                    line={"color": color, "dash": "solid" if single else LEVEL_DASHES[k % 6]},
                ),
                row=1,
                col=2,
            )
        cpcc = [(x, rec["cpcc"]) for x, rec in zip(x_of, evals) if rec.get("cpcc") is not None]
        if cpcc:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in cpcc],
                    y=[p[1] for p in cpcc],
                    mode="lines+markers",
                    name=f"{prefix}CPCC",
                    line={"color": run_color},
                ),
                row=1,
                col=3,
            )
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    if has_cpcc:
        fig.update_xaxes(title_text="epoch", row=1, col=3)
    fig.update_layout(title=title or "training curves", template="plotly_white", height=420)
    return fig
