"""Per-level k-means NMI/AMI: perfect clusters, random embeddings, agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from hcl.metrics import ami_per_level, clustering_per_level, nmi_per_level

LABELS = np.array([[r, c] for r in range(2) for c in range(3)] * 20)  # 6 fine classes, 2 roots


def separated(labels: np.ndarray, seed: int, noise: float) -> np.ndarray:
    """Each fine class around its own direction; the two roots in different half-spaces."""
    rng = np.random.default_rng(seed)
    directions = np.eye(8)[:6] * 3.0 + np.repeat(np.eye(8)[6:8] * 6.0, 3, axis=0)
    return directions[labels[:, 0] * 3 + labels[:, 1]] + noise * rng.standard_normal((len(labels), 8))


def test_perfect_clusters_score_one() -> None:
    result = clustering_per_level(separated(LABELS, 0, 0.05), LABELS)
    for level, expected_classes in ((0, 2), (1, 6)):
        assert result[level]["nmi"] == pytest.approx(1.0)
        assert result[level]["ami"] == pytest.approx(1.0)
        assert result[level]["num_classes"] == expected_classes
        assert result[level]["num_samples"] == 120


def test_random_embeddings_score_near_zero_ami() -> None:
    emb = np.random.default_rng(1).standard_normal((120, 8))
    ami = ami_per_level(emb, LABELS)
    assert abs(ami[0]) < 0.05 and abs(ami[1]) < 0.05


def test_matches_scikit_learn_on_level_prefix_ids() -> None:
    emb = separated(LABELS, 2, 1.5)
    nmi, ami = nmi_per_level(emb, LABELS, seed=3), ami_per_level(emb, LABELS, seed=3)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for level, (truth, k) in enumerate(((LABELS[:, 0], 2), (LABELS[:, 0] * 3 + LABELS[:, 1], 6))):
        clusters = KMeans(n_clusters=k, n_init=3, random_state=3).fit_predict(unit.astype(np.float32))
        assert nmi[level] == pytest.approx(normalized_mutual_info_score(truth, clusters))
        assert ami[level] == pytest.approx(adjusted_mutual_info_score(truth, clusters))


def test_ragged_labels_and_degenerate_levels() -> None:
    labels = LABELS.copy()
    labels[:30, 1] = -1
    result = clustering_per_level(separated(labels, 0, 0.05), labels)
    assert result[1]["num_samples"] == 90
    # A level with one class scores 1; a level nobody is known at is left out.
    single = np.zeros((10, 2), dtype=np.int64)
    single[:, 1] = -1
    out = clustering_per_level(np.random.default_rng(0).standard_normal((10, 3)), single)
    assert out == {0: {"nmi": 1.0, "ami": 1.0, "num_samples": 10, "num_classes": 1}}
    with pytest.raises(ValueError, match="num_init"):
        clustering_per_level(separated(LABELS, 0, 0.1), LABELS, num_init=0)
    with pytest.warns(DeprecationWarning, match="'n_init' is deprecated, use 'num_init'"):
        old = nmi_per_level(separated(LABELS, 0, 0.1), LABELS, n_init=1)
    assert old == nmi_per_level(separated(LABELS, 0, 0.1), LABELS, num_init=1)
    with pytest.raises(ValueError, match="rows"):
        nmi_per_level(separated(LABELS, 0, 0.1), LABELS[:5])
