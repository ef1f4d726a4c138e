"""HierarchicalBatchSampler: sizes, disjoint shards, determinism, coverage; sampler_coverage vs a loop oracle."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from hcl.data import HierarchicalBatchSampler, sampler_coverage
from hcl.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST


def tree_labels(branching: tuple[int, ...], per_leaf: int) -> torch.Tensor:
    """Full tree, leaves in row-major order, ``per_leaf`` samples each. Shape (leaves * per_leaf, L)."""
    leaves = int(np.prod(branching))
    leaf = np.repeat(np.arange(leaves), per_leaf)
    cols, div = [], leaves
    for b in branching:
        div //= b
        cols.append(leaf // div)
    return torch.tensor(np.stack(cols, axis=1))


def ragged_labels(n: int, seed: int) -> torch.Tensor:
    """Random 3-level labels with unequal branching, unknown tails and a few all-unknown rows."""
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 12, n)
    mid = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])[fine]
    top = np.array([0, 0, 1, 1, 2, 2])[mid]
    labels = np.stack([top, mid, fine], axis=1)
    depth = rng.choice([0, 1, 2, 3], size=n, p=[0.03, 0.07, 0.2, 0.7])
    labels[np.arange(3)[None, :] >= depth[:, None]] = -1
    return torch.tensor(labels)


def oracle_coverage(labels: torch.Tensor, batches: list[list[int]]) -> list[float]:
    """Loops straight from the definition in sampler_coverage's docstring."""
    rows = labels.tolist()
    num_levels = len(rows[0])

    def prefix(row: list[int], level: int) -> tuple[int, ...] | None:
        return tuple(row[: level + 1]) if row[level] >= 0 else None

    def partner(i: int, j: int, level: int) -> bool:
        if prefix(rows[i], level) is None or prefix(rows[i], level) != prefix(rows[j], level):
            return False
        if level == num_levels - 1:
            return True
        return prefix(rows[i], level + 1) != prefix(rows[j], level + 1)

    out = []
    for level in range(num_levels):
        eligible = covered = 0
        for batch in batches:
            for pos, i in enumerate(batch):
                if not any(partner(i, j, level) for j in range(len(rows)) if j != i):
                    continue
                eligible += 1
                covered += any(partner(i, j, level) for q, j in enumerate(batch) if q != pos)
        out.append(covered / eligible if eligible else math.nan)
    return out


# ---------------------------------------------------------------------------- sizes and shards
@pytest.mark.parametrize(
    "n, batch_size, replicas, drop_last",
    [
        (1000, 64, 1, True),
        (1000, 64, 1, False),
        (1000, 64, 3, True),
        (1000, 64, 3, False),
        (130, 256, 1, False),
        (130, 256, 1, True),
        (7, 2, 4, False),
        (999, 1, 2, True),
    ],
)
def test_batches_sizes_and_disjoint_equal_shards(n: int, batch_size: int, replicas: int, drop_last: bool) -> None:
    labels = ragged_labels(n, seed=1)
    shards = []
    for rank in range(replicas):
        sampler = HierarchicalBatchSampler(
            labels, batch_size, seed=3, drop_last=drop_last, num_replicas=replicas, rank=rank
        )
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len(b) == batch_size for b in batches[:-1])
        if batches:
            assert len(batches[-1]) == batch_size or (not drop_last and len(batches[-1]) < batch_size)
        shards.append([i for b in batches for i in b])
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1  # equal shards
    every = [i for s in shards for i in s]
    assert len(every) == len(set(every))  # disjoint, no repeats within a rank
    assert all(0 <= i < n for i in every)
    if drop_last:
        assert len(shards[0]) == (n // (batch_size * replicas)) * batch_size
    else:
        assert len(shards[0]) == n // replicas


def test_single_rank_without_drop_last_yields_every_index_once() -> None:
    labels = ragged_labels(777, seed=2)
    batches = list(HierarchicalBatchSampler(labels, 100, drop_last=False))
    assert sorted(i for b in batches for i in b) == list(range(777))
    assert [len(b) for b in batches] == [100] * 7 + [77]


def test_epoch_order_is_a_permutation_shared_by_all_ranks() -> None:
    labels = ragged_labels(500, seed=4)
    a = HierarchicalBatchSampler(labels, 32, num_replicas=2, rank=0)
    b = HierarchicalBatchSampler(labels, 32, num_replicas=2, rank=1)
    a.set_epoch(5)
    b.set_epoch(5)
    assert np.array_equal(a.epoch_order(), b.epoch_order())
    assert np.array_equal(np.sort(a.epoch_order()), np.arange(500))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 300),
    batch_size=st.integers(1, 70),
    replicas=st.integers(1, 4),
    drop_last=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_property_sizes_and_disjointness(n: int, batch_size: int, replicas: int, drop_last: bool, seed: int) -> None:
    labels = ragged_labels(n, seed)
    seen: list[int] = []
    lengths = set()
    for rank in range(replicas):
        sampler = HierarchicalBatchSampler(
            labels, batch_size, seed=seed, drop_last=drop_last, num_replicas=replicas, rank=rank
        )
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len(b) == batch_size for b in (batches if drop_last else batches[:-1]))
        flat = [i for b in batches for i in b]
        lengths.add(len(flat))
        seen += flat
    assert len(lengths) == 1
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(range(n))


