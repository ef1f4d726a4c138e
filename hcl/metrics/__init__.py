"""Evaluation metrics on embeddings and predictions, per level of the label hierarchy.

All are pure functions of tensors or arrays (no state, no plotting). Relevance and class
identity at level ``l`` are label-prefix equality up to ``l`` (see :class:`hcl.Hierarchy`).

- Retrieval: :func:`per_level_retrieval` (precision@1, recall@k, R-precision, MAP@R),
  :func:`retrieval_table`, :func:`nearest_neighbors`.
- Hierarchy preservation: :func:`cpcc`, :func:`mistake_severity`,
  :func:`hierarchical_distance_at_k`.
- Classification: :func:`knn_accuracy`, :func:`linear_probe`, and seen/unseen transfer with
  :func:`choose_unseen_classes`, :func:`seen_unseen_split`, :func:`transfer_accuracy`.
- Clustering: :func:`clustering_per_level`, :func:`nmi_per_level`, :func:`ami_per_level`.
"""

from hcl.metrics.classification import (
    choose_unseen_classes,
    knn_accuracy,
    linear_probe,
    seen_unseen_split,
    transfer_accuracy,
)
from hcl.metrics.clustering import ami_per_level, clustering_per_level, nmi_per_level
from hcl.metrics.hierarchy_metrics import cpcc, hierarchical_distance_at_k, mistake_severity
from hcl.metrics.retrieval import nearest_neighbors, per_level_retrieval, retrieval_table

__all__ = [
    "ami_per_level",
    "choose_unseen_classes",
    "clustering_per_level",
    "cpcc",
    "hierarchical_distance_at_k",
    "knn_accuracy",
    "linear_probe",
    "mistake_severity",
    "nearest_neighbors",
    "nmi_per_level",
    "per_level_retrieval",
    "retrieval_table",
    "seen_unseen_split",
    "transfer_accuracy",
]
