"""Property-based fuzzing of the metrics against float64 loop oracles written from their definitions.

Embeddings come from a small integer grid, so exact ties (collinear vectors, duplicate rows) are
frequent; labels are ragged (``-1``), duplicated, all identical or all distinct, with 1..6 levels.
Every call returns what the oracle computes (NaN exactly where the metric is undefined) or raises
a clear ValueError/TypeError; nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from conftest import FAST
from hypothesis import HealthCheck, assume, given, settings
from reliability.strategies import label_rows

from hcl.metrics import (
    clustering_per_level,
    cpcc,
    hierarchical_distance_at_k,
    knn_accuracy,
    mistake_severity,
    nearest_neighbors,
    per_level_retrieval,
)

# HCL_FAST=1 (make test, CI) tries 120 cases per test, HCL_FAST=0 1000.
FUZZ = settings(max_examples=120 if FAST else 1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def grid_embeddings(num_samples: int, dim: int) -> st.SearchStrategy[np.ndarray]:
    """Small integer vectors, none zero: exact ties between collinear rows are common."""
    vector = st.lists(st.integers(-2, 2), min_size=dim, max_size=dim).filter(any)
    return st.lists(vector, min_size=num_samples, max_size=num_samples).map(lambda r: np.array(r, dtype=np.float64))


@st.composite
def ranked_embeddings(draw: st.DrawFn, num_samples: int, dim: int) -> np.ndarray:
    """Random directions, some rows exact copies of earlier ones (exact ties).

    Distinct directions are continuous: a float32 dot product cannot resolve a tie between two
    different vectors that is exact only in real arithmetic (the metric's quantisation is finer
    than float32 rounding, by design), so such ties are not generated.
    """
    rows = np.random.default_rng(draw(st.integers(0, 2**31))).normal(size=(num_samples, dim))
    for i in range(1, num_samples):
        if draw(st.booleans()):
            rows[i] = rows[draw(st.integers(0, i - 1))]
    # Nor near-ties: in low dimensions two distinct directions can fall closer than float32
    # resolves (a cosine gap of 1e-8), which ranks them as a tie there but not in the oracle.
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    for row in unit @ unit.T:
        values = np.unique(np.round(row, 12))
        assume(values.size < 2 or np.diff(values).min() > 1e-5)
    return rows


def _known_prefix(row: np.ndarray, level: int) -> tuple[int, ...] | None:
    prefix = tuple(int(v) for v in row[: level + 1])
    return None if min(prefix) < 0 else prefix


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ----------------------------------------------------------------------------- retrieval


def oracle_retrieval(
    gallery: np.ndarray, g_labels: np.ndarray, queries: np.ndarray, q_labels: np.ndarray, ks: list[int], loo: bool
) -> dict[int, dict[str, float]]:
    """Per-level retrieval from the definitions, one query and one level at a time."""
    result = {}
    for level in range(g_labels.shape[1]):
        names = ["precision@1", *(f"recall@{k}" for k in ks), "r_precision", "map@r"]
        sums = dict.fromkeys(names, 0.0)
        counted = 0
        for q in range(len(queries)):
            mine = _known_prefix(q_labels[q], level)
            if mine is None:
                continue
            items = []
            for g in range(len(gallery)):
                if loo and g == q:
                    continue
                relevant = _known_prefix(g_labels[g], level) == mine
                # Ties (identical rows) rank the non-relevant item first.
                items.append((-round(_cosine(queries[q], gallery[g]), 9), relevant))
            ranked = [relevant for _, relevant in sorted(items)]
            r = sum(ranked)
            if r == 0:
                continue
            counted += 1
            sums["precision@1"] += ranked[0]
            for k in ks:
                sums[f"recall@{k}"] += any(ranked[:k])
            sums["r_precision"] += sum(ranked[:r]) / r
            hits, precision_sum = 0, 0.0
            for i, relevant in enumerate(ranked[:r], start=1):
                hits += relevant
                precision_sum += hits / i if relevant else 0.0
            sums["map@r"] += precision_sum / r
        result[level] = {name: value / counted if counted else math.nan for name, value in sums.items()}
        result[level]["num_queries"] = counted
    return result


def _assert_same_metrics(actual: dict[int, dict[str, float]], expected: dict[int, dict[str, float]]) -> None:
    assert actual.keys() == expected.keys()
    for level in expected:
        assert actual[level].keys() == expected[level].keys(), (actual[level], expected[level])
        for name, value in expected[level].items():
            got = actual[level][name]
            assert (math.isnan(value) and math.isnan(got)) or math.isclose(got, value, abs_tol=1e-9), (
                f"level {level} {name}: {got} != {value}"
            )


@FUZZ
@given(data=st.data(), num_samples=st.integers(1, 12), num_levels=st.integers(1, 6), dim=st.integers(1, 3))
def test_leave_one_out_retrieval_matches_the_oracle(data, num_samples: int, num_levels: int, dim: int, cases) -> None:
    embeddings = data.draw(ranked_embeddings(num_samples, dim))
    labels = data.draw(label_rows(num_samples, num_levels))
    ks = sorted(set(data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))))
    if ks[-1] > num_samples - 1:
        with pytest.raises(ValueError, match=f"k={ks[-1]} in ks is larger than the {num_samples - 1}"):
            per_level_retrieval(embeddings, labels, ks)
        cases.add("metrics.retrieval", "rejected")
        return
    expected = oracle_retrieval(embeddings, labels, embeddings, labels, ks, loo=True)
    _assert_same_metrics(per_level_retrieval(embeddings, labels, ks), expected)
    # Blocks of one query and float32 input must not change anything.
    _assert_same_metrics(per_level_retrieval(embeddings.astype(np.float32), labels, ks, batch_size=1), expected)
    cases.add("metrics.retrieval", "value")


@FUZZ
@given(data=st.data(), sizes=st.tuples(st.integers(1, 8), st.integers(1, 8)), num_levels=st.integers(1, 6))
def test_query_gallery_retrieval_matches_the_oracle(data, sizes: tuple[int, int], num_levels: int, cases) -> None:
    num_queries, num_gallery = sizes
    dim = data.draw(st.integers(1, 3))
    both = data.draw(ranked_embeddings(num_gallery + num_queries, dim))
    gallery, queries = both[:num_gallery], both[num_gallery:]
    g_labels, q_labels = data.draw(label_rows(num_gallery, num_levels)), data.draw(label_rows(num_queries, num_levels))
    ks = sorted(set(data.draw(st.lists(st.integers(1, num_gallery), min_size=1, max_size=3))))
    expected = oracle_retrieval(gallery, g_labels, queries, q_labels, ks, loo=False)
    actual = per_level_retrieval(gallery, g_labels, ks, query=queries, query_labels=q_labels)
    _assert_same_metrics(actual, expected)
    cases.add("metrics.retrieval", "value")


@FUZZ
@given(data=st.data(), num_samples=st.integers(2, 10), dim=st.integers(1, 3))
def test_nearest_neighbors_are_the_most_similar(data, num_samples: int, dim: int, cases) -> None:
    embeddings = data.draw(grid_embeddings(num_samples, dim))
    k = data.draw(st.integers(1, num_samples - 1))
    sims, index = nearest_neighbors(embeddings, k)
    for q in range(num_samples):
        others = sorted((_cosine(embeddings[q], embeddings[g]) for g in range(num_samples) if g != q), reverse=True)
        assert q not in index[q].tolist()
        np.testing.assert_allclose(sims[q].numpy(), others[:k], atol=1e-6)
        got = [_cosine(embeddings[q], embeddings[g]) for g in index[q].tolist()]
        np.testing.assert_allclose(got, others[:k], atol=1e-6)
    cases.add("metrics.nearest_neighbors", "value")


# ----------------------------------------------------------------------------- hierarchy metrics


def _tree_distance(a: np.ndarray, b: np.ndarray) -> int:
    depth_a, depth_b = int((a >= 0).sum()), int((b >= 0).sum())
    shared = 0
    while shared < min(depth_a, depth_b) and a[shared] == b[shared]:
        shared += 1
    return depth_a + depth_b - 2 * shared


def oracle_cpcc(embeddings: np.ndarray, labels: np.ndarray) -> float:
    classes: dict[tuple[int, ...], list[np.ndarray]] = {}
    for vector, row in zip(embeddings, labels):
        if row[0] >= 0:
            classes.setdefault(tuple(int(v) for v in row), []).append(vector)
    if len(classes) < 2:
        return math.nan
    names = list(classes)
    means = []
    for name in names:
        total = np.sum(classes[name], axis=0)
        if np.linalg.norm(total) == 0:
            raise ValueError("a class mean of zero")
        means.append(total / np.linalg.norm(total))
    tree, dist = [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            tree.append(_tree_distance(np.array(names[i]), np.array(names[j])))
            dist.append(float(np.linalg.norm(means[i] - means[j])))
    tree_a, dist_a = np.array(tree, dtype=np.float64), np.array(dist)
    tree_c, dist_c = tree_a - tree_a.mean(), dist_a - dist_a.mean()
    # A spread at rounding level is no spread: the correlation is undefined there.
    if (tree_c**2).sum() == 0 or (dist_c**2).sum() < 1e-24:
        return math.nan
    return float((tree_c * dist_c).sum() / math.sqrt((tree_c**2).sum() * (dist_c**2).sum()))


@FUZZ
@given(data=st.data(), num_samples=st.integers(1, 12), num_levels=st.integers(1, 6), dim=st.integers(1, 3))
def test_cpcc_matches_the_oracle(data, num_samples: int, num_levels: int, dim: int, cases) -> None:
    embeddings = data.draw(grid_embeddings(num_samples, dim))
    labels = data.draw(label_rows(num_samples, num_levels))
    try:
        expected = oracle_cpcc(embeddings, labels)
    except ValueError:
        with pytest.raises(ValueError, match="sum to zero"):
            cpcc(embeddings, labels)
        cases.add("metrics.cpcc", "rejected")
        return
    actual = cpcc(embeddings, labels)
    same = (math.isnan(expected) and math.isnan(actual)) or math.isclose(actual, expected, abs_tol=1e-9)
    assert same, (actual, expected)
    cases.add("metrics.cpcc", "value")


def _lca_height(predicted: np.ndarray, target: np.ndarray) -> int:
    depth = int((target >= 0).sum())
    shared = 0
    while shared < depth and predicted[shared] == target[shared]:
        shared += 1
    return depth - shared


@FUZZ
@given(data=st.data(), num_samples=st.integers(1, 10), num_levels=st.integers(1, 6), k=st.integers(1, 4))
def test_mistake_severity_and_hierarchical_distance_match_the_oracle(
    data, num_samples: int, num_levels: int, k: int, cases
) -> None:
    target = data.draw(label_rows(num_samples, num_levels))
    predicted = np.stack([data.draw(label_rows(num_samples, num_levels)) for _ in range(k)], axis=1)
    counted = [i for i in range(num_samples) if target[i, 0] >= 0]
    heights = {i: [_lca_height(predicted[i, j], target[i]) for j in range(k)] for i in counted}
    mistakes = [heights[i][0] for i in counted if heights[i][0] > 0]
    severity = float(np.mean(mistakes)) if mistakes else math.nan
    distance = float(np.mean([np.mean(heights[i]) for i in counted])) if counted else math.nan
    for actual, expected in (
        (mistake_severity(predicted, target), severity),
        (hierarchical_distance_at_k(predicted, target), distance),
    ):
        assert (math.isnan(expected) and math.isnan(actual)) or math.isclose(actual, expected, abs_tol=1e-12)
    cases.add("metrics.mistake_severity", "value")


# ----------------------------------------------------------------------------- classification


def oracle_knn(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    k: int,
    weighted: bool,
    temperature: float,
) -> dict[int, float]:
    result = {}
    for level in range(train_labels.shape[1]):
        right = total = 0
        for q in range(len(test)):
            truth = _known_prefix(test_labels[q], level)
            if truth is None:
                continue
            total += 1
            sims = sorted(((_cosine(test[q], train[g]), g) for g in range(len(train))), key=lambda s: -s[0])[:k]
            scores: dict[tuple[int, ...], float] = {}
            first_seen: dict[tuple[int, ...], int] = {}
            for position, (sim, g) in enumerate(sims):
                vote = _known_prefix(train_labels[g], level)
                if vote is not None:
                    scores[vote] = scores.get(vote, 0.0) + (math.exp((sim - 1) / temperature) if weighted else 1.0)
                    first_seen.setdefault(vote, position)
            if scores:
                best = max(scores.values())
                winner = min((c for c, s in scores.items() if s == best), key=first_seen.__getitem__)
                right += winner == truth
        result[level] = right / total if total else math.nan
    return result


@FUZZ
@given(
    data=st.data(),
    sizes=st.tuples(st.integers(1, 10), st.integers(1, 6)),
    num_levels=st.integers(1, 5),
    weighted=st.booleans(),
    temperature=st.sampled_from([0.07, 0.5, 2.0]),
)
def test_knn_accuracy_matches_the_oracle(
    data, sizes, num_levels: int, weighted: bool, temperature: float, cases
) -> None:
    num_train, num_test = sizes
    generator = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    # Continuous embeddings: no two neighbours tie, so the neighbour order is unambiguous.
    train, test = generator.normal(size=(num_train, 3)), generator.normal(size=(num_test, 3))
    train_labels = data.draw(label_rows(num_train, num_levels))
    test_labels = data.draw(label_rows(num_test, num_levels))
    k = data.draw(st.integers(1, num_train))
    expected = oracle_knn(train, train_labels, test, test_labels, k, weighted, temperature)
    actual = knn_accuracy(train, train_labels, test, test_labels, k=k, weighted=weighted, temperature=temperature)
    assert actual.keys() == expected.keys()
    for level, value in expected.items():
        assert (math.isnan(value) and math.isnan(actual[level])) or math.isclose(actual[level], value, abs_tol=1e-12)
    cases.add("metrics.knn_accuracy", "value")


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # duplicate points: fewer clusters
@settings(FUZZ, max_examples=15)
@given(data=st.data(), num_samples=st.integers(2, 12), num_levels=st.integers(1, 4))
def test_clustering_scores_are_finite_and_in_range(data, num_samples: int, num_levels: int, cases) -> None:
    embeddings = data.draw(grid_embeddings(num_samples, 3))
    labels = data.draw(label_rows(num_samples, num_levels))
    result = clustering_per_level(embeddings, labels, num_init=1)
    for level in range(num_levels):
        known = [_known_prefix(row, level) for row in labels if _known_prefix(row, level) is not None]
        if not known:
            assert level not in result
            continue
        scores = result[level]
        assert scores["num_samples"] == len(known) and scores["num_classes"] == len(set(known))
        assert 0.0 <= scores["nmi"] <= 1.0 + 1e-12 and math.isfinite(scores["ami"]) and scores["ami"] <= 1.0 + 1e-12
    cases.add("metrics.clustering", "value")


# ----------------------------------------------------------------------------- bad inputs

junk_embeddings = st.sampled_from(
    [
        np.zeros((3, 2)),
        np.full((3, 2), np.nan),
        np.array([[1.0, np.inf], [1.0, 0.0], [0.0, 1.0]]),
        np.ones((3,)),
        np.ones((3, 2, 1)),
        np.ones((0, 2)),
        np.ones((3, 0)),
        np.array([["a", "b"]] * 3),
        np.ones((3, 2), dtype=complex),
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        [[1, 0], [0, 1], [1, 1]],
        "embeddings",
        None,
    ]
)
junk_labels = st.sampled_from(
    [
        np.array([[0, 1], [0, -1], [1, 0]]),
        np.array([[0, -1], [-1, 1], [1, 0]]),
        np.array([[0], [1]]),
        np.array([[0.5, 1], [0, 1], [1, 0]]),
        np.array([[-2, 0], [0, 0], [1, 0]]),
        np.zeros((3, 0), dtype=np.int64),
        [[0, 1], [0, 0], [1, 0]],
        "labels",
        None,
    ]
)
junk_ks = st.sampled_from([1, 2, (1, 2), 0, -1, 5, (), (1, True), 1.5, "1", None])


@FUZZ
@given(
    embeddings=junk_embeddings,
    labels=junk_labels,
    ks=junk_ks,
    which=st.sampled_from(["retrieval", "cpcc", "knn", "neighbors", "severity", "clustering"]),
)
def test_any_input_gives_a_value_or_a_clear_error(embeddings, labels, ks, which: str, cases) -> None:
    calls = {
        "retrieval": lambda: per_level_retrieval(embeddings, labels, ks),
        "cpcc": lambda: cpcc(embeddings, labels),
        "knn": lambda: knn_accuracy(embeddings, labels, embeddings, labels, k=ks),
        "neighbors": lambda: nearest_neighbors(embeddings, ks),
        "severity": lambda: mistake_severity(labels, labels),
        "clustering": lambda: clustering_per_level(embeddings, labels, num_init=1),
    }
    try:
        result = calls[which]()
    except (ValueError, TypeError) as error:
        assert str(error), "an error without a message"
        cases.add("metrics.bad_input", "rejected")
        return
    values = [result] if isinstance(result, float) else _numbers(result)
    assert all(isinstance(v, (int, float)) and not math.isinf(v) for v in values), result
    cases.add("metrics.bad_input", "value")


def _numbers(result: Any) -> list[float]:
    if isinstance(result, dict):
        return [v for value in result.values() for v in _numbers(value)]
    if isinstance(result, tuple):
        return [float(v) for t in result for v in t.flatten().tolist()]
    return [float(result)]
