"""The hierarchy constraint's in-group pairs on CPUs, as two compiled (numba) loops over rows.

Views are sorted by label prefix, so anchor i's level-l group is the contiguous column range
``start[l, i] : start[l, i] + size[l, i]`` of the logits, the anchor itself included at the
logits' -inf diagonal. For every *bounded* level l (l and l+1 both have pairs):

* ``c_li``, the bound: the smallest logit in i's level-(l+1) group, the anchor excluded (+inf
  without a positive there), and its column;
* ``R_li = sum_p relu(x_ip - c_li)`` over i's level-l group, and ``n_li``, how many pairs are
  above the bound.

The backward pass adds, to row i of d loss / d logits, ``w_li [x_ip > c_li] + w_lp [x_ip > c_lp]``
on i's level-l group, the pair's own term and its transpose's, and the bound pairs' terms where
i is either end: every row writes only itself, so the rows run in parallel. It reads the logits from a copy of each
row's coarsest-group entries made by the forward pass, since the forward pass turns the logits
into exponentials in place.

Each pair costs a few instructions per level in one pass, where array ops need about ten passes
over every level's in-group block. numba comes with umap-learn; the loops are compiled on first
use (5-8 s per float type, then cached on disk) and run on torch's intra-op thread count.

Neither torch's nor numba's thread settings change. numba's OpenMP layer, when it starts its pool,
sets the starting thread's OpenMP thread count to ``NUMBA_NUM_THREADS`` (``omp_set_num_threads``),
and that count is torch's intra-op count when the two share libgomp: started from the caller's
thread, the pool raised a caller's ``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)`` to 2 for
the rest of the process (and a resumed run then did one step with fewer threads than an
uninterrupted one). So the pool is started from a short-lived thread of its own, and each call
sets numba's (thread-local) count to torch's for the call only.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import numba
import numpy as np
import torch
from numba import prange

__all__ = ["constraint_backward", "constraint_forward", "scale_symmetric_"]

# Reassociation lets the row sums vectorise; no flag assumes finite values (the diagonal is -inf).
_FAST_MATH = {"reassoc", "contract", "nsz"}


@functools.cache
def _start_numba_pool() -> None:
    """Start numba's thread pool once, from a thread that ends at once, so that the OpenMP thread
    count its start sets is that thread's, not the caller's."""
    starter = threading.Thread(target=numba.get_num_threads, name="hcl-numba-pool-start")
    starter.start()
    starter.join()


@contextlib.contextmanager
def _torch_threads() -> Iterator[None]:
    """Run numba's parallel loops on ``torch.get_num_threads()`` threads (at most the pool's size)
    for the ``with`` block; the calling thread's numba count is restored after it."""
    _start_numba_pool()
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FAST_MATH)
def _forward_rows(logits, start, size, bounded, outer, offsets, inner, bound, bound_column, excess, count):  # noqa
    for i in prange(logits.shape[0]):
        row = logits[i]
        for k in range(bounded.shape[0]):
            level = bounded[k]
            first = start[level + 1, i]
            finer = row[first : first + size[level + 1, i]]
            smallest = np.inf
            for r in range(finer.shape[0]):
                value = finer[r]
                smallest = min(smallest, value if value > -np.inf else np.inf)
            column = i
            for r in range(finer.shape[0]):
                if finer[r] == smallest:
                    column = first + r
                    break
            bound[level, i] = smallest
            bound_column[level, i] = column
            first = start[level, i]
            group = row[first : first + size[level, i]]
            total = 0.0
            above = 0.0
            for r in range(group.shape[0]):
                difference = group[r] - smallest
                total += max(difference, 0.0)
                above += 1.0 if difference > 0 else 0.0
            excess[level, i] = total
            count[level, i] = above
        first = start[outer, i]
        inner[offsets[i] : offsets[i] + size[outer, i]] = row[first : first + size[outer, i]]


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FAST_MATH)
def _backward_rows(grad, start, size, bounded, outer, offsets, inner, bound, bound_column, weight, at_bound):  # noqa
    for i in prange(grad.shape[0]):
        row = grad[i]
        # Row i's saved logits, and column i of the saved logits of its coarsest group's rows: x_pi
        # as row p computed it (a float product need not be exactly symmetric). Both are indexed
        # by column minus the group's start.
        group_start = start[outer, i]
        group_size = size[outer, i]
        if group_size == 0:
            continue
        saved = inner[offsets[i] : offsets[i] + group_size]
        column = offsets[group_start] + i - group_start
        saved_transposed = inner[column : column + group_size * group_size : group_size]
        for k in range(bounded.shape[0]):
            level = bounded[k]
            own_bound = bound[level, i]
            own_weight = weight[level, i]
            own_column = bound_column[level, i]
            own_at_bound = at_bound[level, i]
            zero = own_weight * 0
            first = start[level, i]
            stop = first + size[level, i]
            out = row[first:stop]
            logits = saved[first - group_start : stop - group_start]
            transposed = saved_transposed[first - group_start : stop - group_start]
            bounds = bound[level, first:stop]
            weights = weight[level, first:stop]
            columns = bound_column[level, first:stop]
            at_bounds = at_bound[level, first:stop]
            for r in range(out.shape[0]):
                above = (own_weight if logits[r] > own_bound else zero) + (
                    weights[r] if transposed[r] > bounds[r] else zero
                )
                at = (own_at_bound if first + r == own_column else zero) + (at_bounds[r] if columns[r] == i else zero)
                out[r] += above - at


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FAST_MATH)
def _scale_rows(exponentials, scale):  # noqa: ANN001
    for i in prange(exponentials.shape[0]):
        row = exponentials[i]
        own = scale[i]
        for j in range(row.shape[0]):
            row[j] *= own + scale[j]


