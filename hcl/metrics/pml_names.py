"""pytorch-metric-learning's names for hcl's metrics, for code and dashboards written against it.

hcl names its retrieval metrics as papers print them (``precision@1``, ``map@r``);
pytorch-metric-learning's ``AccuracyCalculator`` returns the same quantities under other keys
(``precision_at_1``, ``mean_average_precision_at_r``). At every level the values agree with
``AccuracyCalculator`` given that level's label prefixes (the tests check it), so renaming the
keys is all a PML user needs::

    from hcl.metrics import per_level_retrieval, to_pml_names
    to_pml_names(per_level_retrieval(embeddings, labels))[0]["mean_average_precision_at_r"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PML_METRIC_NAMES", "to_pml_names"]

# hcl key -> AccuracyCalculator key. recall@k, num_queries, cpcc and the others have no PML
# counterpart and keep their names.
PML_METRIC_NAMES: dict[str, str] = {
    "precision@1": "precision_at_1",
    "r_precision": "r_precision",
    "map@r": "mean_average_precision_at_r",
    "nmi": "NMI",
    "ami": "AMI",
}


def to_pml_names(results: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of ``results`` whose metric keys are pytorch-metric-learning's, at any depth.

    Takes any result of :mod:`hcl.metrics`: :func:`per_level_retrieval` (``{level: {metric:
    value}}``), one level's dict, :func:`clustering_per_level`, or a run's ``results.json``
    (``{"retrieval": {"0": {...}}, ...}``). Keys in :data:`PML_METRIC_NAMES` are renamed
    (``map@r`` -> ``mean_average_precision_at_r``); every other key and every value is kept.

    Raises:
        TypeError: ``results`` is not a mapping.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"to_pml_names takes a mapping of metric results, got {type(results).__name__}")
    return {
        PML_METRIC_NAMES.get(key, key) if isinstance(key, str) else key: (
            to_pml_names(value) if isinstance(value, Mapping) else value
        )
        for key, value in results.items()
    }
