"""Per-level clustering quality: k-means with the level's number of classes, scored by NMI/AMI."""

from __future__ import annotations

from typing import Any

import numpy as np

from hcl._compat import renamed_kwargs
from hcl.labels import prefix_ids
from hcl.metrics._validation import as_embeddings, as_labels_for

__all__ = ["ami_per_level", "clustering_per_level", "nmi_per_level"]


@renamed_kwargs(n_init="num_init")
def clustering_per_level(
    embeddings: Any, labels: Any, *, num_init: int = 3, max_iter: int = 300, seed: int = 0
) -> dict[int, dict[str, float]]:
    """Cluster the embeddings at every level and compare the clusters with the classes.

    At level l, the samples known there are L2-normalised and clustered by scikit-learn's
    KMeans (``num_init`` restarts, seeded) into as many clusters as they have distinct level-l
    classes (label prefixes); the clusters are scored against the classes with normalised and
    adjusted mutual information (arithmetic normalisation, scikit-learn's default). With a
    single class both scores are 1. A level where no sample is known is left out.

    Cost: one k-means per level, O(N x classes x D) per iteration.

    Returns:
        ``{level: {"nmi": float, "ami": float, "num_samples": int, "num_classes": int}}``.

    Shape:
        embeddings: (N, D); labels: (N, L).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    if isinstance(num_init, bool) or not isinstance(num_init, int) or num_init < 1:
        raise ValueError(f"num_init must be a positive integer, got {num_init!r}")
    emb = as_embeddings(embeddings, "embeddings", device="cpu", normalize=True).numpy()
    ids = prefix_ids(as_labels_for(labels, emb, "labels", "embeddings")).numpy()
    result = {}
    for level in range(ids.shape[1]):
        known = ids[:, level] >= 0
        if not known.any():
            continue
        truth = ids[known, level]
        num_classes = len(np.unique(truth))
        if num_classes == 1:
            nmi = ami = 1.0
        else:
            kmeans = KMeans(n_clusters=num_classes, n_init=num_init, max_iter=max_iter, random_state=seed)
            clusters = kmeans.fit_predict(emb[known])
            nmi = float(normalized_mutual_info_score(truth, clusters))
            ami = float(adjusted_mutual_info_score(truth, clusters))
        result[level] = {"nmi": nmi, "ami": ami, "num_samples": int(known.sum()), "num_classes": num_classes}
    return result


def nmi_per_level(embeddings: Any, labels: Any, **kwargs: Any) -> dict[int, float]:
    """``{level: NMI}`` from :func:`clustering_per_level` (use that to get NMI and AMI from one run).

    Shape:
        embeddings: (N, D); labels: (N, L).
    """
    return {level: r["nmi"] for level, r in clustering_per_level(embeddings, labels, **kwargs).items()}


def ami_per_level(embeddings: Any, labels: Any, **kwargs: Any) -> dict[int, float]:
    """``{level: AMI}`` from :func:`clustering_per_level`.

    Shape:
        embeddings: (N, D); labels: (N, L).
    """
    return {level: r["ami"] for level, r in clustering_per_level(embeddings, labels, **kwargs).items()}
