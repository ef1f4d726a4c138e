"""2-D scatter plots of samples coloured by their node at one level, or at every level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hcl.hierarchy import Hierarchy
from hcl.viz.figures.common import (
    UNKNOWN_COLOR,
    checked_coords,
    label_paths,
    level_colors,
    resolve_level,
    validated_labels,
)
from hcl.viz.figures.html import THUMBNAIL_META, thumbnail_uris
from hcl.viz.figures.label_placement import label_size, place_labels

__all__ = ["scatter_by_level", "scatter_levels_grid", "scatter_with_level_dropdown"]

_LABEL_FONT_SIZE = 11
_ASSUMED_PANEL_WIDTH = 360


def _level_traces(
    xy: np.ndarray,
    labels: np.ndarray,
    hierarchy: Hierarchy,
    level: int,
    paths: np.ndarray,
    thumbs: list[str] | None,
    marker_size: float,
    max_legend_classes: int,
    legend: str | None = None,
) -> list[go.Scatter]:
    """Scatter traces of all points coloured by their node at ``level`` (one per node if few)."""
    colors = level_colors(hierarchy, level)
    names = hierarchy.nodes(level)
    column = labels[:, level]
    index = np.arange(len(xy))
    custom = np.column_stack([index, np.asarray(thumbs if thumbs is not None else [""] * len(xy), dtype=object)])
    hover = "%{hovertext}<br>sample %{customdata[0]}<extra></extra>"
    level_name = hierarchy.level_names[level]
    present = np.unique(column[column >= 0])
    common = {"mode": "markers", "hovertemplate": hover, "legend": legend}
    traces = []
    if len(present) > max_legend_classes:
        point_colors = np.where(column >= 0, np.asarray(colors + [UNKNOWN_COLOR], dtype=object)[column], UNKNOWN_COLOR)
        traces.append(
            go.Scatter(
                x=xy[:, 0],
                y=xy[:, 1],
                name=level_name,
                showlegend=False,
                hovertext=paths,
                customdata=custom,
                marker={"size": marker_size, "color": point_colors, "opacity": 0.8},
                **common,
            )
        )
        return traces
    groups = [(names[node], colors[node], column == node) for node in present]
    if (column < 0).any():
        groups.append(("(unknown)", UNKNOWN_COLOR, column < 0))
    for name, color, mask in groups:
        traces.append(
            go.Scatter(
                x=xy[mask, 0],
                y=xy[mask, 1],
                name=name,
                legendgroup=f"{level_name}:{name}",
                hovertext=paths[mask],
                customdata=custom[mask],
                marker={"size": marker_size, "color": color, "opacity": 0.8},
                **common,
            )
        )
    return traces


def _scatter_layout(fig: go.Figure, title: str | None, thumbs: list[str] | None) -> None:
    fig.update_layout(
        title=title,
        template="plotly_white",
        legend={"itemsizing": "constant"},
        margin={"l": 40, "r": 20, "t": 60 if title else 30, "b": 40},
        hovermode="closest",
    )
    fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
    if thumbs is not None:
        fig.update_layout(meta={THUMBNAIL_META: True})


def scatter_by_level(
    coords: Any,
    labels: Any,
    hierarchy: Hierarchy,
    level: int | str = -1,
    *,
    images: Any = None,
    title: str | None = None,
    marker_size: float = 5,
    max_legend_classes: int = 40,
) -> go.Figure:
    """2-D scatter of samples coloured by their node at ``level``.

    Hover shows the sample's full label path and index; with ``images``, :func:`save_html` adds a
    thumbnail of the hovered sample. Samples unknown at ``level`` are grey. With more than
    ``max_legend_classes`` nodes present, one trace without a legend is drawn instead of one per
    node.

    Args:
        coords: 2-D positions, e.g. from :func:`hcl.viz.project_2d`.
        labels: label rows (the convention of :class:`hcl.Hierarchy`).
        hierarchy: the label tree.
        level: index (negative from the finest) or level name.
        images: optional images, see :func:`thumbnail_uris`.
        title: figure title.
        marker_size: marker diameter in pixels.
        max_legend_classes: most nodes drawn as separate, legend-listed traces.

    Shape:
        coords: (N, 2). labels: (N, L).
    """
    xy = checked_coords(coords)
    array = validated_labels(labels, hierarchy, len(xy))
    level = resolve_level(hierarchy, level)
    thumbs = thumbnail_uris(images, len(xy)) if images is not None else None
    fig = go.Figure(
        _level_traces(
            xy, array, hierarchy, level, label_paths(array, hierarchy), thumbs, marker_size, max_legend_classes
        )
    )
    _scatter_layout(fig, title if title is not None else f"coloured by {hierarchy.level_names[level]}", thumbs)
    fig.update_layout(legend_title_text=hierarchy.level_names[level])
    return fig


def scatter_with_level_dropdown(
    coords: Any,
    labels: Any,
    hierarchy: Hierarchy,
    *,
    level: int | str = -1,
    images: Any = None,
    title: str | None = None,
    marker_size: float = 5,
    max_legend_classes: int = 40,
) -> go.Figure:
    """:func:`scatter_by_level` with a drop-down that re-colours the points by any level.

    The figure holds one set of traces per level; the drop-down switches which set is visible.
    ``level`` is the one shown first.

    Shape:
        coords: (N, 2). labels: (N, L).
    """
    xy = checked_coords(coords)
    array = validated_labels(labels, hierarchy, len(xy))
    first = resolve_level(hierarchy, level)
    thumbs = thumbnail_uris(images, len(xy)) if images is not None else None
    paths = label_paths(array, hierarchy)
    per_level = [
        _level_traces(xy, array, hierarchy, lv, paths, thumbs, marker_size, max_legend_classes)
        for lv in range(hierarchy.num_levels)
    ]
    owner = [lv for lv, traces in enumerate(per_level) for _ in traces]
    fig = go.Figure([t for traces in per_level for t in traces])
    for trace, lv in zip(fig.data, owner):
        trace.visible = lv == first
    buttons = [
        {
            "label": name,
            "method": "update",
            "args": [{"visible": [o == lv for o in owner]}, {"legend.title.text": name}],
        }
        for lv, name in enumerate(hierarchy.level_names)
    ]
    _scatter_layout(fig, title, thumbs)
    fig.update_layout(
        legend_title_text=hierarchy.level_names[first],
        updatemenus=[
            {
                "buttons": buttons,
                "active": first,
                "direction": "down",
                "showactive": True,
                "x": 0.0,
                "xanchor": "left",
                "y": 1.0,
                "yanchor": "bottom",
                "pad": {"b": 4},
            }
        ],
        margin={"t": 80},
    )
    return fig


def scatter_levels_grid(
    coords: Any,
    labels: Any,
    hierarchy: Hierarchy,
    *,
    levels: Sequence[int | str] | None = None,
    images: Any = None,
    title: str | None = None,
    marker_size: float = 4,
    max_labels: int = 30,
    panel_height: int = 480,
    panel_width: int | None = None,
) -> go.Figure:
    """The same 2-D points side by side, one panel per level, each coloured by that level.

    Instead of legends, each node's name is written at the median position of its samples (when
    a panel has at most ``max_labels`` nodes; hover always gives the full label path). A name
    that would cover another moves aside, with a line to its median (larger nodes keep their
    place first; see :func:`hcl.viz.figures.label_placement.place_labels`). Panels are
    ``panel_width`` by ``panel_height`` pixels; without ``panel_width`` the figure takes its
    container's width and the labels are placed for panels 360 pixels wide.

    Shape:
        coords: (N, 2). labels: (N, L).
    """
    xy = checked_coords(coords)
    array = validated_labels(labels, hierarchy, len(xy))
    chosen = [resolve_level(hierarchy, lv) for lv in (levels if levels is not None else range(hierarchy.num_levels))]
    if not chosen:
        raise ValueError("levels must name at least one level")
    thumbs = thumbnail_uris(images, len(xy)) if images is not None else None
    paths = label_paths(array, hierarchy)
    fig = make_subplots(
        rows=1,
        cols=len(chosen),
        subplot_titles=[f"coloured by {hierarchy.level_names[lv]}" for lv in chosen],
        horizontal_spacing=0.03,
    )
    for col, lv in enumerate(chosen, start=1):
        for trace in _level_traces(xy, array, hierarchy, lv, paths, thumbs, marker_size, max_legend_classes=0):
            fig.add_trace(trace, row=1, col=col)
    margin = {"l": 20, "r": 20, "t": 90 if title else 40, "b": 20}
    width = (panel_width or _ASSUMED_PANEL_WIDTH) * len(chosen) + margin["l"] + margin["r"]
    lows, highs = xy.min(axis=0), xy.max(axis=0)
    pad = 0.04 * np.maximum(highs - lows, 1e-9)
    lows, highs = lows - pad, highs + pad
    fig.update_xaxes(range=[lows[0], highs[0]])
    fig.update_yaxes(range=[lows[1], highs[1]])
    for col, lv in enumerate(chosen, start=1):
        present = np.unique(array[array[:, lv] >= 0, lv])
        if len(present) > max_labels:
            continue
        present = present[np.argsort([-np.sum(array[:, lv] == node) for node in present], kind="stable")]
        axis = fig.layout["xaxis" if col == 1 else f"xaxis{col}"]
        plot_width = (width - margin["l"] - margin["r"]) * (axis.domain[1] - axis.domain[0])
        area = (plot_width, panel_height - margin["t"] - margin["b"])
        medians = np.array([np.median(xy[array[:, lv] == node], axis=0) for node in present])
        texts = [hierarchy.nodes(lv)[node] for node in present]
        sizes = np.array([label_size(text, _LABEL_FONT_SIZE) for text in texts])
        offsets = place_labels((medians - lows) / (highs - lows) * np.array(area), sizes, area)
        for (x, y), text, (dx, dy) in zip(medians, texts, offsets):
            fig.add_annotation(
                x=float(x),
                y=float(y),
                text=text,
                showarrow=bool(dx or dy),
                ax=float(dx),
                ay=float(-dy),  # plotly's ay points down
                arrowhead=0,
                arrowwidth=1,
                arrowcolor="#888",
                row=1,
                col=col,
                font={"size": _LABEL_FONT_SIZE, "color": "#222"},
                bgcolor="rgba(255,255,255,0.7)",
                borderpad=1,
            )
    _scatter_layout(fig, title, thumbs)
    fig.update_layout(height=panel_height, width=width if panel_width else None, showlegend=False, margin=margin)
    return fig
