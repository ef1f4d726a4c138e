"""The CPU retrieval engine's per-row work as one compiled (numba) loop over a group of rows.

Each row of scaled similarities becomes the integer sort keys of
:class:`hcl.metrics._retrieval_engine.KeyLayout` in one vectorised pass over the row's
label-path pieces (the query's nested runs of relevant items; the query itself gets the largest
key). A sorted strided sample of the keys then bounds the ranks each level needs:

* D, the largest R of every level but the coarsest (and the largest k): the keys up to its
  bound, sorted, give every finer level's hits and AP@R, and every level's precision@1 and
  recall@k, from their first D;
* the coarsest level, when its R exceeds D (two coarse classes: R ~ N/2): every key below its
  first miss (the smallest key outside its run) is a hit, so those are only counted; its ranks
  after them are the smallest keys from the first miss on, collected up to a bound sized by the
  ranks still needed, sorted, and scanned.

One branch-free pass collects both sets. A bound that turns out too small (fewer keys than
needed) is widened and the pass repeated, so the sample decides only the speed, never the
result. Sorting is an LSD radix sort of each key's offset from the smallest (11-bit digits, one
counting pass for all digits). Nothing about a row depends on another row or on the thread that
runs it; the rows' sums are added in a fixed order.

The array-op engine of :mod:`hcl.metrics._ranked_rows` computes the same numbers where numba is
missing, with about three times the work (many more passes over each row, NumPy's sort).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

__all__ = ["ThreadScratch", "block_sums", "rows_sums"]

_DIGIT_BITS = 11
_DIGITS = 1 << _DIGIT_BITS
# Runs this short are insertion-sorted: fewer steps than counting a radix sort's digits.
_INSERTION = 48

# Every _SAMPLE_STRIDE-th key is sampled to bound a row's top ranks, and at least _MIN_SAMPLES
# keys (all of them, exact bounds, in rows shorter than that).
_SAMPLE_STRIDE = 32
_MIN_SAMPLES = 1024

# Scratch rows of ``rows_sums`` (each the length of a gallery row).
_KEYS, _TOP, _ZONE, _SAMPLE, _SPARE = range(5)
_SCRATCH_ROWS = 5


@numba.njit(nogil=True, cache=True)
def _sort(values, spare):  # noqa: ANN001, ANN202
    """Sort ``values`` in place; ``spare`` (at least as long) is overwritten.

    Unsigned indices throughout: numba then adds no wraparound check for negative ones.
    """
    n = values.shape[0]
    if n <= _INSERTION:
        for i in range(1, n):
            value = values[i]
            j = i - 1
            while j >= 0 and values[j] > value:
                values[j + 1] = values[j]
                j -= 1
            values[j + 1] = value
        return
    # Offsets from the smallest key, in wrapping unsigned arithmetic: exact for any int64 span.
    low = np.uint64(np.int64(values.min()))
    span = np.uint64(np.int64(values.max())) - low
    passes = 0
    while passes * _DIGIT_BITS < 64 and (span >> np.uint64(passes * _DIGIT_BITS)) > 0:
        passes += 1
    counts = np.zeros((passes, _DIGITS), dtype=np.uint32)
    digit_mask = np.uint64(_DIGITS - 1)
    for i in range(n):
        offset = np.uint64(np.int64(values[i])) - low
        for p in range(passes):
            counts[p, (offset >> np.uint64(p * _DIGIT_BITS)) & digit_mask] += np.uint32(1)
    source, target = values, spare[:n]
    swapped = False
    for p in range(passes):
        digit_counts = counts[p]
        if digit_counts.max() == n:  # one digit value for all: this pass would keep the order
            continue
        total = np.uint32(0)
        for d in range(_DIGITS):
            count = digit_counts[d]
            digit_counts[d] = total
            total += count
        shift = np.uint64(p * _DIGIT_BITS)
        for i in range(n):
            value = source[i]
            d = ((np.uint64(np.int64(value)) - low) >> shift) & digit_mask
            target[np.uint64(digit_counts[d])] = value
            digit_counts[d] += np.uint32(1)
        source, target = target, source
        swapped = not swapped
    if swapped:
        values[:] = source


@numba.njit(nogil=True, cache=True)
def _fill_keys(keys, sims, keep, code):  # noqa: ANN001, ANN202
    for i in range(keys.shape[0]):  # from 0: no wraparound check, so the loop vectorises
        keys[i] = (np.int64(sims[i]) & keep) + code


@numba.njit(nogil=True, cache=True)
def _collect(keys, top_bound, low, high, top, zone):  # noqa: ANN001, ANN202
    """Copy the keys ``<= top_bound`` to the start of ``top`` and those in ``[low, high]`` to the
    start of ``zone`` (none if ``high < low``); their numbers.

    Branch-free (each key is written to both and the ends advance by the tests): about a third
    of a row is kept, not a rate a branch predicts well. Unsigned indices keep numba from adding
    wraparound checks for negative ones.
    """
    span = np.uint64(high - low)  # in [low, high]: uint64(key - low) <= span
    wanted = np.uint64(high >= low)
    top_index, zone_index = np.uint64(0), np.uint64(0)
    for i in range(keys.shape[0]):
        value = keys[i]
        top[top_index] = value
        top_index += np.uint64(value <= top_bound)
        zone[zone_index] = value
        zone_index += np.uint64(np.uint64(np.int64(value) - low) <= span) & wanted
    return np.int64(top_index), np.int64(zone_index)


@numba.njit(nogil=True, cache=True)
def _count_below(keys, bound):  # noqa: ANN001, ANN202
    count = 0
    for i in range(keys.shape[0]):
        count += keys[i] < bound
    return count


@numba.njit(nogil=True, cache=True)
def _smallest(keys, empty):  # noqa: ANN001, ANN202
    smallest = np.int64(empty)
    for i in range(keys.shape[0]):
        smallest = min(smallest, np.int64(keys[i]))
    return smallest


@numba.njit(nogil=True, cache=True)
def _bound(sample, stride, start, rank, widen, largest):  # noqa: ANN001, ANN202
    """A key likely to have at least ``rank`` keys from the ``start``-th sample's key up to it
    (``largest``: keep everything)."""
    if stride == 1:
        index = float(start + rank - 1)  # the sample is the whole row: exact
    else:
        expected = rank / stride
        index = start + expected + widen * (3.0 * math.sqrt(expected) + 4.0)
    if index >= sample.shape[0]:
        return largest
    return min(np.int64(sample[int(index)]), largest)


@numba.njit(nogil=True, cache=True)
def rows_sums(
    sims, first, starts, ends, self_position, relevant, ks, code_mask, self_key, stride, scratch, sums, counts
):  # noqa: ANN001, ANN201, PLR0912, PLR0913, PLR0915
    """Add the metric sums of queries ``first .. first + B - 1`` to ``sums`` and ``counts``.

    Args:
        sims: their scaled similarities (see :class:`KeyLayout`) to the gallery in path order.
        starts, ends: every query's nested runs of relevant items per level (as
            :class:`RankingPlan` holds them); self_position: each query's own position
            (leave-one-out) or empty; relevant: R per query and level (<= 0: skipped).
        ks: the sorted k of recall@k; code_mask, self_key: from the key layout.
        stride: every how many keys one is sampled (1: the whole row, exact bounds).
        scratch: ``_SCRATCH_ROWS`` rows of keys as long as a gallery row, overwritten.

    Shape:
        sims: (B, N) float32; starts, ends, relevant: (Q, L); self_position: (Q,) or (0,);
        sums: (L, 3 + len(ks)) float64 (precision@1, r_precision, map@r, recall@k); counts: (L,).
    """
    num_rows, n = sims.shape
    num_levels = starts.shape[1]
    leave_one_out = self_position.shape[0] > 0
    num_rankable = n - 1 if leave_one_out else n
    keep = ~np.int64(code_mask)
    largest = np.int64(self_key) - 1  # every key but the query's own
    top_k = ks[ks.shape[0] - 1]
    keys, top, zone, spare = scratch[_KEYS], scratch[_TOP], scratch[_ZONE], scratch[_SPARE]
    num_samples = (n + stride - 1) // stride
    sample = scratch[_SAMPLE, :num_samples]
    for row in range(num_rows):
        query = first + row
        active = 0
        while active < num_levels and relevant[query, active] > 0:
            active += 1
        if active == 0:
            continue
        marked = 0
        while marked < num_levels and ends[query, marked] > starts[query, marked]:
            marked += 1
        # The keys, piece by piece: ``code`` levels shared on each piece of the nested runs.
        sim = sims[row]
        position = 0
        for level in range(marked):
            _fill_keys(keys[position : starts[query, level]], sim[position:], keep, level)
            position = starts[query, level]
        for level in range(marked, 0, -1):
            _fill_keys(keys[position : ends[query, level - 1]], sim[position:], keep, level)
            position = ends[query, level - 1]
        _fill_keys(keys[position:], sim[position:], keep, 0)
        if leave_one_out:
            keys[self_position[query]] = self_key

        depth = top_k
        for level in range(1, active):
            depth = max(depth, relevant[query, level])
        coarse_r = relevant[query, 0]
        tail = coarse_r > depth  # the coarsest level is scored from its first miss on
        if not tail:
            depth = coarse_r if coarse_r > depth else depth
        depth = min(depth, num_rankable)
        run_start, run_end = starts[query, 0], ends[query, 0]  # the coarsest level's hits

        for t in range(num_samples):
            sample[t] = keys[t * stride]
        _sort(sample, spare)
        run = keys[run_start:run_end]
        first_miss, below, need, start = largest + 1, 0, 0, 0
        if tail:
            # Every key below the coarsest level's first miss is a hit; the ranks after them are
            # the smallest keys from the first miss on, collected up to a bound and sorted.
            first_miss = min(_smallest(keys[:run_start], largest + 1), _smallest(keys[run_end:], largest + 1))
            below = min(_count_below(run, first_miss), coarse_r)
            need = coarse_r - below
            start = np.searchsorted(sample, first_miss)
        widen = 1.0
        while True:
            top_bound = _bound(sample, stride, 0, depth, widen, largest)
            zone_bound = _bound(sample, stride, start, need, widen, largest) if need > 0 else first_miss - 1
            num_top, num_zone = _collect(keys, top_bound, first_miss, zone_bound, top, zone)
            if num_top >= depth and num_zone >= need:
                break
            widen *= 4.0
        _sort(top[:num_top], spare)

        for level in range(active):
            first_hit = top_k
            for i in range(top_k):
                if (top[i] & code_mask) > level:
                    first_hit = i
                    break
            sums[level, 0] += first_hit == 0
            for j in range(ks.shape[0]):
                sums[level, 3 + j] += first_hit < ks[j]
            counts[level] += 1
            r = relevant[query, level]
            if level == 0 and tail:
                continue
            found = 0
            total = 0.0
            for i in range(r):
                if (top[i] & code_mask) > level:
                    found += 1
                    total += found / (i + 1)
            sums[level, 1] += found / r
            sums[level, 2] += total / r

        if tail:
            found = below
            total = float(below)
            if need > 0:
                _sort(zone[:num_zone], spare)
                for i in range(need):
                    if (zone[i] & code_mask) > 0:
                        found += 1
                        total += found / (below + i + 1)
            sums[0, 1] += found / coarse_r
            sums[0, 2] += total / coarse_r


class ThreadScratch:
    """One scratch array for :func:`rows_sums` per thread, made on its first use there: a thread
    keeps reusing its own, still in its core's cache."""

    def __init__(self, n: int, dtype: type) -> None:
        self._n, self._dtype, self._local = n, dtype, threading.local()

    def get(self) -> np.ndarray:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = np.empty((_SCRATCH_ROWS, self._n), self._dtype)
        return scratch


