"""The blocked ranking engine behind :func:`hcl.metrics.per_level_retrieval`.

Relevance at level ``l`` is equality of the label prefix ``0..l`` (:func:`hcl.labels.prefix_ids`),
so one pass over the similarities serves every level. The similarity matrix is never held whole:
each block of queries gets a (block, gallery) similarity chunk, and every gallery item in it is
turned into one integer sort key ``(quantised similarity, how many levels it shares with the
query)``. Sorting those keys once gives, at every level, the rank of every relevant item. Only
the top R ranks of a row matter (R = the number of relevant items, largest at level 0), so only
that part is selected and sorted (a value-only SIMD sort). In long rows the coarsest level's R
can be half the gallery; there the sort stops at the finer levels' largest R, and the coarsest
level's deeper ranks are scored from a run of hits in closed form and a sort of the keys from
its first miss on (see :mod:`hcl.metrics._ranked_rows`). The
gallery is first ordered by label path, so the items sharing a prefix with a query are one
contiguous run per level and the "levels shared" field is written with a few slice additions.

Two engines compute the per-block sums: :func:`numpy_block_sums` on the CPU (row groups on
threads; compiled row loops, :mod:`hcl.metrics._compiled_rows`, where numba is installed, else
array operations) and :func:`torch_block_sums` on accelerators (whole-block tensor operations).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from hcl.labels import prefix_ids
from hcl.metrics._ranked_rows import hits_beyond_depth, hits_in_top_r, sorted_depth, sorted_top

__all__ = ["KeyLayout", "RankingPlan", "compiled_rows", "numpy_block_sums", "retrieval_sums", "torch_block_sums"]

# Rows per CPU task: small enough that a task's passes over its rows stay in cache.
_ROWS_PER_TASK = 8


@functools.cache
def compiled_rows() -> ModuleType | None:
    """:mod:`hcl.metrics._compiled_rows`, imported on first use, or None without numba or
    without a writable place for its cache (numba then raises RuntimeError)."""
    try:
        from hcl.metrics import _compiled_rows
    except (ImportError, RuntimeError):
        return None
    return _compiled_rows


class RankingPlan:
    """Where each query's label prefixes sit in the gallery once it is ordered by label path.

    The gallery is sorted lexicographically by its prefix ids, so at every level the items
    sharing a prefix form one contiguous run ``[start, end)``, and a query's runs are nested.
    ``relevant[q, l]`` is the number of relevant items of query q at level l, or -1 where the
    query is skipped (unknown label, or nothing relevant).
    """

    def __init__(
        self,
        q_labels: torch.Tensor,
        g_labels: torch.Tensor,
        leave_one_out: bool,
        query_indices: np.ndarray | None = None,
    ) -> None:
        num_gallery, num_levels = g_labels.shape
        ids = prefix_ids(g_labels if leave_one_out else torch.cat([q_labels, g_labels])).numpy()
        q_ids, g_ids = ids[: len(q_labels)], ids[len(ids) - num_gallery :]
        if query_indices is not None:  # leave-one-out over a selection of the gallery
            q_ids = g_ids[query_indices]
        order = np.lexsort(g_ids.T[::-1])
        sorted_ids = g_ids[order]
        positions = np.arange(num_gallery)
        self.order = torch.from_numpy(order)
        self.num_levels = num_levels
        self.starts = np.zeros((len(q_labels), num_levels), dtype=np.int64)
        self.ends = np.zeros((len(q_labels), num_levels), dtype=np.int64)
        for level in range(num_levels):
            num_ids = int(ids[:, level].max()) + 1
            if num_ids <= 0:
                break
            column = sorted_ids[:, level]
            known = column >= 0
            first = np.full(num_ids, num_gallery, dtype=np.int64)
            last = np.full(num_ids, -1, dtype=np.int64)
            np.minimum.at(first, column[known], positions[known])
            np.maximum.at(last, column[known], positions[known])
            first[last < 0] = 0
            q_column = q_ids[:, level]
            q_known = q_column >= 0
            self.starts[q_known, level] = first[q_column[q_known]]
            self.ends[q_known, level] = last[q_column[q_known]] + 1
        runs = self.ends - self.starts
        self.self_position = None
        if leave_one_out:
            self.self_position = np.argsort(order)
            if query_indices is not None:
                self.self_position = self.self_position[query_indices]
            runs = np.maximum(runs - 1, 0)
        self.relevant = np.where(runs > 0, runs, -1)

    def mark_rows(self, keys: np.ndarray, first: int, self_key: int) -> None:
        """Add one to each key per level its item shares with the query; push the query itself last.

        Shape:
            keys: (B, N) for queries ``first .. first + B - 1``, modified in place.
        """
        for row in range(len(keys)):
            query = first + row
            for level in range(self.num_levels):
                lo, hi = self.starts[query, level], self.ends[query, level]
                if hi <= lo:
                    break
                keys[row, lo:hi] += 1
            if self.self_position is not None:
                keys[row, self.self_position[query]] = self_key

    def mark_rows_torch(self, keys: torch.Tensor, first: int, self_key: int) -> None:
        """:meth:`mark_rows` with whole-tensor operations, for accelerators."""
        rows = torch.arange(len(keys), device=keys.device)
        positions = torch.arange(keys.shape[1], device=keys.device)
        starts = torch.from_numpy(self.starts[first : first + len(keys)]).to(keys.device)
        ends = torch.from_numpy(self.ends[first : first + len(keys)]).to(keys.device)
        for level in range(self.num_levels):
            keys.add_((positions >= starts[:, level, None]) & (positions < ends[:, level, None]))
        if self.self_position is not None:
            self_position = torch.from_numpy(self.self_position[first : first + len(keys)]).to(keys.device)
            keys[rows, self_position] = self_key


@dataclass(frozen=True)
class KeyLayout:
    """How a (similarity, shared depth) pair is packed into one integer sort key.

    ``key = floor(trunc(-sim * 2**(scale_bits + code_bits)) / 2**code_bits) * 2**code_bits +
    shared``: the similarity quantised (monotonically) to cells of width ``2**-scale_bits`` in the
    high bits, and ``shared`` (0..L), the number of levels the item shares with the query, in the
    low ``code_bits`` bits. Ascending key order is descending similarity, and within a cell the
    least relevant item comes first. The query itself gets the largest key, so it sorts last.
    """

    code_bits: int
    scale_bits: int
    np_dtype: type
    torch_dtype: torch.dtype

    @classmethod
    def for_levels(cls, num_levels: int) -> KeyLayout:
        code_bits = max(1, num_levels.bit_length())
        # |key| <= 2**(scale_bits + code_bits) * (1 + float32 rounding) must fit the dtype.
        if code_bits <= 5:
            return cls(code_bits, 29 - code_bits, np.int32, torch.int32)
        return cls(code_bits, 40, np.int64, torch.int64)

    @property
    def code_mask(self) -> int:
        return 2**self.code_bits - 1

    @property
    def self_key(self) -> int:
        return int(np.iinfo(self.np_dtype).max)


@dataclass(frozen=True)
class _Context:
    """Everything a block needs besides its similarities."""

    plan: RankingPlan
    layout: KeyLayout
    ks: tuple[int, ...]
    num_rankable: int
    harmonic: np.ndarray  # harmonic[n] = 1 + 1/2 + ... + 1/n, n = 0..num_rankable


def retrieval_sums(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    plan: RankingPlan,
    ks: tuple[int, ...],
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-level sums of the metrics over counted queries, and the counts.

    Blocks of ``batch_size`` queries go to :func:`numpy_block_sums` when the gallery is on the
    CPU, else to :func:`torch_block_sums`.

    Returns:
        ``(sums, counts)``: sums has columns precision@1, r_precision, map@r, recall@k (each k).

    Shape:
        queries: (Q, D) and gallery: (N, D), both L2-normalised. Returns (L, 3 + len(ks))
        float64 and (L,) int64.
    """
    num_levels = plan.num_levels
    layout = KeyLayout.for_levels(num_levels)
    num_gallery = len(gallery)
    num_rankable = num_gallery - int(plan.self_position is not None)
    harmonic = np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, num_rankable + 1))))
    context = _Context(plan, layout, ks, num_rankable, harmonic)
    gallery_t = gallery[plan.order.to(gallery.device)].T.contiguous()
    # A power-of-two scale is exact, so the product below is exactly the scaled similarity.
    scaled_queries = queries * -float(2 ** (layout.scale_bits + layout.code_bits))
    sims_buffer = torch.empty(batch_size, num_gallery, dtype=torch.float32, device=gallery.device)
    sums = np.zeros((num_levels, 3 + len(ks)))
    counts = np.zeros(num_levels, dtype=np.int64)
    on_cpu = gallery.device.type == "cpu"
    workers = max(1, torch.get_num_threads()) if on_cpu else 1
    engine = numpy_block_sums if on_cpu else torch_block_sums
    buffers = _Buffers.allocate(batch_size, num_gallery, layout) if on_cpu else None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(queries), batch_size):
            stop = min(start + batch_size, len(queries))
            sims = sims_buffer[: stop - start]
            if on_cpu:
                # NumPy's OpenBLAS: about 1.4x torch's MKL on the AMD EPYC this was tuned on.
                np.matmul(scaled_queries[start:stop].numpy(), gallery_t.numpy(), out=sims.numpy())
            else:
                torch.mm(scaled_queries[start:stop], gallery_t, out=sims)
            block_sums, block_counts = engine(sims, start, context, pool, buffers)
            sums += block_sums
            counts += block_counts
    return sums, counts


