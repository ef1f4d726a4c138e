"""Does the embedding preserve the hierarchy? Distances per tree distance, class-mean similarities."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from hcl.hierarchy import Hierarchy
from hcl.labels import shared_prefix_length
from hcl.viz.figures.common import RUN_PALETTE, resolve_level, validated_labels
from hcl.viz.projection import as_embedding_array

__all__ = ["class_similarity_heatmap", "distance_vs_tree_distance"]


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
    array = validated_labels(labels, hierarchy, len(emb))
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
                y=dist[mask],
                name=f"{d}",
                boxpoints=False,
                marker_color=RUN_PALETTE[0],
                hovertemplate=f"tree distance {d}<br>{mask.sum()} pairs<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"embedding distance vs tree distance (Spearman ρ = {rho:.3f}, {len(tree)} pairs)",
        xaxis_title="tree distance between the labels (edges)",
        yaxis_title=f"{metric} distance in the embedding",
        template="plotly_white",
        showlegend=False,
        meta={"spearman": rho, "pairs": int(len(tree))},
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
    array = validated_labels(labels, hierarchy, len(emb))
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
            z=sim,
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            colorscale="RdBu_r",
            customdata=hover,
            hovertemplate="%{customdata}<br>cos = %{z:.3f}<extra></extra>",
            colorbar={"title": {"text": "cos"}},
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
        shapes=shapes,
        template="plotly_white",
        width=side + 80,
        height=side,
        yaxis={"autorange": "reversed", "scaleanchor": "x", "type": "category"},
        xaxis={"type": "category"},
    )
    return fig
