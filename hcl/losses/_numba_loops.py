"""Running numba's parallel loops on torch's intra-op thread count, without touching either
library's thread settings.

numba's OpenMP layer, when it starts its pool, sets the starting thread's OpenMP thread count to
``NUMBA_NUM_THREADS`` (``omp_set_num_threads``), and that count is torch's intra-op count when the
two share libgomp: started from the caller's thread, the pool raised a caller's
``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)`` to 2 for the rest of the process (and a
resumed run then did one step with fewer threads than an uninterrupted one). So the pool is
started from a short-lived thread of its own, and each call sets numba's (thread-local) count to
torch's for the call only. On one torch thread a loop runs as its serial twin (the same code
compiled without ``parallel``): no pool, and no count to set and restore, which costs tens of
microseconds a call next to torch's own threads.
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable

import numba
import torch

__all__ = ["FAST_MATH", "parallel_loop", "run"]

# Reassociation lets the row sums vectorise; no flag assumes finite values (the diagonal is -inf).
FAST_MATH = {"reassoc", "contract", "nsz"}

# Each parallel loop's serial twin, by the parallel loop.
_SERIAL: dict[Callable[..., object], Callable[..., object]] = {}


def parallel_loop(function: Callable[..., object]) -> Callable[..., object]:
    """Compile ``function`` as a parallel numba loop (cached on disk, no GIL, :data:`FAST_MATH`)
    and its serial twin, for :func:`run`."""
    options = {"cache": True, "nogil": True, "fastmath": FAST_MATH}
    kernel = numba.njit(parallel=True, **options)(function)
    # The twin is a copy of the function under its own name: the two must not share numba's
    # on-disk cache entry. Without ``parallel``, ``prange`` is ``range``.
    name = f"{function.__name__}_serial"
    twin = types.FunctionType(
        function.__code__, function.__globals__, name, function.__defaults__, function.__closure__
    )
    twin.__kwdefaults__, twin.__qualname__ = function.__kwdefaults__, name
    _SERIAL[kernel] = numba.njit(parallel=False, **options)(twin)
    return kernel


@functools.cache
def _start_numba_pool() -> None:
    """Start numba's thread pool once, from a thread that ends at once, so that the OpenMP thread
    count its start sets is that thread's, not the caller's."""
    starter = threading.Thread(target=numba.get_num_threads, name="hcl-numba-pool-start")
    starter.start()
    starter.join()


def run(kernel: Callable[..., object], *args: object) -> object:
    """Call a :func:`parallel_loop` on ``torch.get_num_threads()`` threads (at most numba's pool
    size): on one thread its serial twin, else the parallel loop with the calling thread's numba
    count set for the call only (and left alone when it is right)."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if threads == 1:
        return _SERIAL[kernel](*args)
    _start_numba_pool()
    previous = numba.get_num_threads()
    if previous == threads:
        return kernel(*args)
    numba.set_num_threads(threads)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(previous)
