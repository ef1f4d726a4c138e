"""Plotly figures: embeddings coloured by level, hierarchy preservation, metrics and training curves.

Every figure function returns a ``plotly.graph_objects.Figure``; :func:`save_html` writes any of
them as one self-contained HTML file (plotly.js inlined, nothing fetched from a CDN).
"""

from __future__ import annotations

import base64
import colorsys
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.basedatatypes import BaseFigure
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from hcl.atomic import write_text_atomic
from hcl.hierarchy import Hierarchy
from hcl.labels import shared_prefix_length
from hcl.rundir import read_metrics_log
from hcl.viz.projection import as_embedding_array

__all__ = [
    "UNKNOWN_COLOR",
    "class_similarity_heatmap",
    "distance_vs_tree_distance",
    "image_getter",
    "label_paths",
    "level_colors",
    "per_level_metric_bars",
    "resolve_level",
    "save_html",
    "scatter_by_level",
    "scatter_levels_grid",
    "scatter_with_level_dropdown",
    "thumbnail_uri",
    "thumbnail_uris",
    "to_html",
    "training_curves",
]

UNKNOWN_COLOR = "#b0b0b0"
_ROOT_PALETTE = qualitative.D3 + qualitative.Dark24
_RUN_PALETTE = qualitative.Plotly
_LEVEL_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_THUMBNAIL_META = "hcl_thumbnails"
# Shows a sample's thumbnail (customdata[1], a data: URI) next to the cursor on hover; plotly
# hover labels cannot hold images. "{plot_id}" is filled in by plotly.io.to_html.
_THUMBNAIL_SCRIPT = """
/* hcl: thumbnail on hover */
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.on) { return; }
  var img = document.createElement('img');
  img.style.cssText = 'position:fixed;display:none;pointer-events:none;width:84px;height:84px;' +
    'image-rendering:pixelated;border:1px solid #888;background:#fff;z-index:1000';
  document.body.appendChild(img);
  gd.on('plotly_hover', function (ev) {
    var p = ev.points[0];
    var uri = p.customdata && p.customdata[1];
    if (!uri) { img.style.display = 'none'; return; }
    img.src = uri;
    img.style.left = (ev.event.clientX + 18) + 'px';
    img.style.top = (ev.event.clientY + 18) + 'px';
    img.style.display = 'block';
  });
  gd.on('plotly_unhover', function () { img.style.display = 'none'; });
})();
"""


# --------------------------------------------------------------------------- helpers
def resolve_level(hierarchy: Hierarchy, level: int | str) -> int:
    """A level given as an index (negative counts from the finest) or a level name, as 0..L-1."""
    if isinstance(level, str):
        if level not in hierarchy.level_names:
            raise ValueError(f"unknown level {level!r}; the levels are {hierarchy.level_names}")
        return hierarchy.level_names.index(level)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise TypeError(f"level must be an int or a level name, got {type(level).__name__}")
    if not -hierarchy.num_levels <= level < hierarchy.num_levels:
        raise ValueError(f"level {level} out of range for {hierarchy.num_levels} levels")
    return int(level) % hierarchy.num_levels


def _validated(labels: Any, hierarchy: Hierarchy, n: int | None = None) -> np.ndarray:
    array = hierarchy.validate(labels).cpu().numpy()
    if n is not None and len(array) != n:
        raise ValueError(f"got {len(array)} label rows for {n} points")
    return array


def _coords(coords: Any) -> np.ndarray:
    array = as_embedding_array(coords, name="coords")
    if array.shape[1] != 2:
        raise ValueError(f"coords must have shape (N, 2), got {array.shape}")
    return array


def label_paths(labels: Any, hierarchy: Hierarchy, sep: str = " / ") -> np.ndarray:
    """Each sample's full label path as one string, e.g. ``"clothes / tops / shirt"``.

    Shape:
        labels: (N, L). Returns (N,) object array of str.
    """
    array = _validated(labels, hierarchy)
    if len(array) == 0:
        return np.empty(0, dtype=object)
    unique, inverse = np.unique(array, axis=0, return_inverse=True)
    names = [sep.join(path) if path else "(unknown)" for path in hierarchy.decode(unique)]
    return np.asarray(names, dtype=object)[inverse.reshape(-1)]


