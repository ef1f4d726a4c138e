"""CPCC against scipy on hand-built trees; mistake severity and hierarchical distance by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import cophenet
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr

import hcl.metrics.hierarchy_metrics as hierarchy_metrics
from hcl import Hierarchy
from hcl.metrics import cpcc, hierarchical_distance_at_k, mistake_severity, nearest_neighbors

# A balanced binary tree with 3 levels: 8 leaves, rows are (root, child, leaf) raw ids.
LEAVES = np.array([[r, c, leaf] for r in range(2) for c in range(2) for leaf in range(2)])


def samples_of(classes: np.ndarray, per_class: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(classes, per_class, axis=0)
    centres = rng.standard_normal((len(classes), dim)) * 2
    emb = rng.standard_normal((len(labels), dim)) + np.repeat(centres, per_class, axis=0)
    return emb, labels


def normalised_means(emb: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    means = np.stack([emb[(labels == c).all(axis=1)].mean(axis=0) for c in classes])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(3))
def test_cpcc_matches_scipy_cophenet_on_a_binary_tree(seed: int) -> None:
    emb, labels = samples_of(LEAVES, per_class=5, dim=6, seed=seed)
    # The same tree as a scipy linkage: leaves 0..7, siblings merge at height 2, cousins at 4,
    # the two roots at 6, which are the tree distances 2 * (L - shared prefix).
    linkage = np.array(
        [[0, 1, 2, 2], [2, 3, 2, 2], [4, 5, 2, 2], [6, 7, 2, 2], [8, 9, 4, 4], [10, 11, 4, 4], [12, 13, 6, 8]],
        dtype=np.float64,
    )
    expected, _ = cophenet(linkage, pdist(normalised_means(emb, labels, LEAVES)))
    assert cpcc(emb, labels) == pytest.approx(expected, abs=1e-10)


def test_cpcc_matches_pearson_on_a_ragged_tree() -> None:
    """Leaves at different depths: distance = depth_a + depth_b - 2 * shared."""
    classes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, -1], [1, 0, 0], [1, -1, -1]])
    tree = np.array(
        [  # typed by hand from the picture: 0/0/0, 0/0/1, 0/1, 1/0/0, 1
            [0, 2, 3, 6, 4],
            [2, 0, 3, 6, 4],
            [3, 3, 0, 5, 3],
            [6, 6, 5, 0, 2],
            [4, 4, 3, 2, 0],
        ]
    )
    emb, labels = samples_of(classes, per_class=4, dim=5, seed=1)
    rows, cols = np.triu_indices(len(classes), k=1)
    expected = pearsonr(tree[rows, cols], pdist(normalised_means(emb, labels, classes))).statistic
    assert cpcc(emb, labels) == pytest.approx(expected, abs=1e-10)
    # Hierarchy.tree_distance agrees with the hand-typed matrix.
    hierarchy = Hierarchy.from_array(classes)
    encoded = hierarchy.encode_array(classes).tolist()
    for i, j in zip(rows, cols):
        assert hierarchy.tree_distance(encoded[i], encoded[j]) == tree[i, j]


def test_cpcc_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    emb, labels = samples_of(LEAVES, per_class=3, dim=4, seed=0)
    value = cpcc(emb, labels)
    assert -1.0 <= value <= 1.0
    # Pairs are processed in blocks of rows; small blocks give the same answer.
    monkeypatch.setattr(hierarchy_metrics, "_PAIR_CHUNK", 10)
    assert cpcc(emb, labels) == pytest.approx(value, abs=1e-12)
    # Means are L2-normalised, so a global scale changes nothing; sample order changes nothing.
    assert cpcc(emb * 7.5, labels) == pytest.approx(value, abs=1e-12)
    perm = np.random.default_rng(0).permutation(len(labels))
    assert cpcc(torch.from_numpy(emb[perm]), torch.from_numpy(labels[perm])) == pytest.approx(value, abs=1e-12)
    # Samples unknown at level 0 are ignored.
    extra = np.concatenate([labels, [[-1, -1, -1]]])
    assert cpcc(np.concatenate([emb, np.ones((1, 4))]), extra) == pytest.approx(value, abs=1e-12)


def test_cpcc_is_one_when_mean_distances_follow_the_tree() -> None:
    """2 roots x 2 leaves, mean = root direction * 2 + own direction: every sibling pair is at
    one distance and every cousin pair at a larger one, so distances are affine in the tree."""
    classes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    eye = np.eye(6)
    means = 2.0 * eye[classes[:, 0]] + eye[2 + 2 * classes[:, 0] + classes[:, 1]]
    labels = np.repeat(classes, 3, axis=0)
    emb = np.repeat(means, 3, axis=0)
    assert cpcc(emb, labels) == pytest.approx(1.0, abs=1e-12)
    # Swapping which leaves are siblings makes the embedding contradict the tree.
    assert cpcc(emb, labels[:, ::-1].copy()) < 0


def test_cpcc_undefined_cases_are_nan_and_bad_input_raises() -> None:
    emb = np.random.default_rng(0).standard_normal((6, 3))
    assert math.isnan(cpcc(emb, np.zeros((6, 2), dtype=np.int64)))  # one class
    assert math.isnan(cpcc(emb, np.arange(6)))  # one level: every tree distance is 2
    with pytest.raises(ValueError, match="rows"):
        cpcc(emb, np.zeros((5, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="NaN"):
        cpcc(np.full((6, 3), np.nan), np.arange(6))
    with pytest.raises(ValueError, match="sum to zero"):
        cpcc(np.array([[1.0, 0], [-1.0, 0], [0, 1.0]]), np.array([[0, 0], [0, 0], [0, 1]]))


# ----------------------------------------------------------------------------- mistakes
TARGET = np.array([[0, 0, 0]] * 5)
PREDICTED = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]])
# LCA heights of the predictions: correct, sibling (1), cousin (2), other root (3), cousin (2).


def test_mistake_severity_by_hand() -> None:
    assert mistake_severity(PREDICTED, TARGET) == pytest.approx((1 + 2 + 3 + 2) / 4)
    assert math.isnan(mistake_severity(TARGET, TARGET))
    # (N, k, L) input uses the first prediction only.
    stacked = np.stack([PREDICTED, TARGET], axis=1)
    assert mistake_severity(stacked, TARGET) == mistake_severity(PREDICTED, TARGET)


def test_mistake_severity_with_ragged_labels() -> None:
    target = np.array([[0, 1, -1], [0, 1, -1], [0, -1, -1], [-1, -1, -1]])
    predicted = np.array([[0, 1, 7], [0, 2, 0], [1, 0, 0], [1, 1, 1]])
    # Row 0 agrees on all known levels (no mistake); row 1 climbs 1 level (depth 2 - shared 1);
    # row 2 climbs 1 (depth 1 - shared 0); row 3 has no known target and is skipped.
    assert mistake_severity(predicted, target) == pytest.approx(1.0)


def test_hierarchical_distance_at_k_by_hand_and_against_hierarchy_lca() -> None:
    predicted = np.stack([PREDICTED, PREDICTED[::-1]], axis=1)  # (5, 2, 3)
    heights = np.array([0, 1, 2, 3, 2])
    expected = float(np.mean((heights + heights[::-1]) / 2))
    assert hierarchical_distance_at_k(predicted, TARGET) == pytest.approx(expected)
    assert hierarchical_distance_at_k(PREDICTED, TARGET) == pytest.approx(heights.mean())
    # Independent check on random full-depth labels with Hierarchy.lca (height = L - 1 - lca).
    rng = np.random.default_rng(0)
    leaves = np.array([[r, 2 * r + c, 4 * r + 2 * c + f] for r in range(2) for c in range(2) for f in range(2)])
    hierarchy = Hierarchy.from_array(leaves)
    target = leaves[rng.integers(0, 8, 30)]
    predicted = leaves[rng.integers(0, 8, (30, 4))]
    encoded_t = hierarchy.encode_array(target).tolist()
    encoded_p = hierarchy.encode_array(predicted.reshape(-1, 3)).reshape(30, 4, 3).tolist()
    loop = np.mean([np.mean([3 - 1 - hierarchy.lca(p, t) for p in ps]) for ps, t in zip(encoded_p, encoded_t)])
    assert hierarchical_distance_at_k(predicted, target) == pytest.approx(loop)


def test_nearest_neighbor_predictions() -> None:
    """The documented recipe: labels of the nearest neighbours as predictions."""
    emb, labels = samples_of(LEAVES, per_class=4, dim=8, seed=3)
    _, index = nearest_neighbors(emb, 5)
    severity = mistake_severity(labels[index[:, 0]], labels)
    distance = hierarchical_distance_at_k(labels[index], labels)
    assert 1.0 <= severity <= 3.0
    assert 0.0 <= distance <= 3.0


def test_prediction_shape_errors() -> None:
    with pytest.raises(ValueError, match="samples"):
        mistake_severity(PREDICTED[:4], TARGET)
    with pytest.raises(ValueError, match="levels"):
        hierarchical_distance_at_k(PREDICTED[:, :2], TARGET)
    with pytest.raises(ValueError, match="k = 0"):
        hierarchical_distance_at_k(np.zeros((5, 0, 3), dtype=np.int64), TARGET)
    with pytest.raises(ValueError, match="shape"):
        mistake_severity(np.zeros((5, 1, 1, 3), dtype=np.int64), TARGET)
    with pytest.raises(TypeError):
        mistake_severity(PREDICTED.astype(float), TARGET)
