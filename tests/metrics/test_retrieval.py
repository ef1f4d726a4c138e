"""per_level_retrieval against pytorch-metric-learning, a float64 loop oracle and hand-worked cases."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import hcl.metrics._ranked_rows as ranked_rows
import hcl.metrics._retrieval_engine as retrieval_engine
from hcl import Hierarchy
from hcl.labels import prefix_ids, shared_prefix_length
from hcl.metrics import PML_METRIC_NAMES, nearest_neighbors, per_level_retrieval, retrieval_table

METRICS = ("precision@1", "r_precision", "map@r")
PML_NAMES = {name: PML_METRIC_NAMES[name] for name in METRICS}  # the library's table, checked against PML


# ----------------------------------------------------------------------------- data and oracle
def ragged_labels(n: int, branching: tuple[int, ...], seed: int, unknown: float = 0.0) -> np.ndarray:
    """Raw ids that repeat under different parents; a fraction stops early (-1 below)."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, b, n) for b in branching], axis=1)
    if unknown:
        depth = np.where(rng.random(n) < unknown, rng.integers(0, len(branching), n), len(branching))
        labels[np.arange(len(branching))[None, :] >= depth[:, None]] = -1
    return labels


def clustered(labels: np.ndarray, dim: int, seed: int, scale: float = 0.6) -> np.ndarray:
    """Random points pulled towards their class prefixes, so metrics are far from 0 and 1."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((len(labels), dim))
    ids = prefix_ids(torch.from_numpy(labels)).numpy()
    for level in range(labels.shape[1]):
        centres = rng.standard_normal((ids[:, level].max() + 2, dim)) * scale
        emb += np.where(ids[:, level, None] >= 0, centres[ids[:, level]], 0.0)
    return emb.astype(np.float32)


def smallest_mixed_gap(emb, labels, query=None, query_labels=None) -> float:
    """Smallest nonzero similarity gap between neighbours of a query that differ in relevance.

    float32 similarities are only good to about 1e-7, so two items closer than that may be
    ranked either way by two correct implementations; comparisons need data without such pairs.
    """
    g = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    loo = query is None
    q = g if loo else query.astype(np.float64) / np.linalg.norm(query, axis=1, keepdims=True)
    q_labels = labels if loo else query_labels
    sims = q @ g.T
    shared = shared_prefix_length(torch.from_numpy(q_labels)[:, None, :], torch.from_numpy(labels)[None]).numpy()
    smallest = np.inf
    for i in range(len(q)):
        keep = np.arange(len(g)) != i if loo else slice(None)
        order = np.argsort(sims[i][keep])
        values, codes = sims[i][keep][order], shared[i][keep][order]
        gaps = np.diff(values)[codes[1:] != codes[:-1]]
        gaps = gaps[gaps > 0]
        if len(gaps):
            smallest = min(smallest, float(gaps.min()))
    return smallest


def tie_free(
    n: int, branching: tuple[int, ...], dim: int, seed: int, unknown: float = 0.0, split: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and clustered embeddings redrawn until no near-tie (< 1e-6) can swap a hit."""
    for attempt in range(50):
        labels = ragged_labels(n, branching, seed + 1000 * attempt, unknown)
        emb = clustered(labels, dim, seed + 1000 * attempt)
        if split is None:
            gap = smallest_mixed_gap(emb, labels)
        else:
            gap = smallest_mixed_gap(emb[:split], labels[:split], emb[split:], labels[split:])
        if gap > 1e-6:
            return emb, labels
    raise AssertionError("could not draw tie-free data")


