"""The prefix-sorted group layout (hcl.losses.groups) against brute force."""

from __future__ import annotations

import pytest
import torch

from hcl.losses.groups import build_view_groups, sort_by_prefix


def ragged_labels(num_samples: int, num_levels: int, branching: int, seed: int, high: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, branching, (num_samples, num_levels), generator=generator) + high
    depth = torch.randint(0, num_levels + 1, (num_samples,), generator=generator)
    labels[torch.arange(num_levels) >= depth.unsqueeze(1)] = -1
    return labels


def known_prefix(row: list[int], level: int) -> tuple[int, ...] | None:
    prefix = tuple(row[: level + 1])
    return None if min(prefix) < 0 else prefix


# high=2**40 forces the column-by-column sort (the mixed-radix key would overflow).
@pytest.mark.parametrize(("seed", "num_views", "high"), [(0, 1, 0), (1, 2, 0), (2, 3, 0), (3, 2, 2**40)])
def test_groups_match_brute_force(seed: int, num_views: int, high: int) -> None:
    labels = ragged_labels(40, 4, 3, seed, high)
    groups = build_view_groups(labels, num_views)
    n = 40 * num_views
    sample = (groups.rows // num_views).tolist()
    assert sorted(groups.rows.tolist()) == list(range(n))
    rows = labels.tolist()
    for level, info in enumerate(groups.levels):
        prefixes = [known_prefix(rows[s], level) for s in sample]
        columns = info.block_index()
        padding = info.block_padding()
        for i in range(n):
            members = [j for j in range(n) if prefixes[i] is not None and prefixes[j] == prefixes[i]]
            if not members:
                assert info.size[i] == 0 and info.start[i] == i and bool(padding[i].all())
                continue
            # Members form one contiguous run starting at start_i.
            assert members == list(range(int(info.start[i]), int(info.start[i]) + len(members)))
            assert info.size[i] == len(members)
            assert columns[i][~padding[i]].tolist() == members
            assert info.group_size[info.group[i]] == len(members)
        same_group = info.group.unsqueeze(0) == info.group.unsqueeze(1)
        same_prefix = torch.tensor([[p is not None and p == q for q in prefixes] for p in prefixes])
        assert torch.equal(same_group & (info.size > 0).unsqueeze(1), same_prefix)
        assert info.max_size == max([int(v) for v in info.size] + [0])
        spans = {(int(info.start[i]), int(info.start[i] + info.size[i])) for i in range(n) if info.size[i] >= 2}
        assert info.spans() == sorted(spans)


def test_sort_by_prefix_orders_lexicographically_with_unknown_first() -> None:
    labels = torch.tensor([[1, 0], [0, -1], [0, 1], [-1, -1], [0, 0], [1, 0]])
    order, run, new_run = sort_by_prefix(labels)
    assert labels[order].tolist() == [[-1, -1], [0, -1], [0, 0], [0, 1], [1, 0], [1, 0]]
    assert run.tolist() == [[0, 0], [1, 1], [1, 2], [1, 3], [2, 4], [2, 4]]
    assert new_run[:, 1].tolist() == [True, True, True, True, True, False]
