"""Held-out classes: the seen-sibling rule, the training subset, and heldout_metrics against a
float64 loop oracle, random embeddings (chance) and planted embeddings (1.0)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hcl import Hierarchy
from hcl.labels import prefix_ids
from hcl.metrics import (
    check_heldout_classes,
    choose_unseen_classes,
    heldout_metrics,
    seen_training_indices,
    seen_unseen_split,
    transfer_accuracy,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny problems

# Fashion-MNIST's tree (Seo & Shin 2019): four categories have a single class.
FASHION_PATHS = [
    ("clothes", "bottoms", "Trouser"),
    ("clothes", "dresses", "Dress"),
    ("clothes", "outers", "Coat"),
    ("clothes", "tops", "Pullover"),
    ("clothes", "tops", "Shirt"),
    ("clothes", "tops", "T-shirt/top"),
    ("goods", "accessories", "Bag"),
    ("goods", "shoes", "Ankle boot"),
    ("goods", "shoes", "Sandal"),
    ("goods", "shoes", "Sneaker"),
]
FASHION = Hierarchy.from_paths(FASHION_PATHS, level_names=["group", "category", "class"])
FASHION_LABELS = FASHION.encode(FASHION_PATHS).repeat(3, 1)
ONLY_CHILDREN = {"Trouser", "Dress", "Coat", "Bag"}


def balanced(per_class: int, branching: tuple[int, ...]) -> np.ndarray:
    """Every leaf of a full tree ``per_class`` times, leaves in order."""
    leaves = np.stack(np.meshgrid(*[np.arange(b) for b in branching], indexing="ij"), axis=-1)
    return np.repeat(leaves.reshape(-1, len(branching)), per_class, axis=0)


def planted(labels: np.ndarray) -> np.ndarray:
    """One one-hot block per level for the sample's label prefix: samples sharing more levels
    are strictly more similar, so every metric is perfect."""
    ids = prefix_ids(torch.from_numpy(labels)).numpy()
    blocks = [np.eye(ids[:, level].max() + 1)[ids[:, level]] for level in range(ids.shape[1])]
    return np.concatenate(blocks, axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- oracle
def _prefix(row: np.ndarray, level: int) -> tuple[int, ...] | None:
    return tuple(row[: level + 1].tolist()) if row[level] >= 0 else None


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)


def oracle_report(train_x, train_y, test_x, test_y, heldout, level_h):
    """The metrics of each group straight from the definitions, with 1-NN classifiers, in float64."""
    train_x, test_x = _unit(train_x), _unit(test_x)

    def under(row: np.ndarray) -> bool:
        return any(tuple(row[: len(c)].tolist()) == tuple(c) for c in heldout)

    seen_ref = [j for j in range(len(train_y)) if not under(train_y[j])]
    groups = {
        "heldout": [i for i in range(len(test_y)) if under(test_y[i])],
        "seen": [i for i in range(len(test_y)) if not under(test_y[i])],
    }
    num_levels = train_y.shape[1]
    report = {}
    for group, queries in groups.items():
        retrieval, ancestor, own = {}, {}, {}
        for level in range(num_levels):
            p1, aps = [], []
            for i in queries:
                others = [j for j in range(len(test_y)) if j != i]
                order = sorted(others, key=lambda j: -float(test_x[i] @ test_x[j]))
                rel = [_prefix(test_y[j], level) == _prefix(test_y[i], level) for j in order]
                big_r = sum(rel)
                if big_r == 0:
                    continue
                p1.append(float(rel[0]))
                hits, ap = 0, 0.0
                for rank in range(big_r):
                    if rel[rank]:
                        hits += 1
                        ap += hits / (rank + 1)
                aps.append(ap / big_r)
            retrieval[str(level)] = {"map@r": np.mean(aps), "precision@1": np.mean(p1), "num_queries": len(p1)}
            reference = seen_ref if level < level_h else list(range(len(train_y)))
            correct = []
            for i in queries:
                nearest = max(reference, key=lambda j: float(test_x[i] @ train_x[j]))
                correct.append(_prefix(train_y[nearest], level) == _prefix(test_y[i], level))
            (ancestor if level < level_h else own)[str(level)] = np.mean(correct)
        report[group] = {
            "num_test": len(queries),
            "retrieval": retrieval,
            "ancestor_knn_accuracy": ancestor,
            "knn_accuracy": own,
        }
    return report


def assert_close(actual, expected, path=""):
    if isinstance(expected, dict):
        assert set(actual) == set(expected), path
        for key in expected:
            assert_close(actual[key], expected[key], f"{path}/{key}")
    else:
        assert actual == pytest.approx(expected, abs=1e-9), path


# ----------------------------------------------------------------------------- the rule
def test_check_accepts_classes_with_seen_siblings_by_name_or_prefix() -> None:
    assert check_heldout_classes(FASHION_LABELS, ["Sneaker", "Shirt"], hierarchy=FASHION) == [(0, 3, 4), (1, 5, 9)]
    assert check_heldout_classes(FASHION_LABELS, [(1, 5, 9), [0, 3, 4]]) == [(0, 3, 4), (1, 5, 9)]
    assert check_heldout_classes(FASHION_LABELS, [(1, 5, -1)]) == [(1, 5)]  # trailing -1 ignored
    # A whole category with a single class is fine: its parent keeps other categories.
    assert check_heldout_classes(FASHION_LABELS, ["dresses"], hierarchy=FASHION) == [(0, 1)]
    assert check_heldout_classes(FASHION_LABELS, [1]) == [(1,)]  # a root, next to another root


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["Dress"], r"held-out class 'Dress' \(0, 1, 1\) is the only child of 'dresses' \(0, 1\)"),
        (["Sneaker", "Bag"], r"'Bag' \(1, 4, 6\) is the only child of 'accessories' \(1, 4\)"),
        (["Pullover", "Shirt", "T-shirt/top"], r"holding out all of 'Pullover'.*leaves 'tops' \(0, 3\) with no seen"),
        (["clothes", "goods"], r"leaves the root with no seen child"),
        (["Loafer"], r"unknown held-out class 'Loafer'"),
        (["shoes", "Sneaker"], r"'Sneaker' \(1, 5, 9\) lies under held-out class 'shoes' \(1, 5\)"),
        (["Sneaker", (1, 5, 9)], r"'Sneaker' \(1, 5, 9\) is given twice"),
        ([], "empty"),
        ([(0, -2)], "not a label prefix"),
    ],
)
def test_check_rejects_classes_that_break_the_protocol(classes, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_heldout_classes(FASHION_LABELS, classes, hierarchy=FASHION)


def test_check_needs_samples_names_need_a_hierarchy() -> None:
    without_sneakers = FASHION_LABELS[FASHION_LABELS[:, 2] != 9]
    with pytest.raises(ValueError, match=r"'Sneaker' \(1, 5, 9\) has no sample in labels"):
        check_heldout_classes(without_sneakers, ["Sneaker"], hierarchy=FASHION)
    with pytest.raises(ValueError, match=r"\(0, 1, 1\) is the only child of \(0, 1\)"):
        check_heldout_classes(FASHION_LABELS, [(0, 1, 1)])  # no hierarchy: prefixes in the message
    with pytest.raises(ValueError, match="names need a hierarchy"):
        check_heldout_classes(FASHION_LABELS, ["Sneaker"])
    with pytest.raises(TypeError, match="list of classes"):
        check_heldout_classes(FASHION_LABELS, "Sneaker", hierarchy=FASHION)
    with pytest.raises(ValueError, match=r"'shoes' \(1, 5\) is at level 1, not at level 2"):
        check_heldout_classes(FASHION_LABELS, ["shoes"], hierarchy=FASHION, level=-1)
    assert check_heldout_classes(FASHION_LABELS, ["shoes"], hierarchy=FASHION, level=1) == [(1, 5)]
    with pytest.raises(ValueError, match="out of range"):
        check_heldout_classes(FASHION_LABELS, ["shoes"], hierarchy=FASHION, level=3)
    repeated = Hierarchy.from_paths([("a", "a"), ("a", "b"), ("c", "d")])
    with pytest.raises(ValueError, match="node at levels"):
        check_heldout_classes(repeated.encode([("a", "a"), ("a", "b"), ("c", "d")]), ["a"], hierarchy=repeated)


def test_choose_never_holds_out_an_only_child() -> None:
    chosen_ever = set()
    for seed in range(40):
        for count in (1, 2, 3, 4):  # 10 classes - 6 categories = 4 allowed
            chosen = choose_unseen_classes(FASHION_LABELS, count=count, seed=seed)
            assert len(chosen) == count and check_heldout_classes(FASHION_LABELS, chosen) == chosen
            chosen_ever |= {FASHION.nodes(2)[c[-1]] for c in chosen}
    assert chosen_ever == {"Pullover", "Shirt", "T-shirt/top", "Ankle boot", "Sandal", "Sneaker"}
    assert chosen_ever.isdisjoint(ONLY_CHILDREN)
    with pytest.raises(ValueError, match=r"count must be an int in 1\.\.4"):
        choose_unseen_classes(FASHION_LABELS, count=5)
    categories = choose_unseen_classes(FASHION_LABELS, count=4, level=1, seed=0)  # 6 - 2 groups
    assert check_heldout_classes(FASHION_LABELS, categories) == categories


def test_seen_training_indices_keep_the_seen_samples_only() -> None:
    labels = np.concatenate([FASHION_LABELS.numpy(), [[0, 3, -1], [1, -1, -1], [-1, -1, -1]]])
    keep = seen_training_indices(labels, ["Sneaker", "Shirt"], hierarchy=FASHION)
    seen, _ = seen_unseen_split(labels, [(0, 3, 4), (1, 5, 9)])
    assert keep.dtype == np.int64 and keep.tolist() == np.flatnonzero(seen).tolist()
    kept = labels[keep]
    assert not ((kept[:, 2] == 9) | (kept[:, 2] == 4)).any()
    # Samples that may belong to a held-out class ((0, 3, -1), (1, -1, -1), unlabelled) are dropped.
    assert len(keep) == len(FASHION_LABELS) - 6
    with pytest.raises(ValueError, match="'Dress'.*only child of 'dresses'"):
        seen_training_indices(labels, ["Dress"], hierarchy=FASHION)


# ----------------------------------------------------------------------------- heldout_metrics
TREE = (3, 3, 3)


def split_data(seed: int, dim: int = 24):
    rng = np.random.default_rng(seed)
    train_y, test_y = balanced(20, TREE), balanced(20, TREE)
    train_x = rng.standard_normal((len(train_y), dim)).astype(np.float32)
    test_x = rng.standard_normal((len(test_y), dim)).astype(np.float32)
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("heldout", [[(1, 2, 0)], [(0, 1, 2), (2, 0, 0)], [(1, 2)]])
def test_heldout_metrics_match_a_loop_oracle(heldout) -> None:
    rng = np.random.default_rng(1)
    train_y, test_y = balanced(4, TREE), balanced(3, TREE)
    # Clustered but noisy, so that the metrics are neither 0 nor 1.
    train_x = planted(train_y) + rng.standard_normal((len(train_y), 39)).astype(np.float32)
    test_x = planted(test_y) + rng.standard_normal((len(test_y), 39)).astype(np.float32)
    report = heldout_metrics(train_x, train_y, test_x, test_y, heldout, k=1)
    level_h = len(heldout[0]) - 1
    assert report["heldout_classes"] == [list(c) for c in sorted(heldout)]
    assert report["heldout_level"] == level_h and report["k"] == 1
    expected = oracle_report(train_x, train_y, test_x, test_y, heldout, level_h)
    assert_close({group: report[group] for group in ("heldout", "seen")}, expected)


@pytest.mark.parametrize("heldout", [[(1, 2, 0)], [(0, 1, 2), (2, 0, 0)]])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_embeddings_score_chance(heldout, seed: int) -> None:
    """Chance: ancestor 1/3 and 1/9, own class 1/27, precision@1 about 1/3, 1/9, 1/27. A reference
    set or gallery restricted to the held-out classes would score 1.0 everywhere."""
    report = heldout_metrics(*split_data(seed), heldout, k=10)
    for group in ("heldout", "seen"):
        values = report[group]
        assert values["ancestor_knn_accuracy"]["0"] < 0.6 and values["ancestor_knn_accuracy"]["1"] < 0.3, values
        assert values["knn_accuracy"]["2"] < 0.2, values
        precision = [values["retrieval"][str(level)]["precision@1"] for level in range(3)]
        map_r = [values["retrieval"][str(level)]["map@r"] for level in range(3)]
        assert precision[0] < 0.6 and precision[1] < 0.3 and precision[2] < 0.2, values
        assert map_r[0] < 0.25 and map_r[1] < 0.1 and map_r[2] < 0.1, values


def test_planted_embedding_scores_one() -> None:
    _, train_y, _, test_y = split_data(0)
    report = heldout_metrics(planted(train_y), train_y, planted(test_y), test_y, [(0, 1, 2), (2, 0, 0)], k=10)
    for group in ("heldout", "seen"):
        values = report[group]
        assert values["ancestor_knn_accuracy"] == {"0": 1.0, "1": 1.0}
        assert values["knn_accuracy"] == {"2": 1.0}
        for level in "012":
            assert values["retrieval"][level]["precision@1"] == 1.0
            assert values["retrieval"][level]["map@r"] == pytest.approx(1.0)


def test_a_heldout_class_placed_away_from_its_parent_fails_only_the_ancestor_metric() -> None:
    """Held-out images on their own axis (plus noise): their class is still recognisable among
    all training images, but nothing puts them under the right parent."""
    rng = np.random.default_rng(3)
    _, train_y, _, test_y = split_data(0)
    heldout = [(0, 1, 2), (2, 0, 0)]

    def embed(labels: np.ndarray) -> np.ndarray:
        x = np.concatenate([planted(labels), np.zeros((len(labels), 2), np.float32)], axis=1)
        for axis, cls in enumerate(heldout):
            rows = (labels == cls).all(axis=1)
            x[rows] = 0.3 * rng.standard_normal((rows.sum(), x.shape[1]))
            x[rows, -2 + axis] = 3.0
        return x

    report = heldout_metrics(embed(train_y), train_y, embed(test_y), test_y, heldout, k=10)
    assert report["heldout"]["knn_accuracy"]["2"] == 1.0
    assert report["heldout"]["ancestor_knn_accuracy"]["1"] < 0.3
    assert report["seen"]["ancestor_knn_accuracy"] == {"0": 1.0, "1": 1.0}


def test_knn_accuracy_at_the_heldout_level_is_transfer_accuracy() -> None:
    rng = np.random.default_rng(2)
    _, train_y, _, test_y = split_data(0)
    train_x = planted(train_y) + 0.8 * rng.standard_normal((len(train_y), 39)).astype(np.float32)
    test_x = planted(test_y) + 0.8 * rng.standard_normal((len(test_y), 39)).astype(np.float32)
    report = heldout_metrics(train_x, train_y, test_x, test_y, [(1, 2, 0)], k=7)
    transfer = transfer_accuracy(train_x, train_y, test_x, test_y, [(1, 2, 0)], k=7)
    assert report["heldout"]["knn_accuracy"]["2"] == transfer["unseen"][2]
    assert report["seen"]["knn_accuracy"]["2"] == transfer["seen"][2]


def test_report_is_json_ready_and_names_classes() -> None:
    labels = FASHION_LABELS.repeat(4, 1).numpy()
    x = planted(labels) + 0.1 * np.random.default_rng(0).standard_normal((len(labels), 18)).astype(np.float32)
    report = heldout_metrics(x, labels, x[:60], labels[:60], ["Sneaker", "Shirt"], hierarchy=FASHION, k=5)
    assert report["heldout_class_names"] == ["Shirt", "Sneaker"]
    assert json.loads(json.dumps(report)) == report
    assert list(report) == ["heldout_classes", "heldout_class_names", "heldout_level", "k", "heldout", "seen"]
    assert report["heldout"]["num_test"] == 12 and report["seen"]["num_test"] == 48
    assert list(report["heldout"]["ancestor_knn_accuracy"]) == ["0", "1"]
    assert report["heldout"]["retrieval"]["2"]["num_queries"] == 12


def test_heldout_metrics_reject_a_broken_protocol() -> None:
    train_x, train_y, test_x, test_y = split_data(0)
    with pytest.raises(ValueError, match="at one level"):
        heldout_metrics(train_x, train_y, test_x, test_y, [(0, 1), (2, 0, 0)])
    seen_only = ~(train_y == (2, 0, 0)).all(axis=1)
    with pytest.raises(ValueError, match=r"\(2, 0, 0\) has no sample in labels"):  # the training split must keep them
        heldout_metrics(train_x[seen_only], train_y[seen_only], test_x, test_y, [(2, 0, 0)])
    no_heldout = ~(test_y == (2, 0, 0)).all(axis=1)
    with pytest.raises(ValueError, match="no heldout image"):
        heldout_metrics(train_x, train_y, test_x[no_heldout], test_y[no_heldout], [(2, 0, 0)])
    with pytest.raises(ValueError, match="dimension"):
        heldout_metrics(train_x, train_y, test_x[:, :5], test_y, [(2, 0, 0)])
    unknown = test_y.copy()
    unknown[:, 2] = -1  # no test image known at the held-out level: every test image is ambiguous
    with pytest.raises(ValueError, match="no heldout image"):
        heldout_metrics(train_x, train_y, test_x, unknown, [(2, 0, 0)])


def test_root_level_heldout_has_no_ancestor_metric() -> None:
    train_x, train_y, test_x, test_y = split_data(0)
    report = heldout_metrics(train_x, train_y, test_x, test_y, [(1,)], k=5)
    assert report["heldout_level"] == 0 and report["heldout"]["ancestor_knn_accuracy"] == {}
    assert list(report["heldout"]["knn_accuracy"]) == ["0", "1", "2"]
    assert not any(math.isnan(v) for v in report["heldout"]["knn_accuracy"].values())
