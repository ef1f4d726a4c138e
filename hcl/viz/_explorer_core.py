"""What :class:`hcl.viz.HierarchyExplorer` shows, computed without widgets.

The subtree drop-down's options, which samples a subtree holds, the points' colours, the
figure's traces, the query's neighbours and the subtree's retrieval metrics as tables, and
those tables as HTML.
The explorer holds the widgets and calls these on every change.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from hcl.hierarchy import Hierarchy
from hcl.labels import shared_prefix_length
from hcl.viz.figures import UNKNOWN_COLOR, level_colors, thumbnail_uri

__all__ = [
    "DIMMED",
    "legend_traces",
    "metrics_html",
    "neighbors_html",
    "neighbors_table",
    "point_colors",
    "scatter_traces",
    "subtree_mask",
    "subtree_metrics_table",
    "thumbnail_html",
    "tree_options",
]

# Colour of the points outside the highlighted subtree.
DIMMED = "#dddddd"
_QUERY_COLOR = "#111111"
_TABLE_STYLE = (
    "<style>table.hcl-neighbours, table.hcl-metrics {border-collapse: collapse; margin-top: 4px}"
    " .hcl-neighbours td, .hcl-neighbours th, .hcl-metrics td, .hcl-metrics th {padding: 1px 4px; text-align: right;"
    " white-space: nowrap; line-height: 1.3}"
    " .hcl-neighbours :is(td, th):nth-child(4), .hcl-neighbours :is(td, th):nth-child(5) {text-align: left}"
    " .hcl-neighbours tr:nth-child(even), .hcl-metrics tbody tr:nth-child(even) {background: #f4f4f4}</style>"
)


def tree_options(hierarchy: Hierarchy) -> list[tuple[str, tuple[int, int]]]:
    """Every node, depth first, indented by level: the subtree drop-down's "tree"."""
    h = hierarchy
    options: list[tuple[str, tuple[int, int]]] = []

    def visit(level: int, node: int) -> None:
        options.append(("\u2003" * level + h.nodes(level)[node] + f"  ({h.level_names[level]})", (level, node)))
        if level + 1 < h.num_levels:
            for child in h.children(level, node):
                visit(level + 1, child)

    for root in range(h.num_nodes(0)):
        visit(0, root)
    return options


def subtree_mask(labels: np.ndarray, node: tuple[int, int] | None) -> np.ndarray:
    """Which samples lie in the subtree of ``node`` = ``(level, node id)`` (all of them for None).

    Shape:
        labels: (N, L). Returns (N,) bool.
    """
    if node is None:
        return np.ones(len(labels), dtype=bool)
    level, idx = node
    return labels[:, level] == idx


def point_colors(hierarchy: Hierarchy, labels: np.ndarray, level: int, mask: np.ndarray) -> np.ndarray:
    """Each sample's node colour at ``level`` (grey when unknown), :data:`DIMMED` outside ``mask``.

    Shape:
        labels: (N, L); mask: (N,). Returns (N,) object array of str.
    """
    palette = np.asarray(level_colors(hierarchy, level) + [UNKNOWN_COLOR], dtype=object)
    colors = palette[labels[:, level]]  # -1 (unknown) picks the last entry
    return np.where(mask, colors, DIMMED)


def scatter_traces(coords: np.ndarray, paths: np.ndarray) -> list[go.Scatter]:
    """The explorer's traces: 0 every sample, 1 the query's neighbours (rings), 2 the query (a star).

    Shape:
        coords: (N, 2); paths: (N,) the samples' label paths, shown on hover.
    """
    hover = "%{hovertext}<br>sample %{customdata}<extra></extra>"
    ring = {"size": 13, "color": "rgba(0,0,0,0)", "line": {"color": _QUERY_COLOR, "width": 1.5}}
    star = {"size": 18, "symbol": "star", "color": _QUERY_COLOR, "line": {"color": "white", "width": 1}}
    return [
        go.Scatter(
            x=coords[:, 0],
            y=coords[:, 1],
            mode="markers",
            name="samples",
            showlegend=False,
            hovertext=paths,
            customdata=np.arange(len(coords)),
            hovertemplate=hover,
            marker={"size": 6},
        ),
        go.Scatter(x=[], y=[], mode="markers", name="neighbours", hoverinfo="skip", marker=ring),
        go.Scatter(x=[], y=[], mode="markers", name="query", hoverinfo="skip", marker=star),
    ]


def legend_traces(hierarchy: Hierarchy, labels: np.ndarray, level: int, max_classes: int) -> list[go.Scatter]:
    """Legend-only entries for the nodes of ``level`` present in ``labels`` (none above ``max_classes``).

    Shape:
        labels: (N, L).
    """
    colors = level_colors(hierarchy, level)
    present = np.unique(labels[labels[:, level] >= 0, level])
    if len(present) > max_classes:
        return []
    return [
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=hierarchy.nodes(level)[node],
            marker={"size": 9, "color": colors[node]},
            hoverinfo="skip",
        )
        for node in present
    ]


