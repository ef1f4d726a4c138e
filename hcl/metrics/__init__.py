"""Evaluation metrics on embeddings and predictions, per level of the label hierarchy.

All are pure functions of tensors or arrays (no state, no plotting). Relevance and class
identity at level ``l`` are label-prefix equality up to ``l`` (see :class:`hcl.Hierarchy`).

- Retrieval: :func:`per_level_retrieval` (precision@1, recall@k, R-precision, MAP@R),
  :func:`retrieval_table`, :func:`nearest_neighbors`.
- Hierarchy preservation: :func:`cpcc`, :func:`mistake_severity`,
  :func:`hierarchical_distance_at_k`.
- Classification: :func:`knn_accuracy`, :func:`linear_probe`, and the seen/unseen transfer
  :func:`transfer_accuracy`.
- Held-out classes: :func:`choose_unseen_classes` and :func:`check_heldout_classes` (each
  held-out class keeps a seen sibling), :func:`seen_unseen_split`,
  :func:`seen_training_indices` (what the encoder trains on), and the report
  :func:`heldout_metrics`.
- Clustering: :func:`clustering_per_level`, :func:`nmi_per_level`, :func:`ami_per_level`.
- pytorch-metric-learning's key names (``mean_average_precision_at_r`` for ``map@r``, ...):
  :func:`to_pml_names` renames the keys of any result, :data:`PML_METRIC_NAMES` lists them.
"""

from hcl.metrics.classification import knn_accuracy, linear_probe, transfer_accuracy
from hcl.metrics.clustering import ami_per_level, clustering_per_level, nmi_per_level
from hcl.metrics.heldout import heldout_metrics
from hcl.metrics.heldout_classes import (
    check_heldout_classes,
    choose_unseen_classes,
    seen_training_indices,
    seen_unseen_split,
)
from hcl.metrics.hierarchy_metrics import cpcc, hierarchical_distance_at_k, mistake_severity
from hcl.metrics.pml_names import PML_METRIC_NAMES, to_pml_names
from hcl.metrics.retrieval import nearest_neighbors, per_level_retrieval, retrieval_table

__all__ = [
    "PML_METRIC_NAMES",
    "ami_per_level",
    "check_heldout_classes",
    "choose_unseen_classes",
    "clustering_per_level",
    "cpcc",
    "heldout_metrics",
    "hierarchical_distance_at_k",
    "knn_accuracy",
    "linear_probe",
    "mistake_severity",
    "nearest_neighbors",
    "nmi_per_level",
    "per_level_retrieval",
    "retrieval_table",
    "seen_training_indices",
    "seen_unseen_split",
    "to_pml_names",
    "transfer_accuracy",
]