def block_sums(
    sims: np.ndarray, first: int, context: Any, pool: ThreadPoolExecutor, scratch: ThreadScratch, rows_per_task: int
) -> tuple[np.ndarray, np.ndarray]:
    """Metric sums and counts of a block's queries, groups of ``rows_per_task`` rows on the pool's
    threads, each with its thread's scratch array.

    ``context`` is the engine's: the ranking plan, key layout and ks.

    Shape:
        sims: (B, N) scaled similarities of queries ``first .. first + B - 1``. Returns
        (L, 3 + len(ks)) float64 and (L,) int64.
    """
    plan, layout = context.plan, context.layout
    ks = np.asarray(context.ks, dtype=np.int64)
    self_position = np.empty(0, dtype=np.int64) if plan.self_position is None else plan.self_position
    num_samples = max(_MIN_SAMPLES, sims.shape[1] // _SAMPLE_STRIDE)
    stride = max(1, sims.shape[1] // num_samples)

    def group_sums(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        sums = np.zeros((plan.num_levels, 3 + len(ks)))
        counts = np.zeros(plan.num_levels, dtype=np.int64)
        rows_sums(
            sims[lo:hi], first + lo, plan.starts, plan.ends, self_position, plan.relevant, ks,
            layout.code_mask, layout.self_key, stride, scratch.get(), sums, counts,
        )  # fmt: skip
        return sums, counts

    groups = range(0, len(sims), rows_per_task)
    futures = [pool.submit(group_sums, lo, min(lo + rows_per_task, len(sims))) for lo in groups]
    results = [future.result() for future in futures]
    return sum(r[0] for r in results), sum(r[1] for r in results)
