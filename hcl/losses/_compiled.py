"""The grouped kernel's compiled (numba) loops on CPUs: the hierarchy constraint's in-group pairs,
and the group sums of the positive terms.

Views are sorted by label prefix, so anchor i's level-l group is the contiguous column range
``start[l, i] : start[l, i] + size[l, i]`` of the logits, the anchor itself included at the
logits' -inf diagonal. For every *bounded* level l (l and l+1 both have pairs):

* ``c_li``, the bound: the smallest logit in i's level-(l+1) group, the anchor excluded (+inf
  without a positive there), and its column;
* ``R_li = sum_p relu(x_ip - c_li)`` over i's level-l group, and ``n_li``, how many pairs are
  above the bound.

The bounded levels are always 0..K-1: groups nest, so a level without pairs has no finer level
with pairs. (Fusing the pass for level l's excess with the one for level l-1's bound, over the
same group, halves the visits but stops the loops from vectorising: 2x slower, measured.)

The backward pass adds, to row i of d loss / d logits, ``w_li [x_ip > c_li] + w_lp [x_ip > c_lp]``
on i's level-l group, the pair's own term and its transpose's: every row writes only itself, so
the rows run in parallel. The forward pass, while it counts the pairs above each bound, sums
each pair's own part over the levels, ``sum_l w_li [x_ip > c_li]``, into one float per pair of
i's level-0 group (the *pair weights*); the backward pass adds each pair's weight and its
transpose's in one pass over the level-0 group, with no logits to keep (the forward pass turns
them into exponentials in place). The bound pairs' terms (a few entries per row, where the bound
is differentiated) follow in a serial pass.

The group sums of every level come from one serial pass over the views (:func:`group_sums`), and
their part of the gradient from one pass over rows (:func:`subtract_positive_part_`): with array
ops each level costs an ``index_add_`` and an ``index_select``, about 10 us apiece at a few
hundred views, more than the adding itself.

Each pair costs a few instructions per level in one pass, where array ops need about ten passes
over every level's in-group block. numba comes with umap-learn; the loops are compiled on first
use (5-8 s per float type, then cached on disk).

The loops run on torch's intra-op thread count (:mod:`hcl.losses._numba_loops`).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange
from numba import types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic

from hcl.losses._numba_loops import FAST_MATH, parallel_loop, run

__all__ = ["constraint_backward", "constraint_forward", "group_sums", "scale_symmetric_", "subtract_positive_part_"]


# How many rows ahead the forward loop asks for its next rows' groups (see _prefetch).
_PREFETCH_ROWS = 1


@intrinsic
def _prefetch(typing_context, array, index):  # noqa: ANN001, ANN202
    """Ask the CPU to bring ``array[index]``'s cache line in (LLVM's prefetch: read, keep in all
    levels), without waiting for it. The logits come from a GEMM whose output has left the caches
    by the time the loop reads it, and each row's group is a short run that the hardware
    prefetcher does not see coming: read cold, the forward loop waits on memory most of the time."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        flag = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [pointer.type, flag, flag, flag])
        prefetch = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0i8")
        builder.call(prefetch, [pointer, flag(0), flag(3), flag(1)])
        return context.get_dummy_value()

    return numba_types.void(array, numba_types.intp), codegen