def neighbors_table(
    embeddings: np.ndarray,
    labels: np.ndarray,
    paths: np.ndarray,
    hierarchy: Hierarchy,
    row: int,
    num_neighbors: int,
) -> pd.DataFrame:
    """The ``num_neighbors`` nearest samples (cosine) to sample ``row``, see
    :meth:`hcl.viz.HierarchyExplorer.neighbors`.

    Shape:
        embeddings: (N, D); labels: (N, L); paths: (N,). Returns ``num_neighbors`` rows.
    """
    from hcl.metrics import nearest_neighbors

    sims, idx = nearest_neighbors(embeddings, num_neighbors + 1, query=embeddings[row : row + 1])
    pairs = [(int(j), float(s)) for j, s in zip(idx[0].tolist(), sims[0].tolist()) if j != row]
    rows = np.array([j for j, _ in pairs[:num_neighbors]], dtype=np.int64)
    shared = shared_prefix_length(
        torch.from_numpy(labels[rows]), torch.from_numpy(labels[row]).expand(len(rows), -1)
    ).numpy()
    names = hierarchy.level_names
    return pd.DataFrame(
        {
            "sample": rows,
            "similarity": [s for _, s in pairs[:num_neighbors]],
            "path": paths[rows],
            "shared_levels": shared,
            "agrees_down_to": [names[s - 1] if s > 0 else "-" for s in shared],
        }
    )


def subtree_metrics_table(
    embeddings: np.ndarray,
    labels: np.ndarray,
    hierarchy: Hierarchy,
    mask: np.ndarray | None,
    max_queries: int | None,
    seed: int,
) -> pd.DataFrame:
    """Per-level retrieval metrics with the samples in ``mask`` as queries (None: every sample),
    see :meth:`hcl.viz.HierarchyExplorer.subtree_metrics`.

    Shape:
        embeddings: (N, D); labels: (N, L); mask: (N,) bool. Returns one row per level.
    """
    from hcl.metrics import per_level_retrieval, retrieval_table

    n = len(labels)
    ks = tuple(k for k in (1, 5, 10) if k <= n - 1)
    if mask is None:
        return retrieval_table(per_level_retrieval(embeddings, labels, ks), hierarchy)
    members = np.flatnonzero(mask)
    if max_queries is not None and len(members) > max_queries:
        members = np.sort(np.random.default_rng(seed).choice(members, max_queries, replace=False))
    if len(members) == 0:
        columns = ["precision@1", *(f"recall@{k}" for k in ks), "r_precision", "map@r", "num_queries"]
        return pd.DataFrame(columns=columns, index=pd.Index(hierarchy.level_names, name="level"))
    result = per_level_retrieval(embeddings, labels, ks, query_indices=members)
    return retrieval_table(result, hierarchy)


def thumbnail_html(images: Callable[[int], Any] | None, row: int, size: int) -> str:
    """An ``<img>`` of sample ``row``'s thumbnail, or nothing without images."""
    if images is None:
        return ""
    return f'<img src="{thumbnail_uri(images(int(row)), size)}" style="image-rendering:pixelated;width:{size}px">'


def neighbors_html(table: pd.DataFrame, row: int, path: str, thumb: Callable[[int, int], str]) -> str:
    """The query (sample ``row`` with label path ``path``) and its :func:`neighbors_table` as HTML.

    ``thumb(row, size)`` gives a sample's thumbnail markup (see :func:`thumbnail_html`).
    """
    head = f"<b>sample {row}</b> {thumb(row, 56)}<br>{html.escape(str(path))}"
    cells = "".join(
        "<tr>"
        f"<td>{thumb(r.sample, 28)}</td><td>{r.sample}</td><td>{r.similarity:.3f}</td>"
        f"<td>{html.escape(str(r.path))}</td><td>{html.escape(r.agrees_down_to)}</td>"
        "</tr>"
        for r in table.itertuples()
    )
    return (
        f"{_TABLE_STYLE}<div style='font-size:12px'>{head}<table class='hcl-neighbours'>"
        "<tr><th></th><th>sample</th><th>cos</th><th>label path</th><th>agrees down to</th></tr>"
        f"{cells}</table></div>"
    )


def metrics_html(frame: pd.DataFrame, what: str) -> str:
    """A :func:`subtree_metrics_table` as HTML, titled by where the queries come from."""
    return (
        f"{_TABLE_STYLE}<div style='font-size:12px'><b>retrieval metrics, queries from {html.escape(what)}</b>"
        f"{frame.to_html(float_format=lambda v: f'{v:.3f}', classes='hcl-metrics', border=0)}</div>"
    )
