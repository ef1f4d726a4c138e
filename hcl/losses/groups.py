"""Which pairs count: the positive groups of every level, laid out for the loss kernel.

The (B, V, D) features are flattened to N = B*V views and sorted by label prefix, so that at
every level the views sharing a prefix (a *group*: an anchor and its positives) form one
contiguous run. A level is then described per view by its group id, the position where its run
starts and the run length; that is all the kernel needs to sum embeddings per group and to visit
the pairs inside each group, without building any (N, N) mask.
"""

from __future__ import annotations

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
    """

    group: torch.Tensor
    num_groups: int
    start: torch.Tensor
    size: torch.Tensor
    max_size: int

    def block_index(self) -> torch.Tensor:
        """Columns of each view's group, padded with the view's own column.

        Row i lists ``start_i, ..., start_i + size_i - 1`` then repeats ``i`` up to
        ``max_size`` columns; the kernel's logits are ``-inf`` on the diagonal, so the padding
        and the anchor itself are inert.

        Shape:
            Returns (N, max_size) int64.
        """
        n = self.group.shape[0]
        offsets = torch.arange(self.max_size, device=self.start.device)
        own = torch.arange(n, device=self.start.device).unsqueeze(1)
        return torch.where(offsets < self.size.unsqueeze(1), self.start.unsqueeze(1) + offsets, own)


@dataclass(frozen=True)
class ViewGroups:
    """Prefix-sorted views and their groups at every level.

    Attributes:
        rows: (N,) int64; sorted position k holds row ``rows[k]`` of the sample-major
            ``features.reshape(B * V, D)``.
        group: (L, N) int64, ``levels[l].group`` for every level (one tensor, for batched ops).
        size: (L, N) int64, ``levels[l].size`` for every level.
        levels: one :class:`LevelGroups` per level, coarse to fine.
    """

    rows: torch.Tensor
    group: torch.Tensor
    size: torch.Tensor
    levels: tuple[LevelGroups, ...]


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
    device = labels.device
    order, run, new_run = sort_by_prefix(labels)
    known = labels[order] >= 0
    position = torch.arange(num_samples, device=device).unsqueeze(1).expand(-1, num_levels)
    start = torch.cummax(torch.where(new_run, position, 0), dim=0).values
    # The next run's start, scanning from the end, gives each run's length.
    next_start = torch.full_like(start, num_samples)
    next_start[:-1] = torch.where(new_run[1:], position[1:], num_samples)
    end = torch.cummin(next_start.flip(0), dim=0).values.flip(0)
    size = torch.where(known, end - start, 0)

    view = torch.arange(num_views, device=device)
    rows = (order.unsqueeze(1) * num_views + view).reshape(-1)
    own_position = torch.arange(num_samples * num_views, device=device).unsqueeze(0)
    group = run.t().repeat_interleave(num_views, dim=1)
    size = (size.t() * num_views).repeat_interleave(num_views, dim=1)
    start = torch.where(size > 0, (start.t() * num_views).repeat_interleave(num_views, dim=1), own_position)
    num_groups = (run[-1] + 1).tolist() if num_samples else [0] * num_levels
    max_size = size.amax(dim=1).tolist()
    levels = tuple(
        LevelGroups(group=group[l], num_groups=num_groups[l], start=start[l], size=size[l], max_size=max_size[l])
        for l in range(num_levels)
    )
    return ViewGroups(rows=rows, group=group, size=size, levels=levels)
