"""Label trees for the tests of the hierarchy-aware baselines (CPCC regulariser, soft labels):
complete (optionally ragged) trees, random labels and float64 inputs, and the LCA height by
climbing parents, which the loop oracles build on. Imported as ``losses.trees``."""

from __future__ import annotations

import itertools

import torch

from hcl import Hierarchy

__all__ = ["oracle_lca_height", "random_double", "random_labels", "tree"]


def tree(branching: tuple[int, ...], ragged: bool = False) -> Hierarchy:
    """A complete tree with the given branching per level (level 0: the number of roots); with
    ``ragged``, one extra leaf stops a level early."""
    paths = []
    for index in itertools.product(*(range(b) for b in branching)):
        paths.append(tuple("n" + ".".join(map(str, index[: level + 1])) for level in range(len(index))))
    if ragged:
        paths.append(paths[0][:-2] + ("short",))
    return Hierarchy.from_paths(paths)


def random_labels(hierarchy: Hierarchy, num_samples: int, seed: int, unknown: int = 0) -> torch.Tensor:
    """Rows of random finest-level classes; the first ``unknown`` rows stop one level early."""
    generator = torch.Generator().manual_seed(seed)
    finest = hierarchy.num_levels - 1
    ids = torch.randint(hierarchy.num_nodes(finest), (num_samples,), generator=generator)
    labels = hierarchy.node_labels(finest)[ids]
    labels[:unknown, -1] = -1
    return labels


def random_double(num_samples: int, num_views: int, width: int, seed: int) -> torch.Tensor:
    """(num_samples, num_views, width) float64 normal values that require grad."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_samples, num_views, width, generator=generator, dtype=torch.float64).requires_grad_()


def oracle_lca_height(hierarchy: Hierarchy, a: int, b: int) -> int:
    """Levels to climb from finest-level nodes a and b until they meet (L when only the virtual
    root joins them)."""
    level, height = hierarchy.num_levels - 1, 0
    while a != b:
        height += 1
        if level == 0:
            break
        a, b = hierarchy.parent(level, a), hierarchy.parent(level, b)
        level -= 1
    return height
