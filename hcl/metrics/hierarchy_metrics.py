"""How well an embedding or a set of predictions respects the label tree.

Tree distances use the label convention of :class:`hcl.Hierarchy`: two label rows with depths
``d_a``, ``d_b`` (their numbers of known levels) sharing a prefix of length ``s`` are
``d_a + d_b - 2 s`` edges apart, which is ``2 (L - s)`` when both are full-depth leaves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from hcl.labels import as_label_tensor, shared_prefix_length
from hcl.metrics._validation import as_embeddings, as_labels_for

__all__ = ["cpcc", "hierarchical_distance_at_k", "mistake_severity"]

# Class pairs per chunk when correlating distances (bounds memory for many classes).
_PAIR_CHUNK = 1 << 22


@torch.no_grad()
def cpcc(embeddings: Any, labels: Any) -> float:
    """Cophenetic correlation between the label tree and the embedding's class means.

    Zeng et al., "Learning Structured Representations by Embedding Class Hierarchy" (ICLR
    2023): the Pearson correlation, over all pairs of classes, between the tree distance of the
    two classes and the Euclidean distance between their class means. A class is a distinct
    label row (its deepest known node, so ragged labels give classes at inner nodes); its mean
    is the mean of its samples' embeddings as given, then L2-normalised. 1 means class means
    are as far apart as the tree says (up to scale and shift).

    Samples unknown at level 0 (all ``-1``) are ignored. The answer is NaN when it is undefined:
    fewer than two classes, or all tree distances (e.g. a one-level hierarchy) or all embedding
    distances equal.

    Raises:
        ValueError: bad embeddings or labels, a row-count mismatch, or a class mean of zero.

    Shape:
        embeddings: (N, D); labels: (N, L).
    """
    emb = as_embeddings(embeddings, "embeddings", device="cpu", dtype=torch.float64)
    labels = as_labels_for(labels, emb, "labels", "embeddings")
    known = labels[:, 0] >= 0
    classes, inverse = torch.unique(labels[known], dim=0, return_inverse=True)
    if len(classes) < 2:
        return math.nan
    sums = torch.zeros(len(classes), emb.shape[1], dtype=torch.float64).index_add_(0, inverse, emb[known])
    norms = torch.linalg.vector_norm(sums, dim=1)
    if not bool((norms > 0).all()):
        bad = classes[int((norms <= 0).nonzero()[0])].tolist()
        raise ValueError(f"the embeddings of class {bad} sum to zero; its mean has no direction")
    means = sums / norms[:, None]
    depth = (classes >= 0).sum(dim=1)
    num_pairs = len(classes) * (len(classes) - 1) // 2
    step = max(1, _PAIR_CHUNK // len(classes))

    def pairs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(tree distance, embedding distance) of the pairs i < j, a block of rows i at a time."""
        for lo in range(0, len(classes), step):
            rows = slice(lo, lo + step)
            upper = torch.arange(len(classes))[None, :] > torch.arange(lo, lo + len(classes[rows]))[:, None]
            shared = shared_prefix_length(classes[rows, None, :], classes[None, :, :])
            tree = (depth[rows, None] + depth[None, :] - 2 * shared).double()
            dist = torch.cdist(means[rows], means, compute_mode="donot_use_mm_for_euclid_dist")
            yield tree[upper], dist[upper]

    # Two passes over the pairs (means, then centred sums) keep the correlation accurate.
    sum_tree = sum_emb = 0.0
    for tree, dist in pairs():
        sum_tree += float(tree.sum())
        sum_emb += float(dist.sum())
    mean_tree, mean_emb = sum_tree / num_pairs, sum_emb / num_pairs
    sxx = syy = sxy = 0.0
    for tree, dist in pairs():
        tree, dist = tree - mean_tree, dist - mean_emb
        sxx += float((tree * tree).sum())
        syy += float((dist * dist).sum())
        sxy += float((tree * dist).sum())
    if sxx == 0.0 or syy == 0.0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def mistake_severity(predicted: Any, target: Any) -> float:
    """Mean LCA height of the wrong top-1 predictions (Bertinetto et al., CVPR 2020).

    "Making Better Mistakes: Leveraging Class Hierarchies with Deep Networks". A prediction is
    wrong when it disagrees with the target on a level where the target is known. Its *LCA
    height* is ``depth(target) - s``: how many levels one climbs from the target to the lowest
    common ancestor, with ``s`` the length of the shared label prefix. For full-depth labels
    that is ``L - s``, half the tree distance: 1 for a sibling class, L for a different root.

    Predictions can be a classifier's top-1 classes or the labels of nearest neighbours, e.g.
    ``labels[nearest_neighbors(embeddings, 1)[1][:, 0]]``. Targets unknown at level 0 are skipped.

    Returns:
        The mean height over mistakes; NaN when there is no mistake.

    Shape:
        predicted: (N, L), or (N, k, L) of which the first column is used; target: (N, L).
    """
    predicted, target = _check_predictions(predicted, target)
    heights, counted = _lca_heights(predicted[:, :1], target)
    wrong = counted & (heights[:, 0] > 0)
    if not bool(wrong.any()):
        return math.nan
    return float(heights[wrong, 0].double().mean())


def hierarchical_distance_at_k(predicted: Any, target: Any) -> float:
    """Mean LCA height between the target and each of the top-k predictions (Bertinetto et al.).

    "Making Better Mistakes" (CVPR 2020), "average hierarchical distance@k": for each sample, the
    mean over its k predictions (correct ones count 0) of the LCA height defined in
    :func:`mistake_severity`, then the mean over samples. Predictions can be a classifier's k
    most likely classes or the labels of the k nearest neighbours,
    ``labels[nearest_neighbors(embeddings, k)[1]]``. Targets unknown at level 0 are skipped.

    Returns:
        The mean height; NaN when no sample is counted.

    Shape:
        predicted: (N, k, L) or (N, L) (k = 1); target: (N, L).
    """
    predicted, target = _check_predictions(predicted, target)
    heights, counted = _lca_heights(predicted, target)
    if not bool(counted.any()):
        return math.nan
    return float(heights[counted].double().mean(dim=1).mean())


def _check_predictions(predicted: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k, L) predictions and (N, L) targets, validated."""
    target = as_label_tensor(target, name="target", device="cpu")
    pred = predicted if isinstance(predicted, torch.Tensor) else torch.as_tensor(np.asarray(predicted))
    if pred.dim() == 2:
        pred = pred[:, None, :]
    if pred.dim() != 3:
        raise ValueError(f"predicted must have shape (N, L) or (N, k, L), got {tuple(pred.shape)}")
    n, k, num_levels = pred.shape
    if k == 0:
        raise ValueError("predicted has no predictions per sample (k = 0)")
    flat = as_label_tensor(pred.reshape(n * k, num_levels), name="predicted", device="cpu")
    if n != len(target):
        raise ValueError(f"predicted has {n} samples but target has {len(target)}; they must match")
    if num_levels != target.shape[1]:
        raise ValueError(f"predicted has {num_levels} levels but target has {target.shape[1]}")
    if n == 0:
        raise ValueError("predicted and target are empty")
    return flat.reshape(n, k, num_levels), target


def _lca_heights(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LCA heights ``depth(target) - shared`` (N, k) and which samples count (N,)."""
    depth = (target >= 0).sum(dim=1)
    shared = shared_prefix_length(predicted, target[:, None, :])
    return depth[:, None] - shared, depth > 0
