"""Which pairs count: the positive groups of every level, laid out for the loss kernel.

The (B, V, D) features are flattened to N = B*V views and sorted by label prefix, so that at
every level the views sharing a prefix (a *group*: an anchor and its positives) form one
contiguous run. A level is then described per view by its group id, the position where its run
starts and the run length; that is all the kernel needs to sum embeddings per group and to visit
the pairs inside each group, without building any (N, N) mask.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

__all__ = ["LevelGroups", "ViewGroups", "build_view_groups", "sort_by_prefix"]


@dataclass(frozen=True)
class LevelGroups:
    """The groups of one level, per view in prefix-sorted order.

    Attributes:
        group: (N,) int64 run id in ``0..num_groups-1``. Views whose label is unknown at this
            level form runs of their own, whose weights are always zero.
        num_groups: number of runs (known groups and runs of unknown views).
        start: (N,) int64 sorted position of the first view of the view's group (the view's own
            position when unknown).
        size: (N,) int64 number of views in the group, anchor included (0 when unknown).
        max_size: the largest group size (0 when nothing is known at this level).
        group_start: (num_groups,) int64 sorted position of each run's first view.
        group_size: (num_groups,) int64 number of views of each run (0 for unknown views).
    """

    group: torch.Tensor
    num_groups: int
    start: torch.Tensor
    size: torch.Tensor
    max_size: int
    group_start: torch.Tensor
    group_size: torch.Tensor

    def block_index(self) -> torch.Tensor:
        """Columns of each view's group (itself included), padded with the group's first column
        (the view's own column when its label is unknown).

        All views of a group share one row, so row i's entry at position r pairs view i with
        the view at ``start_i + r``, whose own row lists i at position ``i - start_i``.

        Shape:
            Returns (N, max_size) int64.
        """
        start = self.start.unsqueeze(1)
        return torch.where(self.block_padding(), start, start + torch.arange(self.max_size, device=start.device))

    def block_padding(self) -> torch.Tensor:
        """Which entries of :meth:`block_index` are padding rather than group members.

        Shape:
            Returns (N, max_size) bool.
        """
        return torch.arange(self.max_size, device=self.size.device) >= self.size.unsqueeze(1)

    def spans(self) -> list[tuple[int, int]]:
        """``(start, stop)`` sorted positions of every group with at least two views."""
        if self.max_size < 2:
            return []
        keep = self.group_size >= 2
        starts = self.group_start[keep]
        return list(zip(starts.tolist(), (starts + self.group_size[keep]).tolist()))


@dataclass(frozen=True)
class ViewGroups:
    """Prefix-sorted views and their groups at every level.

    Attributes:
        rows: (N,) int64; sorted position k holds row ``rows[k]`` of the sample-major
            ``features.reshape(B * V, D)``.
        group: (L, N) int64, ``levels[l].group`` for every level (one tensor, for batched ops).
        size: (L, N) int64, ``levels[l].size`` for every level.
        start: (L, N) int64, ``levels[l].start`` for every level.
        global_group: (L, N) int64, the group ids of all levels numbered consecutively (level 0's
            first), to index tensors that concatenate every level's groups.
        group_size: (G,) int64, ``levels[l].group_size`` of every level in that numbering, G the
            total number of groups.
        group_start: (G,) int64, ``levels[l].group_start`` in that numbering.
        group_level: (G,) int64, the level of each group.
        num_groups: ``levels[l].num_groups`` for every level.
        max_size: ``levels[l].max_size`` for every level.
    """

    rows: torch.Tensor
    group: torch.Tensor
    size: torch.Tensor
    start: torch.Tensor
    global_group: torch.Tensor
    group_size: torch.Tensor
    group_start: torch.Tensor
    group_level: torch.Tensor
    num_groups: tuple[int, ...]
    max_size: tuple[int, ...]

    @functools.cached_property
    def levels(self) -> tuple[LevelGroups, ...]:
        """One :class:`LevelGroups` per level, coarse to fine (built on first use: the compiled
        CPU path never needs them)."""
        levels = []
        first = 0
        for level, count in enumerate(self.num_groups):
            part = slice(first, first + count)
            levels.append(
                LevelGroups(
                    group=self.group[level],
                    num_groups=count,
                    start=self.start[level],
                    size=self.size[level],
                    max_size=self.max_size[level],
                    group_start=self.group_start[part],
                    group_size=self.group_size[part],
                )
            )
            first += count
        return tuple(levels)


def sort_by_prefix(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort samples lexicographically by label row (unknown first) and number the prefixes.

    After sorting, the samples sharing a known prefix 0..l are contiguous at every level l.

    Args:
        labels: validated hierarchical labels (see :func:`hcl.labels.as_label_tensor`).

    Shape:
        labels: (B, L) int64. Returns ``order`` (B,): sample at each sorted position;
        ``run`` (B, L): run id of the sorted sample's prefix 0..l, dense and increasing in sorted
        order (unknown prefixes get runs of their own); ``new_run`` (B, L) bool: the sorted
        sample starts a run at that level.
    """
    num_samples, num_levels = labels.shape
    # One sort on a mixed-radix key (labels + 1 as digits) when it fits in int64, else stable
    # sorts column by column, finest first.
    radix = (labels.amax(dim=0) + 2).tolist() if num_samples else [1] * num_levels
    if math.prod(radix) < 2**62:
        place = [math.prod(radix[level + 1 :]) for level in range(num_levels)]
        key = ((labels + 1) * torch.tensor(place, device=labels.device)).sum(dim=1)
        order = torch.argsort(key)
    else:
        order = torch.arange(num_samples, device=labels.device)
        for level in reversed(range(num_levels)):
            order = order[torch.argsort(labels[order, level], stable=True)]
    ordered = labels[order]
    new_run = torch.ones_like(ordered, dtype=torch.bool)
    # A run starts where any label in columns 0..l differs from the previous sorted sample.
    new_run[1:] = torch.cummax((ordered[1:] != ordered[:-1]).to(torch.uint8), dim=1).values.bool()
    run = torch.cumsum(new_run, dim=0) - 1
    return order, run, new_run


def build_view_groups(labels: torch.Tensor, num_views: int) -> ViewGroups:
    """Sort the B*V views by label prefix and describe each level's groups.

    Two views are in the same level-l group when their samples' labels agree and are known in
    columns 0..l, so the V views of one sample are together at every level where its label is
    known. Cost: O(B L log B), no (B, B) tensor.

    Args:
        labels: validated hierarchical labels (see :func:`hcl.labels.as_label_tensor`).
        num_views: V, the number of views per sample.

    Shape:
        labels: (B, L) int64.
    """
    num_samples, num_levels = labels.shape
    num_views_total = num_samples * num_views
    device = labels.device
    order, run, new_run = sort_by_prefix(labels)
    known = labels[order] >= 0

    # Every run of every level at once, level-major: its first sorted sample and its length.
    run_level, run_first = new_run.t().nonzero(as_tuple=True)
    same_level_next = torch.zeros_like(run_level, dtype=torch.bool)
    same_level_next[:-1] = run_level[1:] == run_level[:-1]
    run_end = torch.full_like(run_first, num_samples)
    run_end[:-1] = torch.where(same_level_next[:-1], run_first[1:], num_samples)
    run_size = torch.where(known[run_first, run_level], run_end - run_first, 0) * num_views
    run_start = run_first * num_views
    num_groups = (run[-1] + 1).tolist() if num_samples else [0] * num_levels
    offsets = [0]
    for count in num_groups[:-1]:
        offsets.append(offsets[-1] + count)

    # Per view, level by level: (L, N) run ids, group sizes and group starts.
    global_run = (run + torch.tensor(offsets, device=device)).t()
    global_group = global_run.repeat_interleave(num_views, dim=1)
    group = run.t().repeat_interleave(num_views, dim=1)
    size = run_size[global_run].repeat_interleave(num_views, dim=1)
    own_position = torch.arange(num_views_total, device=device)
    start = torch.where(size > 0, run_start[global_run].repeat_interleave(num_views, dim=1), own_position)
    rows = (order.unsqueeze(1) * num_views + torch.arange(num_views, device=device)).reshape(-1)

    max_size = size.amax(dim=1).tolist() if num_views_total else [0] * num_levels
    return ViewGroups(
        rows=rows,
        group=group,
        size=size,
        start=start,
        global_group=global_group,
        group_size=run_size,
        group_start=run_start,
        group_level=run_level,
        num_groups=tuple(num_groups),
        max_size=tuple(max_size),
    )