@parallel_loop
def _forward_rows(logits, start, size, num_bounded, global_group, group_weight, scale, find_columns):  # noqa: ANN001, ANN202
    num_levels, n = size.shape
    offsets = np.cumsum(size[0]) - size[0]
    pair_weight = np.zeros(size[0].sum(), dtype=logits.dtype)
    coefficient = np.zeros((num_levels, n), dtype=logits.dtype)
    bound_column = np.empty((num_levels, n), dtype=np.int64)
    count = np.zeros((num_levels, n), dtype=logits.dtype)
    excess = np.zeros((num_levels, n), dtype=logits.dtype)
    held = np.zeros(n, dtype=logits.dtype)
    level_values = np.zeros(num_levels, dtype=logits.dtype)
    line = max(1, 64 // logits.itemsize)
    for i in prange(n):
        ahead = min(i + _PREFETCH_ROWS, n - 1)
        upcoming = logits[ahead]
        for column in range(start[0, ahead], start[0, ahead] + size[0, ahead], line):
            _prefetch(upcoming, column)
        row = logits[i]
        group_start = start[0, i]
        for level in range(num_levels):
            bound_column[level, i] = i
        for level in range(num_bounded):
            weight = group_weight[global_group[level, i]] * scale
            coefficient[level, i] = weight
            first = start[level + 1, i]
            finer = row[first : first + size[level + 1, i]]
            smallest = np.inf
            for r in range(finer.shape[0]):
                value = finer[r]
                smallest = min(smallest, value if value > -np.inf else np.inf)
            for r in range(finer.shape[0] if find_columns else 0):
                if finer[r] == smallest:
                    bound_column[level, i] = first + r
                    break
            first = start[level, i]
            group = row[first : first + size[level, i]]
            # Valid labels put every group inside the view's level-0 group. A known label below
            # an unknown one (let through by check_inputs=False) can break that: such pairs then
            # get no weight, rather than a write outside the row's weights.
            inside = group_start <= first and first + group.shape[0] <= group_start + size[0, i]
            slot = offsets[i] + first - group_start
            weights = pair_weight[slot : slot + group.shape[0]] if inside else pair_weight[:0]
            total = 0.0
            above = 0.0
            for r in range(group.shape[0]):
                difference = group[r] - smallest
                is_above = 1.0 if difference > 0 else 0.0
                total += max(difference, 0.0)
                above += is_above
                if inside:
                    weights[r] += weight * is_above
            excess[level, i] = total
            count[level, i] = above
            held[i] += weight * above
    for level in range(num_bounded):
        total = 0.0
        for i in range(n):
            total += coefficient[level, i] * excess[level, i]
        level_values[level] = total
    return bound_column, count, coefficient, offsets, pair_weight, held, level_values


@parallel_loop
def _backward_rows(
    grad, scale, start, size, num_bounded, offsets, pair_weight, bound_column, coefficient, count, factor
):  # noqa
    # factor: (2,) the incoming gradient, and 1 (the bound differentiated) or 0 (held constant).
    # scale: empty, or (N,): the row is first scaled as _scale_rows does, while it is in cache.
    gradient = factor[0]
    for i in prange(grad.shape[0]):
        row = grad[i]
        if scale.shape[0]:
            own = scale[i]
            for j in range(row.shape[0]):
                row[j] *= own + scale[j]
        # Row i's pair weights, and column i of those of its coarsest group's rows (pair (p, i)
        # as row p weighed it), both indexed by column minus the group's start. (Symmetrising
        # the weights block by block in the forward pass, for a contiguous read here, costs more
        # than the strided read saves: 8.7 ms against 5.4 ms at 4,096 views, measured.)
        group_start = start[0, i]
        group_size = size[0, i]
        if group_size == 0:
            continue
        own_weights = pair_weight[offsets[i] : offsets[i] + group_size]
        column = offsets[group_start] + i - group_start
        transposed = pair_weight[column : column + group_size * group_size : group_size]
        out = row[group_start : group_start + group_size]
        for r in range(group_size):
            out[r] += gradient * (own_weights[r] + transposed[r])
    if factor[1] == 0:
        return
    # The bound pairs: -w_li n_li at (i, bound column) and its transpose, a few entries per row
    # (a serial pass: the transposes are in other rows).
    for level in range(num_bounded):
        for i in range(grad.shape[0]):
            at_bound = coefficient[level, i] * gradient * count[level, i]
            column = bound_column[level, i]
            grad[i, column] -= at_bound
            grad[column, i] -= at_bound


@parallel_loop
def _scale_rows(exponentials, scale):  # noqa: ANN001
    for i in prange(exponentials.shape[0]):
        row = exponentials[i]
        own = scale[i]
        for j in range(row.shape[0]):
            row[j] *= own + scale[j]


@numba.njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _group_sum_rows(z, global_group, num_groups):  # noqa: ANN001, ANN202
    # Serial: the rows of a group add into one sum.
    sums = np.zeros((num_groups, z.shape[1]), dtype=z.dtype)
    for level in range(global_group.shape[0]):
        for i in range(z.shape[0]):
            total = sums[global_group[level, i]]
            row = z[i]
            for d in range(row.shape[0]):
                total[d] += row[d]
    return sums


@parallel_loop
def _positive_rows(grad, z, sums, group_weight, own_weight, global_group, factor):  # noqa: ANN001
    for i in prange(grad.shape[0]):
        out = grad[i]
        own = z[i]
        weight = own_weight[i] * factor
        for d in range(out.shape[0]):
            out[d] += weight * own[d]
        for level in range(global_group.shape[0]):
            group = global_group[level, i]
            weight = group_weight[group] * factor
            total = sums[group]
            for d in range(out.shape[0]):
                out[d] -= weight * total[d]


def group_sums(z: torch.Tensor, global_group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Every group's sum of embeddings, all levels in one pass (each level an ``index_add_``
    with array ops, which at a few hundred views costs more than the adding).

    Shape:
        z: (N, D) float CPU, contiguous; global_group: (L, N) int64, ids in ``0..num_groups-1``.
        Returns (num_groups, D).
    """
    return torch.from_numpy(_group_sum_rows(z.numpy(), global_group.numpy(), num_groups))


def subtract_positive_part_(
    grad_z: torch.Tensor,
    z: torch.Tensor,
    sums: torch.Tensor,
    group_weight: torch.Tensor,
    own_weight: torch.Tensor,
    global_group: torch.Tensor,
    factor: float,
) -> None:
    """``grad_z_i -= factor (sum_l w_{g_l(i)} S_{g_l(i)} - W_i z_i)``, in place: the positive sums'
    part of the gradient, row by row (array ops: a gather and an add per level).

    Shape:
        grad_z, z: (N, D) float CPU, contiguous; sums: (G, D); group_weight: (G,);
        own_weight: (N,) ``W``; global_group: (L, N) int64.
    """
    run(
        _positive_rows,
        grad_z.numpy(),
        z.numpy(),
        sums.numpy(),
        group_weight.contiguous().numpy(),
        own_weight.contiguous().numpy(),
        global_group.numpy(),
        factor,
    )


def scale_symmetric_(exponentials: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``E_ij (scale_i + scale_j)``, in place and in one pass (array ops need a temporary).

    Shape:
        exponentials: (N, N) float CPU, contiguous; scale: (N,). Returns ``exponentials``.
    """
    run(_scale_rows, exponentials.numpy(), scale.contiguous().numpy())
    return exponentials


def constraint_forward(
    logits: torch.Tensor,
    start: torch.Tensor,
    size: torch.Tensor,
    num_bounded: int,
    global_group: torch.Tensor,
    group_weight: torch.Tensor,
    scale: float,
    find_columns: bool = True,
) -> tuple[np.ndarray, ...]:
    """The bounds' columns and counts of every bounded level, the pair weights, and the
    constraint's part of the loss.

    The outputs are NumPy arrays allocated inside the compiled code: a small torch op costs
    several microseconds, which at a few hundred views is as much as the loops themselves.

    Args:
        logits: the scaled similarities with a -inf diagonal, rows and columns in sorted order.
        start, size: every level's group start and size per view (size 0: unknown label).
        num_bounded: the bounded levels are ``0..num_bounded-1`` (at least one).
        global_group, group_weight: every view's group at every level, and each group's weight.
        scale: the factor of every pair weight: ``w_li = scale * group_weight[global_group[l, i]]``.
        find_columns: find each bound's column (only a differentiated bound needs it; without,
            ``bound_column`` holds the view's own column).

    Shape:
        logits: (N, N) float CPU, contiguous; start, size, global_group: (L, N) int64;
        group_weight: (G,). Returns ``bound_column``, ``count`` (the pairs above the bound) and
        ``coefficient`` (``w_li``), each (L, N) (the view's own column, 0 and 0 on levels that
        are not bounded); ``offsets`` (N,), where each view's entries start in ``pair_weight``,
        the flat ``sum_l w_li [x_ip > c_li]`` over the views p of i's level-0 group, in column
        order; ``held``, (N,) ``sum_l w_li n_li``; and ``level_values``, (L,)
        ``sum_i w_li R_li``.
    """
    return run(
        _forward_rows,
        logits.numpy(),
        start.numpy(),
        size.numpy(),
        num_bounded,
        global_group.numpy(),
        group_weight.numpy(),
        scale,
        find_columns,
    )


def constraint_backward(
    grad_logits: torch.Tensor,
    start: torch.Tensor,
    size: torch.Tensor,
    num_bounded: int,
    saved: tuple[np.ndarray, ...],
    grad_output: float,
    bound_gradient: bool,
    scale: torch.Tensor | None = None,
) -> None:
    """Add the constraint's part of d loss / d logits to ``grad_logits``, in place: over every
    bounded level's in-group pairs ``g w_li [x_ip > c_li] + g w_lp [x_ip > c_lp]``, minus (when
    the bound is differentiated) ``g w_li n_li`` on each bound's own pair (i, column) and its
    transpose, g the incoming gradient. With ``scale``, ``grad_logits`` holds the symmetric
    exponentials E and is first turned into ``E_ij (scale_i + scale_j)`` (as
    :func:`scale_symmetric_`), row by row in the same pass.

    Shape:
        grad_logits: (N, N) float CPU, contiguous; ``saved``: ``bound_column``, ``count``,
        ``coefficient``, ``offsets`` and ``pair_weight`` as returned by
        :func:`constraint_forward`; scale: (N,).
    """
    bound_column, count, coefficient, offsets, pair_weight = saved
    values = grad_logits.numpy()
    factor = np.array([grad_output, 1.0 if bound_gradient else 0.0], dtype=values.dtype)
    row_scale = values[0, :0] if scale is None else scale.contiguous().numpy()
    run(
        _backward_rows,
        values,
        row_scale,
        start.numpy(),
        size.numpy(),
        num_bounded,
        offsets,
        pair_weight,
        bound_column,
        coefficient,
        count,
        factor,
    )