@dataclass(frozen=True)
class _Buffers:
    """Per-call scratch arrays for the CPU engine, reused across blocks to avoid page faults.

    The array ops use ``keys``, ``codes`` and ``relevant`` (a row each per query of a block); the
    compiled rows one scratch array per thread from ``scratch`` (None: no numba).
    """

    keys: np.ndarray
    codes: np.ndarray
    relevant: np.ndarray
    scratch: Any = None  # hcl.metrics._compiled_rows.ThreadScratch

    @classmethod
    def allocate(cls, rows: int, n: int, layout: KeyLayout) -> _Buffers:
        compiled = compiled_rows()
        if compiled is None:
            shape = (rows, n)
            return cls(np.empty(shape, layout.np_dtype), np.empty(shape, np.uint8), np.empty(shape, bool))
        nothing = np.empty((0, 0))
        return cls(nothing, nothing, nothing, compiled.ThreadScratch(n, layout.np_dtype))


def numpy_block_sums(
    sims: torch.Tensor, first: int, context: _Context, pool: ThreadPoolExecutor, buffers: _Buffers
) -> tuple[np.ndarray, np.ndarray]:
    """CPU engine: small groups of rows go to threads, so each group's passes stay in cache.

    With numba, each group is one compiled loop (:mod:`hcl.metrics._compiled_rows`); without it,
    array operations: NumPy's partition and SIMD sort are much faster than ``torch.sort`` on the
    CPU, and release the GIL, as do the other array operations here. Both give the same numbers.
    """
    array = sims.numpy()
    if buffers.scratch is not None:
        return compiled_rows().block_sums(array, first, context, pool, buffers.scratch, _ROWS_PER_TASK)
    futures = []
    for lo in range(0, len(array), _ROWS_PER_TASK):
        hi = min(lo + _ROWS_PER_TASK, len(array))
        scratch = _Buffers(buffers.keys[lo:hi], buffers.codes[lo:hi], buffers.relevant[lo:hi])
        futures.append(pool.submit(_numpy_rows, array[lo:hi], first + lo, context, scratch))
    results = [future.result() for future in futures]
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _numpy_rows(sims: np.ndarray, first: int, context: _Context, scratch: _Buffers) -> tuple[np.ndarray, np.ndarray]:
    """Metric sums for the queries ``first .. first + len(sims) - 1``.

    Shape:
        sims: (B, N) scaled similarities. Returns (L, 3 + len(ks)) and (L,).
    """
    layout, ks, plan = context.layout, context.ks, context.plan
    num_levels = plan.num_levels
    keys = scratch.keys
    np.copyto(keys, sims, casting="unsafe")  # truncates toward zero
    np.bitwise_and(keys, ~layout.code_mask, out=keys)
    plan.mark_rows(keys, first, layout.self_key)
    relevant_counts = plan.relevant[first : first + len(keys)]
    depth = min(context.num_rankable, sorted_depth(relevant_counts, ks, keys.shape[1]))
    top = sorted_top(keys, depth)
    shared = np.bitwise_and(top, layout.code_mask, out=scratch.codes[:, :depth], casting="unsafe")
    sums = np.zeros((num_levels, 3 + len(ks)))
    counts = np.zeros(num_levels, dtype=np.int64)
    for level in range(num_levels):
        r = relevant_counts[:, level]
        counted = np.flatnonzero(r > 0)
        if len(counted) == 0:
            break  # a query skipped at a level is skipped at every finer level too
        width = min(depth, max(int(r.max()), ks[-1]))
        relevant = scratch.relevant.reshape(-1)[: len(keys) * width].reshape(len(keys), width)
        np.greater(shared[:, :width], level, out=relevant)
        head = relevant[counted, : ks[-1]]
        sums[level, 0] = head[:, 0].sum()
        for i, k in enumerate(ks):
            sums[level, 3 + i] = head[:, :k].any(axis=1).sum()
        num_hits, ap_times_r = hits_in_top_r(relevant, r, context.harmonic)
        ap_times_r = ap_times_r.astype(np.float64, copy=False)  # bincount of nothing is int64
        for row in np.flatnonzero(r > depth):
            span = (int(plan.starts[first + row, level]), int(plan.ends[first + row, level]))
            hits, ap = hits_beyond_depth(
                keys[row], top[row], int(num_hits[row]), int(r[row]), span, level, layout.code_mask, context.harmonic
            )
            num_hits[row] += hits
            ap_times_r[row] += ap
        r_counted = r[counted]
        sums[level, 1] = (num_hits[counted] / r_counted).sum()
        sums[level, 2] = (ap_times_r[counted] / r_counted).sum()
        counts[level] = len(counted)
    return sums, counts


