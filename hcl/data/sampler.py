"""Hierarchy-aware batch composition: every level of the label tree gets positives in each batch.

The reference implementation (Zhang et al., "Use All The Labels", CVPR 2022) draws, for every
anchor, one partner per level by rebuilding a set difference of the unvisited indices, which is
O(N^2) per epoch. :class:`HierarchicalBatchSampler` reaches the same goal with a few sorts:

1. Samples are grouped by their finest known label and cut, in random order, into *pairs*
   (a triple when the group is odd, a single when the label has one sample).
2. Level by level, bottom up, the units under each node are merged two by two so that the two
   halves come from *different* children: the node's units are laid out child after child (in a
   random child order) and unit ``t`` is joined with unit ``t + M // 2`` ("folding" the list), which
   never joins two units of the same child unless one child holds more than half of the units.
   Nodes with a single child pass their units up unchanged.
3. The resulting coarsest units (about ``2**L`` samples for a full binary split) are shuffled,
   packed so that few straddle a batch boundary (a unit that does not fit the current batch's
   room waits for a batch it fits), and laid out contiguously, each unit's sub-units contiguous
   too, so a batch boundary through a unit keeps most finer sub-units whole. Batches are
   consecutive runs of ``batch_size`` indices, dealt round-robin to the ranks.

Every step is a sort or a scan over at most N items, so an epoch costs O(N log N).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from hcl.labels import as_label_tensor, prefix_ids

__all__ = ["HierarchicalBatchSampler", "sampler_coverage"]


class HierarchicalBatchSampler(Sampler[list[int]]):
    """Batches in which, at every level, samples have partners sharing their label prefix.

    Yields lists of dataset indices (use it as a DataLoader's ``batch_sampler``). For each level l,
    a batch is composed so that as many samples as the data allows have a partner that shares
    their label prefix at level l but differs at level l + 1, and a partner sharing their finest
    label; :func:`sampler_coverage` measures this. The order is a deterministic function of
    ``(seed, epoch)``; call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``.

    Sizes and sharding: every batch holds exactly ``batch_size`` indices, and no index repeats
    within an epoch on a rank. With ``drop_last=True`` each rank gets
    ``N // (batch_size * num_replicas)`` batches; the unused tail of the shuffled order changes
    every epoch. With ``drop_last=False`` each rank gets ``N // num_replicas`` indices (the
    ``N % num_replicas`` left over are skipped this epoch, so that shards stay disjoint and equal),
    the last batch possibly short. Ranks receive disjoint shards of equal length.

    Degenerate cases: a label with one sample gives that sample no finest-level partner; a node
    with one child gives its samples no partner at its level (none exists); samples whose labels
    are all unknown (-1) are shuffled in as singletons.

    Args:
        labels: hierarchical labels, validated by :func:`hcl.labels.as_label_tensor`.
        batch_size: indices per batch.
        seed: base seed; the epoch's order depends only on ``(seed, epoch)``.
        drop_last: drop the incomplete last batch (and any samples it would hold).
        num_replicas: number of ranks (DistributedDataParallel world size).
        rank: this rank, in ``0..num_replicas-1``.

    Shape:
        labels: (N, L) int64, column 0 coarsest, -1 unknown (or (N,) for L = 1).
    """

    def __init__(
        self,
        labels: Any,
        batch_size: int,
        *,
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        labels = as_label_tensor(labels).cpu()
        if labels.shape[0] == 0:
            raise ValueError("HierarchicalBatchSampler needs at least one sample, got empty labels")
        for name, value, low in (("batch_size", batch_size, 1), ("num_replicas", num_replicas, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in 0..{num_replicas - 1}, got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._plan = _LeafGroups(prefix_ids(labels).numpy())

    @property
    def num_samples(self) -> int:
        """N, the number of samples the sampler draws from."""
        return self._plan.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, tail = self._shard_sizes()
        return full + (1 if tail else 0)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.epoch_order()
        full, tail = self._shard_sizes()
        step = self.batch_size * self.num_replicas
        blocks = order[: full * step].reshape(full, self.num_replicas, self.batch_size)
        yield from blocks[:, self.rank, :].tolist()
        if tail:
            start = full * step + self.rank * tail
            yield order[start : start + tail].tolist()

    def epoch_order(self) -> np.ndarray:
        """The whole epoch's arrangement of all N indices, before sharding (same on every rank).

        Shape:
            Returns (N,) int64, a permutation of ``0..N-1``.
        """
        rng = np.random.default_rng([self.seed, self.epoch])
        return self._plan.arrange(rng, self.batch_size)

    def _shard_sizes(self) -> tuple[int, int]:
        """(full batches per rank, size of this rank's short last batch or 0)."""
        n, b, r = self.num_samples, self.batch_size, self.num_replicas
        if self.drop_last:
            return n // (b * r), 0
        per_rank = n // r
        return per_rank // b, per_rank % b


def sampler_coverage(labels: Any, batches: Iterable[Sequence[int]]) -> list[float]:
    """Per-level fraction of samples that have a useful partner in their batch.

    For a level l < L-1, a sample is *covered* when its batch holds another sample that shares its
    label prefix at level l but differs at level l + 1 (a positive at level l that is not a
    positive at level l + 1; a sample that stops at level l differs from one that goes deeper).
    At the finest level L-1, a sample is covered when its batch holds another sample with the same
    finest label. Only *eligible* samples count: those known at level l for which such a partner
    exists somewhere in ``labels`` (a label with one sample, or a node with a single child, cannot
    be covered by any sampler). Each occurrence of an index in ``batches`` counts once; indices
    left out of every batch do not count.

    Args:
        labels: hierarchical labels of the whole data set.
        batches: lists of indices into ``labels`` (e.g. the output of a batch sampler).

    Returns:
        ``coverage[l]`` = covered / eligible for each level l, ``nan`` where none is eligible.

    Shape:
        labels: (N, L) int64.
    """
    labels = as_label_tensor(labels).cpu()
    n, num_levels = labels.shape
    batch_list = [np.asarray(b, dtype=np.int64).reshape(-1) for b in batches]
    index = np.concatenate(batch_list) if batch_list else np.zeros(0, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= n):
        bad = int(index[(index < 0) | (index >= n)][0])
        raise ValueError(f"batches hold index {bad}, outside 0..{n - 1}")
    batch_of = np.repeat(np.arange(len(batch_list)), [len(b) for b in batch_list])
    prefix = prefix_ids(labels).numpy()
    sizes = [int(prefix[:, lv].max()) + 1 for lv in range(num_levels)]
    coverage = []
    for lv in range(num_levels):
        own = prefix[:, lv]
        if lv + 1 < num_levels:
            # A dense id of the level-(lv+1) node, or of "stops at lv", under this level-lv node.
            stops = np.where(own >= 0, sizes[lv + 1] + own, -1)
            finer = np.where(prefix[:, lv + 1] >= 0, prefix[:, lv + 1], stops)
            eligible = (own >= 0) & (_group_counts(own) > _group_counts(finer))
            wide = batch_of * (sizes[lv] + 1) + own[index] + 1
            narrow = batch_of * (sizes[lv + 1] + sizes[lv] + 1) + finer[index] + 1
            covered = _group_counts(wide) > _group_counts(narrow)
        else:
            eligible = (own >= 0) & (_group_counts(own) > 1)
            covered = _group_counts(batch_of * (sizes[lv] + 1) + own[index] + 1) > 1
        counted = eligible[index]
        total = int(counted.sum())
        coverage.append(float((covered & counted).sum()) / total if total else math.nan)
    return coverage


def _group_counts(keys: np.ndarray) -> np.ndarray:
    """For each entry, how many entries share its key."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


class _LeafGroups:
    """The epoch-independent part of the arrangement: samples grouped by their finest label."""

    def __init__(self, prefix: np.ndarray) -> None:
        n, num_levels = prefix.shape
        self.prefix = prefix
        self.num_samples = n
        self.num_levels = num_levels
        depth = (prefix >= 0).sum(axis=1)
        self.level_sizes = [int(prefix[:, lv].max()) + 1 for lv in range(num_levels)]
        offsets = np.concatenate([[0], np.cumsum(self.level_sizes)])
        deepest = np.take_along_axis(prefix, np.maximum(depth - 1, 0)[:, None], axis=1)[:, 0]
        # Unlabelled samples (depth 0) each get a group of their own.
        group = np.where(depth > 0, offsets[np.maximum(depth - 1, 0)] + deepest, offsets[-1] + np.arange(n))
        self.by_group = np.argsort(group, kind="stable")
        sorted_group = group[self.by_group]
        starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
        self.group_starts = starts
        self.group_sizes = np.diff(np.r_[starts, n])
        self.sorted_group_index = np.repeat(np.arange(len(starts)), self.group_sizes)
        self.group_depth = depth[self.by_group[starts]]

    def arrange(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """One epoch's order: see the module docstring for the construction."""
        n = self.num_samples
        group = self.sorted_group_index
        # Shuffle inside each group: sort by (group, uniform key in [0, 1)).
        within = self.by_group[np.argsort(group + rng.random(n))]
        rank = np.arange(n) - self.group_starts[group]
        size = self.group_sizes[group]
        # Pairs of the same finest label; an odd group's last sample joins the previous pair.
        local = np.minimum(rank // 2, np.maximum(size // 2 - 1, 0))
        unit_first_flag = np.r_[True, (group[1:] != group[:-1]) | (local[1:] != local[:-1])]
        unit_of_position = np.cumsum(unit_first_flag) - 1
        unit_first = np.flatnonzero(unit_first_flag)
        rep = within[unit_first]
        level = self.group_depth[group[unit_first]] - 1
        sizes = [np.diff(np.r_[unit_first, n])]
        merges: list[np.ndarray] = []
        for lv in range(self.num_levels - 2, -1, -1):
            unit_map, rep, level = self._merge_level(lv, rep, level, rng)
            merges.append(unit_map)
            sizes.append(np.bincount(unit_map, weights=sizes[-1], minlength=len(rep)).astype(np.int64))
        # Lay the coarsest units out in random order, packed into batches, then each unit's parts
        # inside it, down to pairs.
        top = _pack(rng.permutation(len(rep)), sizes[-1], batch_size)
        start = np.empty(len(rep), dtype=np.int64)
        start[top] = _exclusive_cumsum(sizes[-1][top])
        for stage in range(len(merges) - 1, -1, -1):
            start = _place_parts(start, merges[stage], sizes[stage])
        position = start[unit_of_position] + (np.arange(n) - unit_first[unit_of_position])
        order = np.empty(n, dtype=np.int64)
        order[position] = within
        return order

    def _merge_level(
        self, lv: int, rep: np.ndarray, level: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Merge the units under each level-``lv`` node two by two across different children.

        Units are described by a representative sample ``rep`` (all their samples share its label
        prefix down to ``level``) and the ``level`` of the node they currently stand for. Returns
        the map old unit -> new unit and the new units' ``rep`` and ``level``.
        """
        num_units = len(rep)
        part = np.flatnonzero(level >= lv)
        if len(part) == 0:
            return np.arange(num_units), rep, level
        parent = self.prefix[rep[part], lv]
        child = self.prefix[rep[part], lv + 1]
        # A random rank per child node; samples that stop at ``lv`` form a pseudo-child (-1).
        child_rank = np.r_[-1, rng.permutation(self.level_sizes[lv + 1])][child + 1]
        key = parent * (self.level_sizes[lv + 1] + 1) + child_rank + 1
        shuffled = rng.permutation(len(part))
        order = shuffled[_stable_argsort(key[shuffled])]
        p_sorted, c_sorted = parent[order], child[order]
        seg_first = np.r_[True, p_sorted[1:] != p_sorted[:-1]]
        seg = np.cumsum(seg_first) - 1
        seg_starts = np.flatnonzero(seg_first)
        total = np.diff(np.r_[seg_starts, len(order)])
        child_first = seg_first | np.r_[True, c_sorted[1:] != c_sorted[:-1]]
        num_children = np.bincount(seg, weights=child_first, minlength=len(seg_starts)).astype(np.int64)
        t = np.arange(len(order)) - seg_starts[seg]
        half = total // 2
        single = num_children[seg] == 1
        h = np.maximum(half[seg], 1)
        # Fold: position t joins t + M // 2; an odd M's last unit joins the first pair.
        folded = np.where(t < h, t, (t - h) % h)
        q = np.where(single, t, folded)
        new_per_seg = np.where(num_children == 1, total, half)
        new_per_seg = np.maximum(new_per_seg, 1)
        seg_offset = _exclusive_cumsum(new_per_seg)
        num_merged = int(new_per_seg.sum())
        unit_map = np.empty(num_units, dtype=np.int64)
        unit_map[part[order]] = seg_offset[seg] + q
        rest = np.flatnonzero(level < lv)
        unit_map[rest] = num_merged + np.arange(len(rest))
        num_new = num_merged + len(rest)
        new_rep = np.empty(num_new, dtype=np.int64)
        new_rep[unit_map] = rep
        new_level = np.empty(num_new, dtype=np.int64)
        new_level[unit_map[part]] = lv
        new_level[unit_map[rest]] = level[rest]
        return unit_map, new_rep, new_level


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for non-negative integer keys, as 16-bit keys when they
    fit: NumPy radix-sorts those in linear time (a stable order is unique, so the result is the
    same)."""
    if len(keys) and keys.min() >= 0 and keys.max() < 1 << 16:
        keys = keys.astype(np.uint16)
    return np.argsort(keys, kind="stable")


def _exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values), dtype=np.int64)
    np.cumsum(values[:-1], out=out[1:])
    return out


def _place_parts(parent_start: np.ndarray, parent_of: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Start positions of units laid out contiguously inside their parents (in id order)."""
    order = _stable_argsort(parent_of)
    parents = parent_of[order]
    offset = _exclusive_cumsum(sizes[order])
    first = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
    base = np.repeat(offset[first], np.diff(np.r_[first, len(order)]))
    start = np.empty(len(parent_of), dtype=np.int64)
    start[order] = parent_start[parents] + offset - base
    return start


def _pack(order: np.ndarray, sizes: np.ndarray, batch_size: int, max_waiting: int = 64) -> np.ndarray:
    """Reorder units (given in random order) so that few of them straddle a batch boundary.

    Units are placed in order; one that does not fit in the current batch's remaining room waits
    (up to ``max_waiting`` units), and after every placement the largest waiting unit that fits
    the remaining room is placed. When too many wait, or a unit is larger than a batch, it is
    placed anyway and cut by the boundary. Linear in the number of units.
    """
    waiting: dict[int, list[int]] = {}
    waiting_sizes: list[int] = []  # the keys of ``waiting``, sorted
    num_waiting = 0
    out: list[int] = []
    room = batch_size
    size_of = sizes.tolist()
    for unit in order.tolist():
        size = size_of[unit]
        if size > room and size < batch_size and num_waiting < max_waiting:
            if size not in waiting:
                waiting[size] = []
                bisect.insort(waiting_sizes, size)
            waiting[size].append(unit)
            num_waiting += 1
            continue
        out.append(unit)
        room = (room - size) % batch_size or batch_size
        while waiting_sizes and waiting_sizes[0] <= room:
            best = waiting_sizes[bisect.bisect_right(waiting_sizes, room) - 1]
            out.append(waiting[best].pop())
            if not waiting[best]:
                del waiting[best]
                waiting_sizes.remove(best)
            num_waiting -= 1
            room = (room - best) % batch_size or batch_size
    for group in waiting.values():
        out.extend(group)
    return np.asarray(out, dtype=np.int64)
