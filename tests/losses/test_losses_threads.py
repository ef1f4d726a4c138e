"""The losses leave the caller's thread settings alone: torch's intra-op count (from
``OMP_NUM_THREADS`` or ``torch.set_num_threads``) and numba's count are the same after a loss's
forward and backward passes as before, and numba's compiled loops run on torch's count.

numba's OpenMP layer sets the OpenMP thread count of the thread that starts its pool; started from
the caller's thread, that raised torch from 1 thread to 2 for the rest of the process. Each check
runs in a fresh interpreter, since the pool starts once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import numba
import pytest
import torch

import hcl.losses._compiled as compiled
from hcl.losses import HiMulConE, SupConLoss

LABELS = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 2], [1, 2], [1, 3]])

# Prints torch's thread count (and numba's, where the caller set it: asking numba starts its pool in
# the asking thread) before and after the losses that use the compiled loops. Arguments: the
# caller's torch count, then numba's (set first: numba's own start changes torch's count).
PROBE = """
import json, sys, torch, numba
from hcl.losses import HiMulConE, SupConLoss
if len(sys.argv) > 2:
    numba.set_num_threads(int(sys.argv[2]))
if len(sys.argv) > 1:
    torch.set_num_threads(int(sys.argv[1]))
def counts():
    return [torch.get_num_threads()] + ([numba.get_num_threads()] if len(sys.argv) > 2 else [])
before = counts()
SupConLoss()(torch.randn(8, 2, 4, requires_grad=True), torch.arange(8) % 2).backward()
labels = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3]] * 2)
HiMulConE()(torch.randn(8, 2, 4, requires_grad=True), labels).backward()
print(json.dumps({"before": before, "after": counts(), "layer": numba.threading_layer()}))
"""


def _probe(env: dict[str, str], *args: str) -> dict[str, list[int]]:
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path])
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("omp_threads", ["1", "2"])
def test_omp_num_threads_survives_a_loss(omp_threads: str) -> None:
    counts = _probe({"OMP_NUM_THREADS": omp_threads})
    assert counts["before"] == [int(omp_threads)]
    assert counts["after"] == counts["before"], counts


def test_the_callers_torch_set_num_threads_survives_a_loss() -> None:
    counts = _probe({}, "1")
    assert counts["before"] == [1]
    assert counts["after"] == [1], counts


def test_the_callers_torch_and_numba_thread_counts_survive_a_loss() -> None:
    counts = _probe({}, "1", "1")
    assert counts["before"] == [1, 1]
    assert counts["after"] == [1, 1], counts


def test_the_compiled_loops_run_on_torchs_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    for name in ("_forward_rows", "_backward_rows", "_scale_rows"):
        kernel = getattr(compiled, name)

        def recording(*args: object, _kernel: Callable[..., object] = kernel) -> object:
            seen.append(numba.get_num_threads())
            return _kernel(*args)

        monkeypatch.setattr(compiled, name, recording)
    numba_threads = numba.get_num_threads()
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        torch.set_num_threads(threads)  # the fixture restores the test's count afterwards
        seen.clear()
        features = torch.randn(6, 2, 3, requires_grad=True)
        HiMulConE()(features, LABELS).backward()
        SupConLoss()(features, LABELS[:, 0]).backward()
        assert seen and set(seen) == {threads}, (threads, seen)
        assert numba.get_num_threads() == numba_threads
