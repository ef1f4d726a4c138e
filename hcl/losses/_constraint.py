"""The hierarchy constraint inside the kernel of :mod:`hcl.losses._kernel`: bounds and excesses
over each level's in-group pairs.

For a constrained level l, ``max(ell(i,p), m_i) = LSE_i - min(x_ip, c_i)`` with
``c_i = min_{q in P_{l+1}(i)} x_iq``, and ``sum_p min(x_ip, c_i)`` is the plain positive sum minus
``R_i = sum_{p in P_l(i)} relu(x_ip - c_i)``. Both ``c_i`` and ``R_i`` only involve pairs inside
the anchor's group, and the views are sorted so that every group is a contiguous range of
columns. On CPUs two compiled loops over rows (:mod:`hcl.losses._compiled`) visit those ranges;
on GPUs (and without numba) array ops visit a level's in-group pairs either as one
(N, largest group) gathered block (many small groups) or group by group as square slices of the
logits (few large groups).

Memory: the constraint keeps one float per pair inside the coarsest constrained level's groups
(compiled: its pair weights; array ops: 1.0 where a pair exceeds its bound, per level).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from hcl.losses.groups import LevelGroups, ViewGroups

__all__ = ["build_constraint", "compiled_for", "compiled_module"]

# A level is visited group by group (square slices) when its largest group has at least this
# many views and it has at most max(8, N * _SLICE_GROUPS_PER_VIEW) groups with positives.
_SLICE_MIN_SIZE = 32
_SLICE_GROUPS_PER_VIEW = 1 / 128


def _by_group(level: LevelGroups, n: int) -> list[tuple[int, int]] | None:
    """The level's group spans when few large groups make square slices cheaper than a gathered
    (N, max_size) block (each slice costs a few Python-level ops), else None. Only on CPUs: on
    accelerators the ops per slice cost more than the gather (kernel launches, and reading the
    spans syncs)."""
    if level.max_size < _SLICE_MIN_SIZE or level.group.device.type != "cpu":
        return None
    spans = level.spans()
    return spans if len(spans) <= max(8, n * _SLICE_GROUPS_PER_VIEW) else None


class _InGroupPairs:
    """One level's in-group logits, as square slices or one gathered (N, max_size) block.

    ``columns`` (gathered blocks only) holds each entry's column in the logits, ``padding``
    which entries pad a group and ``start`` where each row's group starts; the anchor itself and
    the padding are -inf, inert in every term.
    """

    def __init__(self, logits: torch.Tensor, level: LevelGroups) -> None:
        n = logits.shape[0]
        self.spans = _by_group(level, n)
        if self.spans is None:
            self.columns = level.block_index()
            self.padding = level.block_padding()
            self.start = level.start
            self.blocks = [logits.gather(1, self.columns).masked_fill_(self.padding, float("-inf"))]
            self.ranges = [(0, n)]
        else:
            self.columns = self.padding = self.start = None
            self.blocks = [logits[start:stop, start:stop] for start, stop in self.spans]
            self.ranges = self.spans

    def smallest(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the smallest in-group logit (+inf without a positive) and its column.

        Shape:
            Returns two (N,) tensors, float and int64.
        """
        if self.columns is not None:
            value, position = self._smallest(self.blocks[0])
            return value, self.columns.gather(1, position.unsqueeze(1)).squeeze(1)
        value = self.blocks[0].new_full((n,), float("inf"))
        column = torch.zeros(n, dtype=torch.int64, device=value.device)
        for (start, stop), block in zip(self.ranges, self.blocks):
            value[start:stop], position = self._smallest(block)
            column[start:stop] = position + start
        return value, column

    @staticmethod
    def _smallest(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # -inf (self, padding) counts as +inf here. (argmin: min(dim) is slow on small CPU inputs.)
        finite = block.nan_to_num(neginf=float("inf"))
        position = finite.argmin(dim=1, keepdim=True)
        return finite.gather(1, position).squeeze(1), position.squeeze(1)

    def excess(self, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``R_i = sum_p relu(x_ip - bound_i)`` over i's group, the number of pairs above the
        bound and, per block, which pairs those are (1.0, else 0.0: the backward pass multiplies
        with it).

        Shape:
            bound: (N,). Returns two (N,) tensors and one tensor per block.
        """
        if self.columns is not None:
            clipped = (self.blocks[0] - bound.unsqueeze(1)).clamp_(min=0)
            above = clipped.sign()
            return clipped.sum(dim=1), above.sum(dim=1), [above]
        excess = bound.new_zeros(bound.shape)
        count = bound.new_zeros(bound.shape)
        blocks_above = []
        for (start, stop), block in zip(self.ranges, self.blocks):
            clipped = (block - bound[start:stop].unsqueeze(1)).clamp_(min=0)
            excess[start:stop] = clipped.sum(dim=1)
            blocks_above.append(clipped.sign())
            count[start:stop] = blocks_above[-1].sum(dim=1)
        return excess, count, blocks_above


def _add_in_group(
    grad_logits: torch.Tensor, pairs: _InGroupPairs, above: list[torch.Tensor], coefficient: torch.Tensor
) -> None:
    """Add ``B + B^T`` to ``grad_logits``, B the in-group gradient ``coefficient_i * above_ip``."""
    spans = pairs.spans
    if spans is None:
        block = above[0] * coefficient.unsqueeze(1)
        # The views of a group share its columns in order, so pair (i, start_i + r)'s transpose
        # sits in row start_i + r at position i - start_i: gathered, both go in one row-wise
        # scatter (a scatter into the transpose would write across rows, several times slower).
        rows = torch.arange(block.shape[0], device=block.device)
        partner = (pairs.columns * block.shape[1]).add_((rows - pairs.start).unsqueeze(1))
        transposed = block.view(-1).index_select(0, partner.view(-1)).view_as(block).masked_fill_(pairs.padding, 0)
        grad_logits.scatter_add_(1, pairs.columns, transposed.add_(block))
        return
    for (start, stop), mask in zip(spans, above):
        square = grad_logits[start:stop, start:stop]
        square.addcmul_(mask, coefficient[start:stop].unsqueeze(1))
        square.addcmul_(mask.t(), coefficient[start:stop].unsqueeze(0))


class _GroupedConstraint:
    """The constraint terms with array ops over each level's in-group pairs (GPUs, and CPUs
    without numba): level l+1's groups give the bounds of every bounded level l."""

    scales_rows = False

    def __init__(
        self, logits: torch.Tensor, levels: tuple[LevelGroups, ...], coefficient: torch.Tensor, bounded: list[int]
    ) -> None:
        n = logits.shape[0]
        involved = sorted(set(bounded) | {index + 1 for index in bounded})
        pairs = {index: _InGroupPairs(logits, levels[index]) for index in involved}
        self.value = logits.new_zeros(())
        self.level_values = logits.new_zeros(len(levels))
        self.kept: list[tuple[_InGroupPairs, list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for index in bounded:
            bound, bound_column = pairs[index + 1].smallest(n)
            excess, count, above = pairs[index].excess(bound)
            level_value = torch.dot(coefficient[index], excess)
            self.value = self.value + level_value
            self.level_values[index] = level_value
            self.kept.append((pairs[index], above, coefficient[index], count, bound_column))
        for level_pairs in pairs.values():
            level_pairs.blocks = []  # not needed by the backward pass

    def held_weight(self) -> torch.Tensor:
        """``sum_l w_li n_li``, n the number of pairs above i's bound. Shape: (N,)."""
        return sum(coefficient * count for _, _, coefficient, count, _ in self.kept)

    def add_gradient(self, grad_logits: torch.Tensor, grad_output: torch.Tensor, bound_gradient: bool) -> None:
        """Add the constraint's part of d loss / d logits to ``grad_logits`` (see
        :func:`_add_bound_pairs` for the parts)."""
        rows = torch.arange(grad_logits.shape[0], device=grad_logits.device)
        for pairs, above, coefficient, count, bound_column in self.kept:
            coefficient = grad_output * coefficient
            _add_in_group(grad_logits, pairs, above, coefficient)
            if bound_gradient:
                _add_bound_pairs(grad_logits, rows, bound_column, coefficient * count)


class _CompiledConstraint:
    """The constraint terms from the compiled row loops of :mod:`hcl.losses._compiled` (CPUs)."""

    scales_rows = True  # add_gradient can scale the exponentials first, in the same pass

    def __init__(
        self,
        compiled: ModuleType,
        logits: torch.Tensor,
        groups: ViewGroups,
        group_weight: torch.Tensor,
        scale: float,
        bound_gradient: bool,
        num_bounded: int,
    ) -> None:
        self.compiled = compiled
        self.groups = groups
        self.num_bounded = num_bounded
        *self.saved, held, level_values = compiled.constraint_forward(
            logits,
            groups.start,
            groups.size,
            self.num_bounded,
            groups.global_group,
            group_weight,
            scale,
            bound_gradient,
        )
        self.held = torch.from_numpy(held)
        self.level_values = torch.from_numpy(level_values)
        self.value = self.level_values.sum()

    def held_weight(self) -> torch.Tensor:
        """``sum_l w_li n_li``, n the number of pairs above i's bound. Shape: (N,)."""
        return self.held

    def add_gradient(
        self,
        grad_logits: torch.Tensor,
        grad_output: torch.Tensor,
        bound_gradient: bool,
        scale: torch.Tensor | None = None,
    ) -> None:
        """Add the constraint's part of d loss / d logits to ``grad_logits``: the parts of
        :func:`_add_bound_pairs`, the bound pairs' included, all inside the compiled code. With
        ``scale`` (N,), ``grad_logits`` holds the symmetric exponentials E and is first scaled
        to ``E_ij (scale_i + scale_j)`` in the same pass over its rows."""
        self.compiled.constraint_backward(
            grad_logits,
            self.groups.start,
            self.groups.size,
            self.num_bounded,
            self.saved,
            float(grad_output),
            bound_gradient,
            scale,
        )


def _add_bound_pairs(
    grad_logits: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, weight: torch.Tensor
) -> None:
    """Subtract ``weight`` at the bound pairs ``(rows, columns)`` and their transposes.

    The constraint's part of d loss / d logits is +w_i on the in-group pairs above i's bound
    (which cancels their -w_i from the positive sums) and -w_i times their number on the bound's
    own pair (unless the bound is held constant), both symmetrised; this is the second part.

    Shape:
        grad_logits: (N, N); rows, columns, weight: (K,).
    """
    both = (torch.cat([rows, columns]), torch.cat([columns, rows]))
    grad_logits.index_put_(both, -weight.repeat(2), accumulate=True)


def _num_bounded(groups: ViewGroups) -> int:
    """How many levels are bounded: level l is when it and level l+1 both have pairs, and since
    groups nest these are levels 0..K-1."""
    has_pairs = [size >= 2 for size in groups.max_size]
    return sum(has_pairs[index] and has_pairs[index + 1] for index in range(len(has_pairs) - 1))


def build_constraint(
    logits: torch.Tensor,
    groups: ViewGroups,
    group_weight: torch.Tensor,
    scale: float = 1.0,
    bound_gradient: bool = True,
) -> _GroupedConstraint | _CompiledConstraint | None:
    """The hierarchy constraint's terms, compiled on CPUs when numba is there; None when no
    level is bounded (level l is bounded when it and level l+1 both have pairs).

    The result holds ``value``, the constraint's part of the loss (a scalar), ``level_values``,
    its part of each level's term (L,), and what the backward pass needs (``held_weight``,
    ``add_gradient``).

    Args:
        logits: the scaled similarities, the -inf diagonal set.
        groups: the groups of every level.
        group_weight: the weight of every group of every level (level 0's first).
        scale: every pair weight is ``scale`` times its anchor's group weight, ``w_li``.
        bound_gradient: whether the backward pass will differentiate the bound (False: the
            compiled loops skip finding the bounds' columns).

    Shape:
        logits: (N, N); group_weight: (G,).
    """
    num_bounded = _num_bounded(groups)
    if not num_bounded:
        return None
    compiled = compiled_for(logits)
    if compiled is None:
        coefficient = group_weight.index_select(0, groups.global_group.view(-1)).view(groups.global_group.shape)
        coefficient = coefficient * scale if scale != 1.0 else coefficient
        return _GroupedConstraint(logits, groups.levels, coefficient, list(range(num_bounded)))
    return _CompiledConstraint(compiled, logits, groups, group_weight, scale, bound_gradient, num_bounded)


def compiled_for(tensor: torch.Tensor) -> ModuleType | None:
    """The compiled loops for a tensor on the CPU (they work on its NumPy view), else None: CUDA,
    MPS and other devices take the array ops."""
    return compiled_module() if tensor.device.type == "cpu" else None


@functools.cache
def compiled_module() -> ModuleType | None:
    """:mod:`hcl.losses._compiled`, imported on first use (numba takes a while to import), or
    None without numba or without a writable place for its cache (numba then raises
    RuntimeError)."""
    try:
        from hcl.losses import _compiled
    except (ImportError, RuntimeError):
        return None
    return _compiled
