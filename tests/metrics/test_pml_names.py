"""pytorch-metric-learning's metric names: to_pml_names renames keys, and the values then are PML's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hcl.labels import prefix_ids
from hcl.metrics import PML_METRIC_NAMES, clustering_per_level, per_level_retrieval, to_pml_names


def test_the_names_are_those_accuracy_calculator_returns() -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    assert set(PML_METRIC_NAMES.values()) <= set(AccuracyCalculator().get_curr_metrics())


@pytest.mark.parametrize("seed", range(2))
def test_renamed_results_equal_accuracy_calculator_at_every_level(seed: int) -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((90, 6))  # continuous: no ties
    labels = np.stack([rng.integers(0, 2, 90), rng.integers(0, 3, 90)], axis=1)
    results = to_pml_names(per_level_retrieval(emb, labels))
    retrieval = [k for k, v in PML_METRIC_NAMES.items() if k not in ("nmi", "ami")]
    calc = AccuracyCalculator(include=tuple(PML_METRIC_NAMES[k] for k in retrieval), k=None, device=torch.device("cpu"))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    ids = prefix_ids(torch.from_numpy(labels)).numpy().astype(np.float64)
    for level in range(2):
        expected = calc.get_accuracy(unit, ids[:, level], unit, ids[:, level], ref_includes_query=True)
        for key in retrieval:
            assert results[level][PML_METRIC_NAMES[key]] == pytest.approx(expected[PML_METRIC_NAMES[key]], abs=1e-6)
        assert "map@r" not in results[level] and results[level]["recall@5"] > 0  # no PML name: kept


def test_every_shape_of_result_is_renamed_and_left_unchanged() -> None:
    run = {"retrieval": {"0": {"map@r": 0.5, "recall@1": 0.7}}, "cpcc": 0.3, "levels": ["a"]}
    assert to_pml_names(run) == {
        "retrieval": {"0": {"mean_average_precision_at_r": 0.5, "recall@1": 0.7}},
        "cpcc": 0.3,
        "levels": ["a"],
    }
    assert run["retrieval"]["0"]["map@r"] == 0.5  # a copy
    assert to_pml_names({"precision@1": 1.0}) == {"precision_at_1": 1.0}
    rng = np.random.default_rng(0)
    clusters = clustering_per_level(rng.standard_normal((40, 4)), rng.integers(0, 3, (40, 1)))
    assert set(to_pml_names(clusters)[0]) == {"NMI", "AMI", "num_samples", "num_classes"}
    with pytest.raises(TypeError, match="mapping of metric results, got list"):
        to_pml_names([1.0])  # type: ignore[arg-type]