def oracle(emb, labels, ks, query=None, query_labels=None, only=None) -> dict[int, dict[str, float]]:
    """Loop oracle in float64 straight from the definitions; ties broken against the query.
    ``only``: leave-one-out queries restricted to these indices."""
    g = np.asarray(emb, dtype=np.float64)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    loo = query is None
    q = g if loo else np.asarray(query, dtype=np.float64) / np.linalg.norm(query, axis=1, keepdims=True)
    q_labels = labels if loo else query_labels
    num_levels = labels.shape[1]
    result = {}
    for level in range(num_levels):
        per_query = []
        for i in range(len(q)) if only is None else only:
            mine = tuple(q_labels[i, : level + 1])
            if min(mine) < 0:
                continue
            items = []
            for j in range(len(g)):
                if loo and j == i:
                    continue
                relevant = tuple(labels[j, : level + 1]) == mine
                # Sort by similarity, non-relevant first among equal similarities.
                items.append((-float(q[i] @ g[j]), relevant))
            items.sort()
            rel = [r for _, r in items]
            big_r = sum(rel)
            if big_r == 0:
                continue
            hits, ap = 0, 0.0
            for pos in range(big_r):
                if rel[pos]:
                    hits += 1
                    ap += hits / (pos + 1)
            row = {"precision@1": float(rel[0]), "r_precision": hits / big_r, "map@r": ap / big_r}
            row.update({f"recall@{k}": float(any(rel[:k])) for k in ks})
            per_query.append(row)
        if per_query:
            result[level] = {key: float(np.mean([r[key] for r in per_query])) for key in per_query[0]}
        else:
            result[level] = {key: math.nan for key in ("precision@1", "r_precision", "map@r")}
        result[level]["num_queries"] = len(per_query)
    return result


def assert_close(ours: dict, expected: dict, tol: float = 1e-9) -> None:
    assert sorted(ours) == sorted(expected)
    for level in expected:
        for key, value in expected[level].items():
            got = ours[level][key]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(got), (level, key, got)
            else:
                assert got == pytest.approx(value, abs=tol), (level, key, got, value)