# ---------------------------------------------------------------------------- determinism
def test_order_is_reproducible_from_seed_and_epoch() -> None:
    labels = tree_labels((3, 3, 4), 10)

    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = HierarchicalBatchSampler(labels, 40, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 0) == batches(0, 0)
    assert batches(7, 3) == batches(7, 3)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)
    # Unaffected by the global torch / numpy random state.
    torch.manual_seed(123)
    np.random.seed(123)
    assert batches(0, 2) == batches(0, 2)


def _raw_id_labels() -> torch.Tensor:
    labels = ragged_labels(500, 1)
    return torch.where(labels >= 0, labels * 7 + 1000, labels)


# Digests of the batches of epochs 0 and 3, recorded before the construction was sped up (issue
# 16): training runs and studies depend on the exact batches a (seed, epoch) gives.
@pytest.mark.parametrize(
    "make_labels, options, expected",
    [
        (lambda: tree_labels((3, 4, 5), 6), {"batch_size": 32, "seed": 0}, "283dc5abc9b47184"),
        (lambda: ragged_labels(777, 3), {"batch_size": 50, "seed": 5, "drop_last": False}, "cd93cf091e7ea155"),
        (
            lambda: ragged_labels(600, 4),
            {"batch_size": 16, "seed": 2, "num_replicas": 3, "rank": 1, "drop_last": False},
            "6dd0cc3e73be4dc0",
        ),
        (_raw_id_labels, {"batch_size": 64, "seed": 9}, "bd08a047c38f4bef"),
    ],
)
def test_batches_are_unchanged_for_a_seed(make_labels, options: dict, expected: str) -> None:
    sampler = HierarchicalBatchSampler(make_labels(), **options)
    digest = hashlib.sha256()
    for epoch in (0, 3):
        sampler.set_epoch(epoch)
        for batch in sampler:
            digest.update(np.asarray(batch, dtype=np.int64).tobytes())
    assert digest.hexdigest()[:16] == expected


def test_set_epoch_and_arguments_are_validated() -> None:
    labels = tree_labels((2, 2), 4)
    with pytest.raises(ValueError, match="batch_size"):
        HierarchicalBatchSampler(labels, 0)
    with pytest.raises(ValueError, match="rank"):
        HierarchicalBatchSampler(labels, 4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        HierarchicalBatchSampler(labels, 4, num_replicas=0)
    with pytest.raises(ValueError, match="seed"):
        HierarchicalBatchSampler(labels, 4, seed=-1)
    with pytest.raises(ValueError, match="empty"):
        HierarchicalBatchSampler(torch.zeros(0, 2, dtype=torch.int64), 4)
    with pytest.raises(TypeError):
        HierarchicalBatchSampler(labels.float(), 4)
    with pytest.raises(ValueError, match="epoch"):
        HierarchicalBatchSampler(labels, 4).set_epoch(-1)


# ---------------------------------------------------------------------------- coverage
def test_sampler_coverage_matches_loop_oracle() -> None:
    labels = ragged_labels(60, seed=5)
    rng = np.random.default_rng(0)
    batches = [rng.choice(60, size=12, replace=False).tolist() for _ in range(5)]
    batches.append([3, 3, 4])  # a repeated index counts per occurrence
    got = sampler_coverage(labels, batches)
    want = oracle_coverage(labels, batches)
    assert len(got) == 3
    for g, w in zip(got, want):
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w)


def test_sampler_coverage_closed_form_and_degenerate_cases() -> None:
    # Two classes under one parent: level 0 needs the other class, level 1 the same class.
    labels = torch.tensor([[0, 0], [0, 0], [0, 1], [0, 1]])
    assert sampler_coverage(labels, [[0, 2], [1, 3]]) == [1.0, 0.0]
    assert sampler_coverage(labels, [[0, 1], [2, 3]]) == [0.0, 1.0]
    assert sampler_coverage(labels, [[0, 1, 2, 3]]) == [1.0, 1.0]
    # A single child and singleton classes: nobody is eligible anywhere.
    lonely = torch.tensor([[0, 0], [1, 1]])
    assert all(math.isnan(c) for c in sampler_coverage(lonely, [[0, 1]]))
    with pytest.raises(ValueError, match="outside"):
        sampler_coverage(labels, [[0, 4]])