def scale_symmetric_(exponentials: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``E_ij (scale_i + scale_j)``, in place and in one pass (array ops need a temporary).

    Shape:
        exponentials: (N, N) float CPU, contiguous; scale: (N,). Returns ``exponentials``.
    """
    with _torch_threads():
        _scale_rows(exponentials.numpy(), scale.contiguous().numpy())
    return exponentials


def constraint_forward(
    logits: torch.Tensor, start: torch.Tensor, size: torch.Tensor, bounded: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds, their columns, excesses and counts of every bounded level, and the saved logits.

    Args:
        logits: the scaled similarities with a -inf diagonal, rows and columns in sorted order.
        start, size: every level's group start and size per view (size 0: unknown label).
        bounded: the bounded levels (non-empty).

    Shape:
        logits: (N, N) float CPU, contiguous; start, size: (L, N) int64. Returns ``bound``,
        ``bound_column``, ``excess``, ``count``, each (L, N) (zero on levels that are not
        bounded), ``offsets`` (N,) and ``inner`` (the saved coarsest-group logits, flat).
    """
    num_levels, n = size.shape
    outer = min(bounded)
    offsets = torch.cumsum(size[outer], dim=0) - size[outer]
    inner = logits.new_empty(int(size[outer].sum()))
    bound = logits.new_full((num_levels, n), float("inf"))
    bound_column = torch.arange(n).repeat(num_levels, 1)
    excess = logits.new_zeros((num_levels, n))
    count = logits.new_zeros((num_levels, n))
    with _torch_threads():
        _forward_rows(
            logits.numpy(),
            start.numpy(),
            size.numpy(),
            np.asarray(bounded, dtype=np.int64),
            outer,
            offsets.numpy(),
            inner.numpy(),
            bound.numpy(),
            bound_column.numpy(),
            excess.numpy(),
            count.numpy(),
        )
    return bound, bound_column, excess, count, offsets, inner


def constraint_backward(
    grad_logits: torch.Tensor,
    start: torch.Tensor,
    size: torch.Tensor,
    bounded: list[int],
    offsets: torch.Tensor,
    inner: torch.Tensor,
    bound: torch.Tensor,
    bound_column: torch.Tensor,
    weight: torch.Tensor,
    at_bound: torch.Tensor,
) -> None:
    """Add the constraint's part of d loss / d logits to ``grad_logits``, in place: over every
    bounded level's in-group pairs ``w_li [x_ip > c_li] + w_lp [x_ip > c_lp]``, minus
    ``at_bound_li`` on each bound's own pair (i, column) and its transpose.

    Shape:
        grad_logits: (N, N) float CPU, contiguous; weight, at_bound: (L, N); the rest as returned
        by :func:`constraint_forward`.
    """
    with _torch_threads():
        _backward_rows(
            grad_logits.numpy(),
            start.numpy(),
            size.numpy(),
            np.asarray(bounded, dtype=np.int64),
            min(bounded),
            offsets.numpy(),
            inner.numpy(),
            bound.numpy(),
            bound_column.numpy(),
            weight.contiguous().numpy(),
            at_bound.contiguous().numpy(),
        )