def torch_block_sums(
    sims: torch.Tensor, first: int, context: _Context, pool: object = None, buffers: object = None
) -> tuple[np.ndarray, np.ndarray]:
    """Accelerator engine: the same keys and metrics as :func:`_numpy_rows`, in whole-block ops."""
    layout, ks, plan = context.layout, context.ks, context.plan
    num_levels = plan.num_levels
    keys = sims.to(layout.torch_dtype).bitwise_and_(~layout.code_mask)
    plan.mark_rows_torch(keys, first, layout.self_key)
    relevant_counts = torch.from_numpy(plan.relevant[first : first + len(keys)]).to(keys.device)
    depth = min(context.num_rankable, max(int(relevant_counts[:, 0].max()), ks[-1]))
    if depth * 8 <= keys.shape[1]:
        top = torch.topk(keys, depth, dim=1, largest=False, sorted=True).values
    else:
        top = torch.sort(keys, dim=1).values[:, :depth]
    shared = top & layout.code_mask
    positions = torch.arange(depth, device=keys.device)
    # Counts stay exact in float32 below 2**24.
    dtype = torch.float32 if depth < 2**24 else torch.float64
    inverse_ranks = 1.0 / torch.arange(1, depth + 1, device=keys.device, dtype=torch.float64)
    sums = np.zeros((num_levels, 3 + len(ks)))
    counts = np.zeros(num_levels, dtype=np.int64)
    for level in range(num_levels):
        r = relevant_counts[:, level]
        counted = r > 0
        num_counted = int(counted.sum())
        if num_counted == 0:
            break
        width = min(depth, max(int(r.max()), ks[-1]))
        relevant = (shared[:, :width] > level).to(dtype)
        hits = relevant.cumsum(dim=1)
        r_safe = r.clamp(min=1)
        r_precision = hits.gather(1, (r_safe - 1)[:, None]).squeeze(1).double() / r_safe
        # MAP@R: at each relevant position i <= R, the precision hits(i) / i.
        precision = (hits * relevant).double().mul_(inverse_ranks[:width])
        precision.masked_fill_(positions[:width] >= r[:, None], 0)
        average_precision = precision.sum(dim=1) / r_safe
        columns = [relevant[:, 0].double(), r_precision, average_precision]
        columns += [(hits[:, k - 1] > 0).double() for k in ks]
        per_query = torch.stack(columns, dim=1) * counted[:, None]
        sums[level] = per_query.sum(dim=0).cpu().numpy()
        counts[level] = num_counted
    return sums, counts