def level_colors(hierarchy: Hierarchy, level: int | str) -> list[str]:
    """One colour per node of ``level`` that shows the tree: a subtree shares its root's hue.

    Level-0 nodes get distinct palette colours. A deeper node takes its level-0 ancestor's
    colour with the hue turned and the lightness changed according to its place, in tree order,
    among that ancestor's descendants at ``level``; the hue stays within 40% of the gap to the
    nearest other root's hue (at most +-0.12, about 43 degrees), so a subtree is recognisable.

    Returns:
        ``num_nodes(level)`` hex colours, indexed by node id.
    """
    level = resolve_level(hierarchy, level)
    roots = hierarchy.node_labels(level)[:, 0].numpy()
    root_rgb = [
        tuple(c / 255 for c in hex_to_rgb(_ROOT_PALETTE[r % len(_ROOT_PALETTE)])) for r in range(hierarchy.num_nodes(0))
    ]
    if level == 0:
        return [_hex(*root_rgb[r]) for r in roots]
    root_hue = np.array([colorsys.rgb_to_hls(*rgb)[0] for rgb in root_rgb])
    colors = []
    for node, root in enumerate(roots):
        gaps = np.abs(root_hue - root_hue[root])
        gaps = np.minimum(gaps, 1 - gaps)[np.arange(len(root_hue)) != root]
        band = min(0.12, 0.4 * float(gaps.min())) if len(gaps) else 0.12
        siblings = np.flatnonzero(roots == root)
        m = len(siblings)
        t = 0.0 if m == 1 else int(np.searchsorted(siblings, node)) / (m - 1) - 0.5
        h, lightness, s = colorsys.rgb_to_hls(*root_rgb[root])
        lightness = float(np.clip(lightness + 0.4 * t, 0.22, 0.72))
        colors.append(_hex(*colorsys.hls_to_rgb((h + 2 * band * t) % 1.0, lightness, s)))
    return colors


def _hex(r: float, g: float, b: float) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * min(max(c, 0.0), 1.0))) for c in (r, g, b)))


def image_getter(images: Any, n: int) -> Callable[[int], Any]:
    """A function ``i -> PIL.Image`` over sample rows 0..n-1, from any supported image source.

    Args:
        images: an array (N, H, W) or (N, H, W, C) (uint8, or floats in [0, 1]), a sequence of
            PIL images or arrays, or a callable ``i -> PIL.Image``.
        n: the number of samples (checked against a sequence's length).

    Shape:
        images: (N, H, W) or (N, H, W, C) when an array.
    """
    from PIL import Image

    if callable(images):
        return images
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(f"an image array must be (N, H, W) or (N, H, W, C), got {images.shape}")
        if images.dtype.kind == "f":
            images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
    if len(images) != n:
        raise ValueError(f"got {len(images)} images for {n} points")
    seq = images

    def get(i: int) -> Any:
        item = seq[i]
        return Image.fromarray(np.asarray(item, dtype=np.uint8)) if isinstance(item, np.ndarray) else item

    return get


