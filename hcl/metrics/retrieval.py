"""Per-level retrieval metrics (precision@1, recall@k, R-precision, MAP@R) computed in blocks.

The public functions validate their inputs and name the results; the ranking itself, which never
holds the whole similarity matrix, is in :mod:`hcl.metrics._retrieval_engine`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hcl.extras import requires_extra
from hcl.metrics._retrieval_engine import RankingPlan, retrieval_sums
from hcl.metrics._validation import as_embeddings, as_labels_for, check_ks, check_same_levels

if TYPE_CHECKING:
    import pandas as pd

    from hcl.hierarchy import Hierarchy

__all__ = ["nearest_neighbors", "per_level_retrieval", "retrieval_table"]

# Elements of one (block, gallery) similarity chunk when batch_size is not given: 128 MiB of
# float32 on the CPU, 512 MiB on an accelerator (where bigger blocks keep the device busy).
_BLOCK_ELEMENTS = 1 << 25
_BLOCK_ELEMENTS_ACCELERATOR = 1 << 27


def per_level_retrieval(
    embeddings: Any,
    labels: Any,
    ks: int | Iterable[int] = (1, 5, 10),
    *,
    query: Any = None,
    query_labels: Any = None,
    query_indices: Any = None,
    hierarchy: Hierarchy | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict[int, dict[str, float]]:
    """Retrieval quality at every level of the hierarchy, with cosine similarity.

    Without ``query``, every sample queries all the others (leave-one-out: a sample never
    retrieves itself), or only the samples ``query_indices`` names (still against all others:
    e.g. the metrics of one subtree's samples). With ``query``/``query_labels``, each query
    searches ``embeddings`` as the gallery (DeepFashion In-Shop's query/gallery protocol).

    Definitions, per level ``l``:

    * A gallery item is *relevant* to a query when their labels agree and are known on levels
      ``0..l``. Gallery items unknown at ``l`` are never relevant there but are still ranked.
    * A query unknown (``-1``) at ``l`` is skipped at ``l``. So is a query with no relevant item
      in the gallery (R = 0), for which R-precision and MAP@R are undefined; this matches
      pytorch-metric-learning, which drops such "lone" queries. ``num_queries`` says how many
      queries were averaged; with none, every metric is NaN.
    * ``precision@1``: the nearest item is relevant. ``recall@k``: at least one of the k nearest
      items is relevant (the Recall@K of the metric-learning literature). ``r_precision``: the
      fraction of the R nearest items that are relevant. ``map@r``: MAP@R of Musgrave et al.,
      "A Metric Learning Reality Check" (ECCV 2020): ``(1/R) * sum_{i<=R} P(i) * rel(i)``.
      All are averaged over the counted queries.

    Ties: similarities are quantised, monotonically, to cells of width ``2**-(29 - b)`` with
    ``b = bit_length(L)`` (``1.5e-8`` for 4 to 7 levels, never coarser than ``6e-8``, the float32
    spacing near 1, so finer than the rounding error of a float32 dot product; beyond 31 levels
    ``2**-40``), and items in one cell are tied. A tie between a relevant and a non-relevant
    item is broken against the query (the non-relevant item ranks first), at every level, so the
    result does not depend on the order of the gallery.

    Cost: one (query x gallery) matrix product in blocks, then per query a selection of its
    row's top ranks and a sort of them, down to the largest R (on the CPU, down to the largest R
    below the coarsest level, whose deeper ranks are scored from its first miss on without a
    full sort: with numba's compiled rows in every gallery, without numba in galleries of 32k
    items or more). Memory is O(batch_size x gallery); the gallery's N x N similarity matrix is
    never formed.

    Args:
        embeddings: the gallery (and, without ``query``, the queries), any scale; rows are
            L2-normalised here.
        labels: the gallery's hierarchical labels (the convention of :class:`hcl.Hierarchy`).
        ks: the k of ``recall@k``; each must be at most the number of items a query can retrieve.
        query: separate query embeddings (optional, with ``query_labels``).
        query_labels: the queries' labels, with as many levels as ``labels``.
        query_indices: leave-one-out over these samples only (distinct indices into
            ``embeddings``); not with ``query``.
        hierarchy: if given, labels are checked against it (ids in range, consistent parents).
        batch_size: queries per block (default: 2**25 / gallery size on the CPU, 2**27 on an
            accelerator).
        device: where to compute (default: where ``embeddings`` is).

    Returns:
        ``{level: {"precision@1", "recall@<k>" for each k, "r_precision", "map@r": float,
        "num_queries": int}}`` for levels ``0..L-1``, coarse to fine
        (:func:`hcl.metrics.to_pml_names` gives pytorch-metric-learning's key names).

    Raises:
        ValueError: shape mismatch, empty input, NaN/inf or all-zero embeddings, a k larger than
            what a query can retrieve, ``query`` without ``query_labels`` (or the reverse),
            ``query_indices`` with ``query``, out of range, repeated or not integers.

    Shape:
        embeddings: (N, D); labels: (N, L); query: (Q, D); query_labels: (Q, L);
        query_indices: (Q,).
    """
    ks = check_ks(ks)
    gallery, g_labels, queries, q_labels, leave_one_out = _check_inputs(
        embeddings, labels, query, query_labels, hierarchy, device
    )
    selected = None
    if query_indices is not None:
        if not leave_one_out:
            raise ValueError("query_indices selects leave-one-out queries; it cannot be combined with query")
        selected = _check_query_indices(query_indices, len(gallery))
        index = torch.from_numpy(selected)
        queries, q_labels = gallery[index.to(gallery.device)], g_labels[index.to(g_labels.device)]
    num_gallery, num_levels = g_labels.shape
    num_rankable = num_gallery - int(leave_one_out)
    if ks[-1] > num_rankable:
        what = "other gallery items" if leave_one_out else "gallery items"
        raise ValueError(f"k={ks[-1]} in ks is larger than the {num_rankable} {what} a query can retrieve")
    plan = RankingPlan(q_labels, g_labels, leave_one_out, selected)
    num_queries = len(q_labels)
    if batch_size is None:
        block = _BLOCK_ELEMENTS if gallery.device.type == "cpu" else _BLOCK_ELEMENTS_ACCELERATOR
        batch_size = max(1, block // num_gallery)
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = min(batch_size, num_queries)
    totals, counts = retrieval_sums(queries, gallery, plan, ks, batch_size)
    return _finish(totals, counts, ks)


def retrieval_table(
    result: Mapping[int, Mapping[str, float]],
    hierarchy: Hierarchy | None = None,
    *,
    level_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The result of :func:`per_level_retrieval` as a DataFrame, one row per level.

    Rows are named by ``level_names``, else by ``hierarchy.level_names``, else ``level0``, ...;
    columns are the metric names in the result's order. Any ``{level: {name: value}}`` result
    works, e.g. that of :func:`hcl.metrics.clustering_per_level`.
    """
    with requires_extra("hcl.metrics.retrieval_table"):
        import pandas as pd

    levels = sorted(result)
    if level_names is None and hierarchy is not None:
        level_names = hierarchy.level_names
    if level_names is None:
        names = [f"level{level}" for level in levels]
    else:
        if any(level >= len(level_names) for level in levels):
            raise ValueError(f"got {len(level_names)} level names for levels {levels}")
        names = [str(level_names[level]) for level in levels]
    columns = list(result[levels[0]]) if levels else []
    frame = pd.DataFrame([[result[level][c] for c in columns] for level in levels], columns=columns)
    frame.index = pd.Index(names, name="level")
    if "num_queries" in frame:
        frame["num_queries"] = frame["num_queries"].astype("int64")
    return frame


def _check_query_indices(query_indices: Any, n: int) -> np.ndarray:
    """``query_indices`` as distinct int64 indices into the N samples, or a ValueError naming the
    offending entry.

    Shape:
        Returns (Q,) with Q >= 1.
    """
    indices = np.asarray(query_indices.cpu() if isinstance(query_indices, torch.Tensor) else query_indices)
    if indices.ndim != 1 or len(indices) == 0:
        raise ValueError(f"query_indices must be a non-empty 1-D sequence of indices, got shape {indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"query_indices must be integers, got dtype {indices.dtype}")
    bad = np.flatnonzero((indices < 0) | (indices >= n))
    if len(bad):
        raise ValueError(f"query_indices[{bad[0]}] = {indices[bad[0]]} is outside 0..{n - 1}")
    values, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"query_indices repeats {values[counts > 1][0]}")
    return indices.astype(np.int64)


@torch.no_grad()
def nearest_neighbors(
    embeddings: Any,
    k: int,
    *,
    query: Any = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most cosine-similar gallery items of each query, computed in blocks.

    Without ``query`` it is leave-one-out over ``embeddings`` (a sample is never its own
    neighbour). Exact ties are ordered as :func:`torch.topk` leaves them.

    Returns:
        ``(similarities, indices)``: sorted from the most similar; indices into ``embeddings``.

    Raises:
        ValueError: bad embeddings (see :func:`per_level_retrieval`) or k larger than the gallery.

    Shape:
        embeddings: (N, D); query: (Q, D). Returns (Q, k) float32 and (Q, k) int64, Q = N
        without ``query``.
    """
    if device is None and isinstance(embeddings, torch.Tensor):
        device = embeddings.device
    gallery = as_embeddings(embeddings, "embeddings", device=device, normalize=True)
    leave_one_out = query is None
    queries = gallery
    if not leave_one_out:
        queries = as_embeddings(query, "query", device=gallery.device, normalize=True)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"query has dimension {queries.shape[1]} but embeddings has {gallery.shape[1]}")
    num_gallery = len(gallery)
    available = num_gallery - int(leave_one_out)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > available:
        raise ValueError(f"k={k} is larger than the {available} gallery items a query can retrieve")
    if batch_size is None:
        batch_size = max(1, _BLOCK_ELEMENTS // num_gallery)
    sims_out, idx_out = [], []
    for start in range(0, len(queries), batch_size):
        sims = queries[start : start + batch_size] @ gallery.T
        if leave_one_out:
            rows = torch.arange(len(sims), device=sims.device)
            sims[rows, rows + start] = -math.inf
        values, indices = torch.topk(sims, k, dim=1)
        sims_out.append(values)
        idx_out.append(indices)
    return torch.cat(sims_out), torch.cat(idx_out)


def _check_inputs(
    embeddings: Any,
    labels: Any,
    query: Any,
    query_labels: Any,
    hierarchy: Hierarchy | None,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Validated (gallery, gallery labels, queries, query labels, leave_one_out)."""
    if device is None and isinstance(embeddings, torch.Tensor):
        device = embeddings.device
    gallery = as_embeddings(embeddings, "embeddings", device=device, normalize=True)
    g_labels = as_labels_for(labels, gallery, "labels", "embeddings")
    if (query is None) != (query_labels is None):
        given, missing = ("query", "query_labels") if query is not None else ("query_labels", "query")
        raise ValueError(f"{given} was given without {missing}; pass both or neither")
    if query is None:
        queries, q_labels, leave_one_out = gallery, g_labels, True
    else:
        queries = as_embeddings(query, "query", device=gallery.device, normalize=True)
        q_labels = as_labels_for(query_labels, queries, "query_labels", "query")
        if queries.shape[1] != gallery.shape[1]:
            raise ValueError(f"query has dimension {queries.shape[1]} but embeddings has {gallery.shape[1]}")
        check_same_levels(q_labels, g_labels, "query_labels", "labels")
        leave_one_out = False
    if hierarchy is not None:
        hierarchy.validate(g_labels)
        if not leave_one_out:
            hierarchy.validate(q_labels)
    return gallery, g_labels, queries, q_labels, leave_one_out


def _finish(sums: np.ndarray, counts: np.ndarray, ks: tuple[int, ...]) -> dict[int, dict[str, float]]:
    result: dict[int, dict[str, float]] = {}
    for level in range(len(counts)):
        n = int(counts[level])
        means = (sums[level] / n).tolist() if n else [math.nan] * sums.shape[1]
        entry: dict[str, float] = {"precision@1": means[0]}
        entry.update({f"recall@{k}": means[3 + i] for i, k in enumerate(ks)})
        entry.update({"r_precision": means[1], "map@r": means[2], "num_queries": n})
        result[level] = entry
    return result