def pml_level(emb, ids, level, query=None, query_ids=None) -> dict[str, float]:
    """PML's AccuracyCalculator on one level's prefix ids (unknown gallery items: unique ids)."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=tuple(PML_NAMES.values()), k=None, device=torch.device("cpu"))
    g = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    # An unknown label matches nothing: give each such item its own negative id.
    g_ids = ids[:, level].astype(np.float64).copy()
    g_unknown = g_ids < 0
    g_ids[g_unknown] = -1.0 - np.arange(g_unknown.sum())
    if query is None:
        known = ids[:, level] >= 0
        order = np.concatenate([np.flatnonzero(known), np.flatnonzero(~known)])
        acc = calc.get_accuracy(g[known], g_ids[known], g[order], g_ids[order], ref_includes_query=True)
    else:
        q = query / np.linalg.norm(query, axis=1, keepdims=True)
        known = query_ids[:, level] >= 0
        acc = calc.get_accuracy(q[known], query_ids[known, level].astype(np.float64), g, g_ids)
    return {ours: acc[theirs] for ours, theirs in PML_NAMES.items()}


# ----------------------------------------------------------------------------- against PML
@pytest.mark.parametrize("seed", range(3))
def test_leave_one_out_matches_pytorch_metric_learning(seed: int) -> None:
    emb, labels = tie_free(120, (2, 3, 4), dim=5, seed=seed, unknown=0.2)
    result = per_level_retrieval(emb, labels)
    ids = prefix_ids(torch.from_numpy(labels)).numpy()
    for level in range(3):
        expected = pml_level(emb, ids, level)
        for metric in METRICS:
            assert result[level][metric] == pytest.approx(expected[metric], abs=1e-6), (level, metric)
    # At least one level skipped queries (unknown labels), so num_queries is below N there.
    assert result[2]["num_queries"] < 120


@pytest.mark.parametrize("seed", range(2))
def test_query_gallery_matches_pytorch_metric_learning(seed: int) -> None:
    emb, labels = tie_free(200, (3, 3), dim=5, seed=seed, unknown=0.15, split=120)
    gallery, query = emb[:120], emb[120:]
    g_labels, q_labels = labels[:120], labels[120:]
    result = per_level_retrieval(gallery, g_labels, query=query, query_labels=q_labels, ks=(1, 4))
    ids = prefix_ids(torch.from_numpy(labels)).numpy()
    for level in range(2):
        expected = pml_level(gallery, ids[:120], level, query=query, query_ids=ids[120:])
        for metric in METRICS:
            assert result[level][metric] == pytest.approx(expected[metric], abs=1e-6), (level, metric)


# ----------------------------------------------------------------------------- against the oracle
@pytest.mark.parametrize("seed", range(3))
def test_matches_loop_oracle_with_ties_and_ragged_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    emb, labels = tie_free(90, (2, 2, 3), dim=4, seed=seed, unknown=0.25)
    # Exact duplicates create exact ties, between items of the same and of different classes.
    copies = rng.integers(0, 90, 25)
    emb = np.concatenate([emb, emb[copies]])
    labels = np.concatenate([labels, ragged_labels(25, (2, 2, 3), seed + 100, unknown=0.25)])
    ks = (1, 2, 5)
    assert_close(per_level_retrieval(emb, labels, ks=ks), oracle(emb, labels, ks))


def test_query_mode_matches_loop_oracle() -> None:
    emb, labels = tie_free(120, (2, 3), dim=3, seed=5, unknown=0.2, split=100)
    emb[100:110] = emb[:10]  # queries tied with gallery items
    ks = (1, 3)
    result = per_level_retrieval(emb[:100], labels[:100], query=emb[100:], query_labels=labels[100:], ks=ks)
    assert_close(result, oracle(emb[:100], labels[:100], ks, query=emb[100:], query_labels=labels[100:]))


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_query_indices_match_loop_oracle(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """Leave-one-out over a selection: the selected samples query all the others, as in the
    full leave-one-out (ties with duplicates, ragged labels, unsorted indices)."""
    rng = np.random.default_rng(11)
    emb, labels = tie_free(90, (2, 2, 3), dim=4, seed=11, unknown=0.25)
    emb = np.concatenate([emb, emb[:15]])
    labels = np.concatenate([labels, ragged_labels(15, (2, 2, 3), 111, unknown=0.25)])
    chosen = rng.permutation(len(emb))[:37]
    if engine == "torch":
        monkeypatch.setattr(retrieval_engine, "numpy_block_sums", retrieval_engine.torch_block_sums)
    ks = (1, 4)
    result = per_level_retrieval(emb, labels, ks=ks, query_indices=chosen, batch_size=16)
    assert_close(result, oracle(emb, labels, ks, only=sorted(chosen)))
    everyone = per_level_retrieval(emb, labels, ks=ks, query_indices=torch.from_numpy(rng.permutation(len(emb))))
    assert_close(everyone, per_level_retrieval(emb, labels, ks=ks), tol=1e-12)


def separated_or_mixed(n: int, branching: tuple[int, ...], seed: int, coarse_scale: float) -> tuple:
    """Data for the long-row engine: exact ties (duplicates, within and across classes),
    one-sample finest classes, unknowns, coarse classes well apart or not; no near-ties."""
    for attempt in range(50):
        rng = np.random.default_rng(seed + 1000 * attempt)
        labels = ragged_labels(n, branching, seed + 1000 * attempt, unknown=0.2)
        if labels.shape[1] > 1:
            labels[np.flatnonzero(labels[:, -1] >= 0)[:3], -1] = 50 + np.arange(3)
        emb = clustered(labels, dim=8, seed=seed + 1000 * attempt)
        top = prefix_ids(torch.from_numpy(labels)).numpy()[:, 0]
        emb[:, 0] += coarse_scale * np.where(top >= 0, top, 0)
        if smallest_mixed_gap(emb[: n - 12], labels[: n - 12]) > 1e-6:
            emb[n - 12 :] = emb[rng.integers(0, n - 12, 12)]
            return emb, labels
    raise AssertionError("could not draw data without near-ties")


def assert_modes_match_oracle(emb: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 4)) -> None:
    """Leave-one-out (two batch sizes), query mode (the last 30 items against the first 100) and
    a selection of every 7th query, each equal to the loop oracle."""
    for batch_size in (1, 16):
        assert_close(per_level_retrieval(emb, labels, ks=ks, batch_size=batch_size), oracle(emb, labels, ks))
    query, query_labels = emb[100:], labels[100:]
    result = per_level_retrieval(emb[:100], labels[:100], query=query, query_labels=query_labels, ks=ks)
    assert_close(result, oracle(emb[:100], labels[:100], ks, query=query, query_labels=query_labels))
    chosen = np.arange(0, 130, 7)
    result = per_level_retrieval(emb, labels, ks=ks, query_indices=chosen, batch_size=4)
    assert_close(result, oracle(emb, labels, ks, only=list(chosen)))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("coarse_scale", [0.0, 4.0])
@pytest.mark.parametrize("branching", [(2, 3, 2), (2,), (3, 4)])
def test_long_row_engine_matches_loop_oracle(
    monkeypatch: pytest.MonkeyPatch, seed: int, coarse_scale: float, branching: tuple[int, ...]
) -> None:
    """The sampled selection and the coarsest level's tail (used for rows of >= 32k items), forced
    on small rows: leave-one-out, query mode and a selection, with ties and one-sample classes."""
    monkeypatch.setattr(ranked_rows, "_LONG_ROW", 1)
    monkeypatch.setattr(ranked_rows, "_SAMPLE_STRIDE", 3)
    emb, labels = separated_or_mixed(130, branching, seed, coarse_scale)
    assert_modes_match_oracle(emb, labels)


@pytest.mark.parametrize("low", [None, -5, 40])
@pytest.mark.parametrize("count", [1, 7, 60, 500])
def test_smallest_sorted_keys(monkeypatch: pytest.MonkeyPatch, low: int | None, count: int) -> None:
    monkeypatch.setattr(ranked_rows, "_LONG_ROW", 1)
    rng = np.random.default_rng(count)
    keys = rng.integers(-100, 100, 300).astype(np.int32)
    keys[::32] = -100  # the sample sees only the smallest keys: its first bound is too low
    kept = np.sort(keys if low is None else keys[keys >= low])[:count]
    assert np.array_equal(ranked_rows._smallest_sorted(keys.copy(), count, low), kept)


def test_torch_engine_matches_numpy_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The accelerator code path, run on the CPU, gives the same numbers as the CPU engine."""
    labels = ragged_labels(200, (2, 3, 2), 7, unknown=0.3)
    emb = clustered(labels, dim=4, seed=7)
    emb[150:170] = emb[:20]
    expected = per_level_retrieval(emb, labels, ks=(1, 3, 9), batch_size=64)
    expected_q = per_level_retrieval(emb[:120], labels[:120], query=emb[120:], query_labels=labels[120:])
    monkeypatch.setattr(retrieval_engine, "numpy_block_sums", retrieval_engine.torch_block_sums)
    assert_close(per_level_retrieval(emb, labels, ks=(1, 3, 9), batch_size=64), expected, tol=1e-12)
    assert_close(
        per_level_retrieval(emb[:120], labels[:120], query=emb[120:], query_labels=labels[120:]),
        expected_q,
        tol=1e-12,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    emb, labels = tie_free(150, (2, 3, 4), dim=16, seed=4, unknown=0.2)
    emb[120:140] = emb[:20]  # exact duplicates: ties must break the same way on both devices
    expected = per_level_retrieval(emb, labels, ks=(1, 5))
    got = per_level_retrieval(torch.from_numpy(emb).cuda(), labels, ks=(1, 5), batch_size=64)
    assert_close(got, expected, tol=1e-9)
    got_q = per_level_retrieval(emb[:100], labels[:100], query=emb[100:], query_labels=labels[100:], device="cuda")
    assert_close(got_q, per_level_retrieval(emb[:100], labels[:100], query=emb[100:], query_labels=labels[100:]))


def test_many_levels_use_wide_keys() -> None:
    """More than 31 levels switch to 64-bit sort keys; the numbers still match the oracle."""
    emb, base = tie_free(60, (2, 3), dim=3, seed=11, unknown=0.2)
    labels = np.repeat(base, 17, axis=1)  # 34 levels: each label repeated (a chain hierarchy)
    assert retrieval_engine.KeyLayout.for_levels(34).np_dtype == np.int64
    result = per_level_retrieval(emb, labels, ks=(1, 4))
    expected = oracle(emb, labels[:, [0, 17]], (1, 4))
    for level in range(34):
        assert_close({0: result[level]}, {0: expected[0 if level < 17 else 1]})


# ----------------------------------------------------------------------------- hand-worked cases
def angles(*degrees: float) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_hand_worked_map_at_r() -> None:
    """A query at 0 degrees; gallery at 10, 20, 30, 40 degrees with fine classes A, B, A, A.

    Level 0: one root, all four relevant, MAP@R = 1. Level 1 (query in A): R = 3 and the As
    rank 1, 3 and 4, so the top 3 holds hits at ranks 1 and 3:
    MAP@R = (1/1 + 2/3) / 3, R-precision = 2/3, precision@1 = 1.
    """
    query = angles(0)
    gallery = angles(10, 20, 30, 40)
    g_labels = np.array([[0, 0], [0, 1], [0, 0], [0, 0]])
    result = per_level_retrieval(gallery, g_labels, query=query, query_labels=np.array([[0, 0]]), ks=(1, 2))
    assert result[0]["map@r"] == pytest.approx(1.0)
    assert result[1]["precision@1"] == 1.0
    assert result[1]["r_precision"] == pytest.approx(2 / 3)
    assert result[1]["map@r"] == pytest.approx((1 + 2 / 3) / 3)
    assert result[1]["recall@2"] == 1.0


def test_ties_are_broken_against_the_query() -> None:
    """A relevant and a non-relevant item at exactly the same similarity: the non-relevant wins."""
    query = angles(0)
    gallery = angles(30, 30, 60)  # items 0 and 1 are the same point
    g_labels = np.array([[1], [0], [0]])  # item 0 non-relevant, item 1 relevant
    result = per_level_retrieval(gallery, g_labels, query=query, query_labels=np.array([[0]]), ks=(1, 2))
    # Ranks: non-relevant 1, relevant 2 and 3; R = 2.
    assert result[0]["precision@1"] == 0.0
    assert result[0]["recall@2"] == 1.0
    assert result[0]["r_precision"] == pytest.approx(0.5)
    assert result[0]["map@r"] == pytest.approx((1 / 2) / 2)
    # The gallery order does not matter.
    flipped = per_level_retrieval(
        gallery[[1, 0, 2]], g_labels[[1, 0, 2]], query=query, query_labels=np.array([[0]]), ks=(1, 2)
    )
    assert flipped == result


def test_queries_without_relevant_items_or_labels_are_skipped() -> None:
    emb = angles(0, 5, 90, 95, 180, 270)
    labels = np.array([[0, 0], [0, 0], [1, 5], [1, -1], [2, 0], [-1, -1]])
    result = per_level_retrieval(emb, labels, ks=(1,))
    # Level 0: samples 0-3 have a partner; sample 4 (root 2) is alone; sample 5 is unknown.
    assert result[0]["num_queries"] == 4
    assert result[0]["precision@1"] == 1.0
    # Level 1: only samples 0 and 1 share a prefix; 2 is alone; 3 is unknown; 4 alone.
    assert result[1]["num_queries"] == 2
    # Unknown gallery items still take ranks: sample 5 (270 deg) is never relevant.
    only_alone = per_level_retrieval(emb[[4, 5]], labels[[4, 5]], ks=(1,))
    assert only_alone[0]["num_queries"] == 0
    assert all(math.isnan(only_alone[0][m]) for m in METRICS)


def test_gallery_items_unknown_at_a_level_rank_but_never_match() -> None:
    query = angles(0)
    gallery = angles(10, 20)
    g_labels = np.array([[0, -1], [0, 3]])  # nearest one is unknown at level 1
    result = per_level_retrieval(gallery, g_labels, query=query, query_labels=np.array([[0, 3]]), ks=(1, 2))
    assert result[0]["precision@1"] == 1.0
    assert result[1]["precision@1"] == 0.0
    assert result[1]["map@r"] == 0.0
    assert result[1]["recall@2"] == 1.0


# ----------------------------------------------------------------------------- properties
def hierarchy_consistent_embeddings(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """One block of one-hot coordinates per level, weights decreasing with depth."""
    ids = prefix_ids(torch.from_numpy(labels)).numpy()
    blocks = []
    for level, weight in enumerate((4.0, 2.0, 1.0)[: labels.shape[1]]):
        blocks.append(np.eye(ids[:, level].max() + 1)[ids[:, level]] * weight)
    emb = np.concatenate(blocks, axis=1)
    return (emb + noise * np.random.default_rng(seed).standard_normal(emb.shape)).astype(np.float32)


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_perfect_embeddings_score_one_everywhere(noise: float) -> None:
    labels = ragged_labels(240, (2, 3, 4), 3)
    result = per_level_retrieval(hierarchy_consistent_embeddings(labels, noise, 3), labels)
    for level in range(3):
        for key, value in result[level].items():
            if key != "num_queries":
                assert value == pytest.approx(1.0), (level, key)


def test_random_embeddings_score_chance() -> None:
    """Random directions: the top R holds R/(N-1) relevant items on average at each level."""
    n = 1200
    labels = ragged_labels(n, (2, 3), 0)
    emb = np.random.default_rng(1).standard_normal((n, 32)).astype(np.float32)
    result = per_level_retrieval(emb, labels, ks=(1, 10))
    ids = prefix_ids(torch.from_numpy(labels)).numpy()
    for level in range(2):
        sizes = np.bincount(ids[:, level])[ids[:, level]]
        chance = float(np.mean((sizes - 1) / (n - 1)))
        assert result[level]["precision@1"] == pytest.approx(chance, abs=0.05)
        assert result[level]["r_precision"] == pytest.approx(chance, abs=0.02)
        # Random recall@10: 1 - (1 - p)^10 for a same-class fraction p.
        recall_chance = float(np.mean(1 - (1 - (sizes - 1) / (n - 1)) ** 10))
        assert result[level]["recall@10"] == pytest.approx(recall_chance, abs=0.05)
        assert result[level]["map@r"] < result[level]["r_precision"] + 0.01


def test_batch_size_and_gallery_order_do_not_change_results() -> None:
    emb, labels = tie_free(150, (2, 3), dim=3, seed=2, unknown=0.2)
    emb[100:130] = emb[:30]
    base = per_level_retrieval(emb, labels, ks=(1, 5))
    assert_close(per_level_retrieval(emb, labels, ks=(1, 5), batch_size=1), base, tol=1e-12)
    assert_close(per_level_retrieval(emb, labels, ks=(1, 5), batch_size=17), base, tol=1e-12)
    perm = np.random.default_rng(0).permutation(150)
    shuffled = per_level_retrieval(emb[perm], labels[perm], ks=(1, 5))
    assert_close(shuffled, base, tol=1e-12)
    # Scaling the embeddings does not matter (cosine similarity); torch input is accepted.
    scaled = per_level_retrieval(torch.from_numpy(emb) * 3.0, torch.from_numpy(labels), ks=(1, 5))
    assert_close(scaled, base, tol=1e-12)


def test_ks_are_sorted_and_deduplicated() -> None:
    labels = ragged_labels(50, (2,), 0)
    emb = clustered(labels, 3, 0)
    result = per_level_retrieval(emb, labels, ks=[5, 1, 5])
    assert list(result[0]) == ["precision@1", "recall@1", "recall@5", "r_precision", "map@r", "num_queries"]
    single = per_level_retrieval(emb, labels, ks=3)[0]
    assert [k for k in single if k.startswith("recall")] == ["recall@3"]
    assert result[0]["recall@1"] <= single["recall@3"] <= result[0]["recall@5"]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embeddings": np.full((4, 2), np.nan, np.float32)}, "NaN"),
        ({"embeddings": np.array([[1, 0], [0, np.inf], [1, 1], [0, 1]], np.float32)}, "row 1"),
        ({"embeddings": np.zeros((0, 2), np.float32), "labels": np.zeros((0, 1), np.int64)}, "empty"),
        ({"embeddings": np.ones((4, 2, 1), np.float32)}, "shape"),
        ({"labels": np.zeros((3, 1), np.int64)}, "3 rows"),
        ({"embeddings": np.array([[1, 0], [0, 0], [1, 1], [0, 1]], np.float32)}, "row 1 is all zeros"),
        ({"ks": (1, 4)}, "k=4"),
        ({"ks": (0,)}, "positive"),
        ({"ks": ()}, "at least one"),
        ({"batch_size": 0}, "batch_size"),
        ({"query": np.ones((2, 2), np.float32)}, "query_labels"),
        ({"query_labels": np.zeros((2, 1), np.int64)}, "query"),
        ({"query": np.ones((2, 3), np.float32), "query_labels": np.zeros((2, 1), np.int64)}, "dimension"),
        ({"query": np.ones((2, 2), np.float32), "query_labels": np.zeros((3, 1), np.int64)}, "rows"),
        ({"query": np.ones((2, 2), np.float32), "query_labels": np.zeros((2, 2), np.int64)}, "levels"),
        (
            {"query": np.ones((2, 2), np.float32), "query_labels": np.zeros((2, 1), np.int64), "query_indices": [0]},
            "cannot be combined",
        ),
        ({"query_indices": [0, 4]}, r"query_indices\[1\] = 4 is outside 0..3"),
        ({"query_indices": [-1]}, r"query_indices\[0\] = -1"),
        ({"query_indices": [2, 0, 2]}, "repeats 2"),
        ({"query_indices": [0.0, 1.0]}, "integers"),
        ({"query_indices": []}, "non-empty 1-D"),
        ({"query_indices": [[0, 1]]}, "non-empty 1-D"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs: dict, message: str) -> None:
    args = {
        "embeddings": np.array([[1, 0], [0, 1], [1, 1], [-1, 1]], np.float32),
        "labels": np.array([[0], [0], [1], [1]]),
        "ks": (1,),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        per_level_retrieval(**args)


def test_query_mode_allows_k_up_to_gallery_size_and_labels_are_checked_against_hierarchy() -> None:
    emb = angles(0, 10, 20)
    labels = np.array([[0, 0], [0, 1], [1, 2]])
    per_level_retrieval(emb, labels, query=emb[:1], query_labels=labels[:1], ks=(3,))
    with pytest.raises(ValueError, match="k=3"):
        per_level_retrieval(emb, labels, ks=(3,))
    hierarchy = Hierarchy.from_paths([("a", "x"), ("a", "y"), ("b", "z")])
    per_level_retrieval(emb, labels, hierarchy=hierarchy, ks=(1,))
    with pytest.raises(ValueError, match="not a child"):
        per_level_retrieval(emb, np.array([[0, 0], [0, 2], [1, 2]]), hierarchy=hierarchy, ks=(1,))


def test_labels_must_be_integers() -> None:
    with pytest.raises(TypeError):
        per_level_retrieval(angles(0, 10), np.array([[0.5], [1.0]]), ks=(1,))


# ----------------------------------------------------------------------------- table and neighbours
def test_retrieval_table_names_levels() -> None:
    labels = ragged_labels(60, (2, 3), 0)
    result = per_level_retrieval(clustered(labels, 3, 0), labels, ks=(1, 5))
    hierarchy = Hierarchy.from_array(labels, level_names=["category", "item"])
    table = retrieval_table(result, hierarchy)
    assert list(table.index) == ["category", "item"]
    assert table.index.name == "level"
    assert list(table.columns) == ["precision@1", "recall@1", "recall@5", "r_precision", "map@r", "num_queries"]
    assert table.loc["item", "map@r"] == result[1]["map@r"]
    assert table["num_queries"].dtype == np.int64
    assert list(retrieval_table(result).index) == ["level0", "level1"]
    assert list(retrieval_table(result, level_names=["a", "b"]).index) == ["a", "b"]
    with pytest.raises(ValueError, match="level names"):
        retrieval_table(result, level_names=["a"])


def test_nearest_neighbors_leave_one_out_and_query() -> None:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 5)).astype(np.float32)
    sims, idx = nearest_neighbors(emb, 3, batch_size=7)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_array_equal(idx.numpy(), np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(sims.numpy(), np.sort(full, axis=1)[:, ::-1][:, :3], atol=1e-6)
    _, idx_q = nearest_neighbors(emb[:30], 30, query=emb[30:])
    assert idx_q.shape == (10, 30)
    with pytest.raises(ValueError, match="k=40"):
        nearest_neighbors(emb, 40)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbors(emb, 0)


# ----------------------------------------------------------------------------- compiled and array-op rows
@pytest.fixture(params=["compiled", "arrays"])
def cpu_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both CPU row engines: the compiled rows with their bounds taken from a sample even in small
    rows (every 3rd key), and the array-op rows they replace where numba is missing."""
    if request.param == "compiled":
        compiled = retrieval_engine.compiled_rows()
        if compiled is None:
            pytest.skip("needs numba")
        monkeypatch.setattr(compiled, "_SAMPLE_STRIDE", 3)
        monkeypatch.setattr(compiled, "_MIN_SAMPLES", 4)
    else:
        monkeypatch.setattr(retrieval_engine, "compiled_rows", lambda: None)
    return request.param


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("coarse_scale", [0.0, 4.0])
@pytest.mark.parametrize("branching", [(2, 3, 2), (2,), (3, 4)])
def test_cpu_row_engines_match_loop_oracle(cpu_rows: str, seed: int, coarse_scale: float, branching: tuple) -> None:
    """Leave-one-out, query mode and a selection, with exact ties, one-sample classes, unknown
    labels, coarse classes apart or mixed (the coarsest level's R above or below the others')."""
    emb, labels = separated_or_mixed(130, branching, seed, coarse_scale)
    assert_modes_match_oracle(emb, labels)
    # k as large as what a query can retrieve: every rank is sorted.
    assert_close(per_level_retrieval(emb, labels, ks=(1, 129)), oracle(emb, labels, (1, 129)))


def crafted_block(num_levels: int, seed: int, stride: int) -> tuple:
    """A gallery in path order and scaled similarities with exact ties (keys on a coarse grid,
    within and across classes) where every ``stride``-th item is the most similar: a sample of
    those items puts every bound far too low, so the compiled rows must widen them."""
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(ragged_labels(300, (2, 3, 2)[:num_levels], seed, unknown=0.1))
    plan = retrieval_engine.RankingPlan(labels, labels, leave_one_out=True)
    layout = retrieval_engine.KeyLayout.for_levels(num_levels)
    sims = rng.integers(-40, 40, (len(labels), len(labels))) * float(2**layout.code_bits)
    sims[:, ::stride] = -1e3 * 2**layout.code_bits - np.arange(len(sims))[:, None] % 3
    return sims.astype(np.float32), plan, layout


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("num_levels", [1, 3])
def test_compiled_rows_widen_bounds_a_sample_got_wrong(monkeypatch: pytest.MonkeyPatch, seed: int, num_levels: int):
    """The compiled rows and the array-op rows (tested against the oracle above) agree exactly on
    rows whose sample misleads every bound, with and without the coarsest level's tail."""
    compiled = retrieval_engine.compiled_rows()
    if compiled is None:
        pytest.skip("needs numba")
    monkeypatch.setattr(compiled, "_SAMPLE_STRIDE", 5)
    monkeypatch.setattr(compiled, "_MIN_SAMPLES", 4)
    sims, plan, layout = crafted_block(num_levels, seed, stride=5)
    ks = (1, 3, 7)
    harmonic = np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, len(sims)))))
    context = retrieval_engine._Context(plan, layout, ks, len(sims) - 1, harmonic)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for engine in ("compiled", "arrays"):
            if engine == "arrays":
                monkeypatch.setattr(retrieval_engine, "compiled_rows", lambda: None)
            buffers = retrieval_engine._Buffers.allocate(len(sims), len(sims), layout)
            sums, counts = retrieval_engine.numpy_block_sums(torch.from_numpy(sims), 0, context, pool, buffers)
            if engine == "compiled":
                expected = sums, counts
    np.testing.assert_array_equal(counts, expected[1])
    np.testing.assert_allclose(sums, expected[0], rtol=1e-12, atol=1e-12)
    assert counts[0] > 250 and sums[0, 2] < counts[0]  # queries counted, tail ranks mixed


def test_compiled_rows_match_array_rows_and_ignore_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows long enough for the default sample (3,000 items), four levels: the same numbers as the
    array-op rows, bit for bit the same on one thread and on two."""
    if retrieval_engine.compiled_rows() is None:
        pytest.skip("needs numba")
    labels = ragged_labels(3000, (2, 3, 4, 5), 3, unknown=0.05)
    emb = clustered(labels, dim=16, seed=3)
    emb[2900:] = emb[:100]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = per_level_retrieval(emb, labels, ks=(1, 10), batch_size=500)
        torch.set_num_threads(2)
        two = per_level_retrieval(emb, labels, ks=(1, 10), batch_size=500)
    finally:
        torch.set_num_threads(previous)
    assert one == two
    monkeypatch.setattr(retrieval_engine, "compiled_rows", lambda: None)
    assert_close(per_level_retrieval(emb, labels, ks=(1, 10), batch_size=500), one, tol=1e-12)