def thumbnail_uri(image: Any, size: int = 48) -> str:
    """A PNG data URI of a thumbnail of ``image`` (a PIL image), at most ``size`` pixels a side."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uris(images: Any, n: int, size: int = 48) -> list[str]:
    """PNG data URIs of thumbnails, one per sample, for hover display (see :func:`image_getter`)."""
    get = image_getter(images, n)
    return [thumbnail_uri(get(i), size) for i in range(n)]


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
                x=xy[:, 0], y=xy[:, 1], name=level_name, showlegend=False, hovertext=paths, customdata=custom,
                marker={"size": marker_size, "color": point_colors, "opacity": 0.8}, **common,
            )
        )
        return traces
    groups = [(names[node], colors[node], column == node) for node in present]
    if (column < 0).any():
        groups.append(("(unknown)", UNKNOWN_COLOR, column < 0))
    for name, color, mask in groups:
        traces.append(
            go.Scatter(
                x=xy[mask, 0], y=xy[mask, 1], name=name, legendgroup=f"{level_name}:{name}",
                hovertext=paths[mask], customdata=custom[mask],
                marker={"size": marker_size, "color": color, "opacity": 0.8}, **common,
            )
        )
    return traces


def _scatter_layout(fig: go.Figure, title: str | None, thumbs: list[str] | None) -> None:
    fig.update_layout(
        title=title, template="plotly_white", legend={"itemsizing": "constant"},
        margin={"l": 40, "r": 20, "t": 60 if title else 30, "b": 40}, hovermode="closest",
    )
    fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
    if thumbs is not None:
        fig.update_layout(meta={_THUMBNAIL_META: True})


# --------------------------------------------------------------------------- scatter plots
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
    xy = _coords(coords)
    array = _validated(labels, hierarchy, len(xy))
    level = resolve_level(hierarchy, level)
    thumbs = thumbnail_uris(images, len(xy)) if images is not None else None
    fig = go.Figure(
        _level_traces(xy, array, hierarchy, level, label_paths(array, hierarchy), thumbs, marker_size, max_legend_classes)
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
    xy = _coords(coords)
    array = _validated(labels, hierarchy, len(xy))
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
                "buttons": buttons, "active": first, "direction": "down", "showactive": True,
                "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "bottom", "pad": {"b": 4},
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
) -> go.Figure:
    """The same 2-D points side by side, one panel per level, each coloured by that level.

    Instead of legends, each node's name is written at the median position of its samples (when
    a panel has at most ``max_labels`` nodes; hover always gives the full label path).

    Shape:
        coords: (N, 2). labels: (N, L).
    """
    xy = _coords(coords)
    array = _validated(labels, hierarchy, len(xy))
    chosen = [resolve_level(hierarchy, lv) for lv in (levels if levels is not None else range(hierarchy.num_levels))]
    if not chosen:
        raise ValueError("levels must name at least one level")
    thumbs = thumbnail_uris(images, len(xy)) if images is not None else None
    paths = label_paths(array, hierarchy)
    fig = make_subplots(
        rows=1, cols=len(chosen), subplot_titles=[f"coloured by {hierarchy.level_names[lv]}" for lv in chosen],
        horizontal_spacing=0.03,
    )
    for col, lv in enumerate(chosen, start=1):
        for trace in _level_traces(xy, array, hierarchy, lv, paths, thumbs, marker_size, max_legend_classes=0):
            fig.add_trace(trace, row=1, col=col)
        present = np.unique(array[array[:, lv] >= 0, lv])
        if len(present) > max_labels:
            continue
        for node in present:
            x, y = np.median(xy[array[:, lv] == node], axis=0)
            fig.add_annotation(
                x=float(x), y=float(y), text=hierarchy.nodes(lv)[node], showarrow=False, row=1, col=col,
                font={"size": 11, "color": "#222"}, bgcolor="rgba(255,255,255,0.7)", borderpad=1,
            )
    _scatter_layout(fig, title, thumbs)
    fig.update_layout(height=panel_height, showlegend=False, margin={"t": 90 if title else 40})
    return fig


# --------------------------------------------------------------------------- hierarchy preservation
def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise ValueError(f"embedding row {row} is all zeros; cosine similarity is undefined")
    return embeddings / norms


def distance_vs_tree_distance(
    embeddings: Any,
    labels: Any,
    hierarchy: Hierarchy,
    *,
    metric: str = "cosine",
    max_pairs: int = 20000,
    seed: int = 0,
    title: str | None = None,
) -> go.Figure:
    """Box plot of embedding distance between pairs of samples, per tree distance of their labels.

    The tree distance of two samples is the number of edges between their deepest known nodes,
    through their lowest common ancestor (0: same leaf). An embedding that preserves the
    hierarchy has boxes rising with tree distance; the title reports Spearman's rank correlation.
    All pairs are used when there are at most ``max_pairs``, else ``max_pairs`` random pairs.

    Args:
        metric: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``.

    Shape:
        embeddings: (N, D). labels: (N, L).
    """
    from scipy.stats import spearmanr

    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    emb = as_embedding_array(embeddings)
    array = _validated(labels, hierarchy, len(emb))
    if len(emb) < 2:
        raise ValueError(f"need at least 2 samples to form a pair, got {len(emb)}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    n = len(emb)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, max_pairs)
        j = (i + rng.integers(1, n, max_pairs)) % n
    if metric == "cosine":
        unit = _unit_rows(emb.astype(np.float64))
        dist = 1.0 - np.einsum("nd,nd->n", unit[i], unit[j])
    else:
        dist = np.linalg.norm(emb[i].astype(np.float64) - emb[j], axis=1)
    import torch

    a, b = torch.from_numpy(array[i]), torch.from_numpy(array[j])
    tree = ((a >= 0).sum(1) + (b >= 0).sum(1) - 2 * shared_prefix_length(a, b)).numpy()
    rho = float(spearmanr(tree, dist).statistic) if np.ptp(tree) > 0 and np.ptp(dist) > 0 else float("nan")
    fig = go.Figure()
    for d in np.unique(tree):
        mask = tree == d
        fig.add_trace(
            go.Box(
                y=dist[mask], name=f"{d}", boxpoints=False, marker_color=_RUN_PALETTE[0],
                hovertemplate=f"tree distance {d}<br>{mask.sum()} pairs<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"embedding distance vs tree distance (Spearman ρ = {rho:.3f}, {len(tree)} pairs)",
        xaxis_title="tree distance between the labels (edges)", yaxis_title=f"{metric} distance in the embedding",
        template="plotly_white", showlegend=False, meta={"spearman": rho, "pairs": int(len(tree))},
    )
    return fig


def class_similarity_heatmap(
    embeddings: Any,
    labels: Any,
    hierarchy: Hierarchy,
    level: int | str = -1,
    *,
    title: str | None = None,
) -> go.Figure:
    """Heat map of cosine similarities between class means at ``level``, ordered by the tree.

    Node ids follow the tree (a depth-first order of their paths), so siblings sit together;
    lines mark where the ancestor at a coarser level changes. Only nodes with samples appear.
    An embedding that preserves the hierarchy shows bright blocks along the diagonal.

    Shape:
        embeddings: (N, D). labels: (N, L).
    """
    emb = as_embedding_array(embeddings)
    array = _validated(labels, hierarchy, len(emb))
    level = resolve_level(hierarchy, level)
    unit = _unit_rows(emb.astype(np.float64))
    column = array[:, level]
    present = np.unique(column[column >= 0])
    if len(present) == 0:
        raise ValueError(f"no sample has a known label at level {level} ({hierarchy.level_names[level]})")
    means = np.stack([unit[column == node].mean(axis=0) for node in present])
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    means = means / np.where(norms > 0, norms, 1.0)
    sim = means @ means.T
    names = [hierarchy.nodes(level)[node] for node in present]
    paths = [" / ".join(hierarchy.path(level, int(node))) for node in present]
    hover = np.array([[f"{pa}<br>{pb}" for pb in paths] for pa in paths], dtype=object)
    fig = go.Figure(
        go.Heatmap(
            z=sim, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu_r", customdata=hover,
            hovertemplate="%{customdata}<br>cos = %{z:.3f}<extra></extra>", colorbar={"title": {"text": "cos"}},
        )
    )
    ancestors = hierarchy.node_labels(level).numpy()[present]
    shapes = []
    for coarse in range(level):
        width = 2.5 if coarse == 0 else 1.0
        for k in np.flatnonzero(np.diff(ancestors[:, coarse]) != 0):
            pos = k + 0.5
            line = {"type": "line", "line": {"color": "black", "width": width}}
            shapes.append(line | {"x0": pos, "x1": pos, "y0": -0.5, "y1": len(present) - 0.5})
            shapes.append(line | {"y0": pos, "y1": pos, "x0": -0.5, "x1": len(present) - 0.5})
    side = int(min(900, max(420, 22 * len(present) + 160)))
    fig.update_layout(
        title=title or f"class-mean cosine similarity at {hierarchy.level_names[level]}, ordered by the tree",
        shapes=shapes, template="plotly_white", width=side + 80, height=side,
        yaxis={"autorange": "reversed", "scaleanchor": "x", "type": "category"}, xaxis={"type": "category"},
    )
    return fig


# --------------------------------------------------------------------------- metrics and training
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
                    raise ValueError(f"run {run!r}, level {lv!r} has no metric {metric!r} (has {sorted(per_level[lv])})")
                values.append(float(per_level[lv][metric]))
            fig.add_trace(
                go.Bar(
                    x=[str(lv) for lv in levels], y=values, name=str(run), legendgroup=str(run), showlegend=c == 1,
                    marker_color=_RUN_PALETTE[r % len(_RUN_PALETTE)], texttemplate="%{y:.3f}", textposition="outside",
                    hovertemplate=f"{run}<br>%{{x}}<br>{metric} = %{{y:.4f}}<extra></extra>",
                ),
                row=1, col=c,
            )
    fig.update_layout(
        title=title or "per-level metrics", barmode="group", template="plotly_white",
        legend={"orientation": "h", "y": -0.15}, height=450,
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
            if isinstance(v, (str, os.PathLike)) and (Path(v) / "hierarchy.json").is_file():
                level_names = Hierarchy.from_json(Path(v) / "hierarchy.json").level_names
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
        run_color = _RUN_PALETTE[r % len(_RUN_PALETTE)]
        prefix = f"{name} · " if name else ""
        train = [rec for rec in log if rec.get("kind") == "train" and rec.get("loss") is not None]
        if train:
            step = np.array([rec.get("step", k) for k, rec in enumerate(train)], dtype=float)
            loss = np.array([rec["loss"] for rec in train], dtype=float)
            if smoothing > 0:
                fig.add_trace(
                    go.Scatter(x=step, y=loss, mode="lines", line={"color": run_color, "width": 1}, opacity=0.25,
                               showlegend=False, hoverinfo="skip"),
                    row=1, col=1,
                )
            fig.add_trace(
                go.Scatter(x=step, y=_ema(loss, smoothing), mode="lines", name=f"{prefix}loss",
                           line={"color": run_color, "width": 2}),
                row=1, col=1,
            )
            per_level = [rec.get("loss_levels") for rec in train]
            if all(isinstance(p, list) and p for p in per_level) and len({len(p) for p in per_level}) == 1:
                levels = np.array(per_level, dtype=float)
                for lv in range(levels.shape[1]):
                    fig.add_trace(
                        go.Scatter(x=step, y=_ema(levels[:, lv], smoothing), mode="lines",
                                   name=f"{prefix}loss {level_label(str(lv))}", visible="legendonly",
                                   line={"color": run_color, "width": 1, "dash": _LEVEL_DASHES[(lv + 1) % 6]}),
                        row=1, col=1,
                    )
        evals = [rec for rec in log if rec.get("kind") == "eval"]
        x_of = [rec.get("epoch", rec.get("step", k)) for k, rec in enumerate(evals)]
        level_keys: list[str] = []
        for rec in evals:
            level_keys += [lv for lv in rec.get("retrieval", {}) if lv not in level_keys]
        for k, lv in enumerate(level_keys):
            points = [(x, rec["retrieval"][lv][metric]) for x, rec in zip(x_of, evals)
                      if metric in rec.get("retrieval", {}).get(lv, {})]
            if not points:
                continue
            color = _RUN_PALETTE[k % len(_RUN_PALETTE)] if single else run_color
            fig.add_trace(
                go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                           name=f"{prefix}{level_label(lv)}", line={"color": color, "dash": "solid" if single else _LEVEL_DASHES[k % 6]}),
                row=1, col=2,
            )
        cpcc = [(x, rec["cpcc"]) for x, rec in zip(x_of, evals) if rec.get("cpcc") is not None]
        if cpcc:
            fig.add_trace(
                go.Scatter(x=[p[0] for p in cpcc], y=[p[1] for p in cpcc], mode="lines+markers",
                           name=f"{prefix}CPCC", line={"color": run_color}),
                row=1, col=3,
            )
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    if has_cpcc:
        fig.update_xaxes(title_text="epoch", row=1, col=3)
    fig.update_layout(title=title or "training curves", template="plotly_white", height=420)
    return fig


# --------------------------------------------------------------------------- saving
def to_html(fig: BaseFigure, *, include_plotlyjs: bool = True, full_html: bool = True) -> str:
    """A figure as HTML, with the thumbnail-on-hover script when the figure carries thumbnails.

    ``include_plotlyjs=True`` inlines plotly.js (no CDN); ``False`` leaves it to the page.
    """
    meta = fig.layout.meta
    script = _THUMBNAIL_SCRIPT if isinstance(meta, Mapping) and meta.get(_THUMBNAIL_META) else None
    return fig.to_html(
        include_plotlyjs=include_plotlyjs, full_html=full_html, post_script=script, config={"responsive": True}
    )


def save_html(fig: BaseFigure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as one self-contained HTML file (plotly.js inlined), atomically.

    Returns:
        The path written.
    """
    if not isinstance(fig, BaseFigure):
        raise TypeError(f"fig must be a plotly figure, got {type(fig).__name__}")
    return write_text_atomic(path, to_html(fig))