def test_hierarchical_batches_beat_plain_shuffling_on_a_deep_tree() -> None:
    labels = tree_labels((5, 4, 4, 5), 25)  # the synthetic set's default shape, 10,000 samples
    ours = sampler_coverage(labels, list(HierarchicalBatchSampler(labels, 256)))
    shuffled = RandomSampler(range(len(labels)), generator=torch.Generator().manual_seed(0))
    plain_sampler = BatchSampler(shuffled, 256, drop_last=True)
    plain = sampler_coverage(labels, list(plain_sampler))
    assert min(ours) >= 0.95, ours
    assert plain[-1] < 0.6  # the finest level is where plain shuffling fails


def test_coverage_on_the_synthetic_data_set_labels() -> None:
    from hcl.data.synthetic import _leaf_label_rows

    branching = [5, 4, 4, 5]
    labels = torch.from_numpy(np.repeat(_leaf_label_rows(branching), 25, axis=0))
    for epoch in range(2):
        sampler = HierarchicalBatchSampler(labels, 256, seed=1)
        sampler.set_epoch(epoch)
        coverage = sampler_coverage(labels, list(sampler))
        assert min(coverage) >= 0.95, coverage


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_ROOT.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_coverage_on_fashion_mnist_at_batch_256() -> None:
    labels = FashionMNIST(split="train").labels
    coverage = sampler_coverage(labels, list(HierarchicalBatchSampler(labels, 256)))
    assert len(coverage) == 3
    assert min(coverage) >= 0.95, coverage


def test_ragged_and_unlabelled_samples_are_all_used_with_good_coverage() -> None:
    labels = ragged_labels(3000, seed=6)
    batches = list(HierarchicalBatchSampler(labels, 128, drop_last=False))
    assert sorted(i for b in batches for i in b) == list(range(3000))
    assert min(sampler_coverage(labels, batches)) >= 0.9


def test_single_level_and_raw_ids_repeating_under_parents() -> None:
    flat = torch.arange(10).repeat_interleave(6)
    batches = list(HierarchicalBatchSampler(flat, 20))
    assert sampler_coverage(flat, batches) == [1.0]
    # Raw id 0 under parents 0 and 1 names two different classes (prefixes differ).
    labels = torch.tensor([[0, 0]] * 6 + [[1, 0]] * 6 + [[1, 1]] * 6)
    batches = list(HierarchicalBatchSampler(labels, 6, seed=2))
    assert min(sampler_coverage(labels, batches)) >= 0.9
    assert sampler_coverage(labels, [[0, 6]])[1] == 0.0  # (0, 0) and (1, 0) are not the same class


def test_units_keep_siblings_together_in_tiny_batches() -> None:
    # Batch 4 over two classes of one parent: each batch should pair both classes (2 + 2).
    labels = torch.tensor([[0, 0]] * 8 + [[0, 1]] * 8)
    for epoch in range(5):
        sampler = HierarchicalBatchSampler(labels, 4, seed=epoch)
        for batch in sampler:
            assert Counter(labels[batch, 1].tolist()) == {0: 2, 1: 2}


def test_packing_units_into_batches_cuts_fewer_units() -> None:
    from hcl.data.sampler import _pack

    rng = np.random.default_rng(0)
    sizes = rng.choice([16, 17, 8, 4], size=3000, p=[0.6, 0.2, 0.1, 0.1])
    order = rng.permutation(3000)

    def cuts(arrangement: np.ndarray) -> int:
        end = np.cumsum(sizes[arrangement])
        return int(np.sum((end - sizes[arrangement]) // 256 != (end - 1) // 256))

    packed = _pack(order, sizes, 256)
    assert sorted(packed.tolist()) == list(range(3000))  # a permutation of the units
    assert cuts(packed) < 0.75 * cuts(order)
    assert np.array_equal(_pack(order, sizes, 256), packed)
    sizes[::100] = 300  # units larger than a batch are cut, but still placed
    assert sorted(_pack(order, sizes, 256).tolist()) == list(range(3000))


def test_works_as_a_dataloader_batch_sampler() -> None:
    labels = tree_labels((2, 3), 6)
    dataset = TensorDataset(torch.arange(len(labels)), labels)
    loader = DataLoader(dataset, batch_sampler=HierarchicalBatchSampler(labels, 12))
    seen = []
    for index, batch_labels in loader:
        assert index.shape == (12,)
        assert torch.equal(batch_labels, labels[index])
        seen += index.tolist()
    assert len(seen) == len(set(seen)) == 36
