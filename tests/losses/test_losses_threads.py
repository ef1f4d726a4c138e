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
import numpy as np
import pytest
import torch

import hcl.losses._compiled as compiled
import hcl.losses._numba_loops as numba_loops
from hcl.losses import HiMulConE, SupConLoss
from hcl.losses.groups import build_view_groups

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
try:
    layer = numba.threading_layer()
except ValueError:  # no pool started: on one thread the loops run their serial twins
    layer = None
print(json.dumps({"before": before, "after": counts(), "layer": layer}))
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
    """On one torch thread the serial twins run (no pool, no numba count touched); on more the
    parallel loops, with numba's count equal to torch's during the call."""
    seen: list[tuple[str, int | None]] = []

    def recording(kernel: Callable[..., object], kind: str) -> Callable[..., object]:
        def record(*args: object) -> object:
            seen.append((kind, None if kind == "serial" else numba.get_num_threads()))
            return kernel(*args)

        return record

    serial = {}
    names = [name for name, value in vars(compiled).items() if any(value is kernel for kernel in numba_loops._SERIAL)]
    assert len(names) >= 4, names
    for name in names:
        kernel = getattr(compiled, name)
        parallel = recording(kernel, "parallel")
        serial[parallel] = recording(numba_loops._SERIAL[kernel], "serial")
        monkeypatch.setattr(compiled, name, parallel)
    monkeypatch.setattr(numba_loops, "_SERIAL", serial)
    numba_threads = numba.get_num_threads()
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        torch.set_num_threads(threads)  # the fixture restores the test's count afterwards
        seen.clear()
        features = torch.randn(6, 2, 3, requires_grad=True)
        HiMulConE()(features, LABELS).backward()
        SupConLoss()(features, LABELS[:, 0]).backward()
        expected = ("serial", None) if threads == 1 else ("parallel", threads)
        assert len(seen) >= 3 and set(seen) == {expected}, (threads, seen)
        assert numba.get_num_threads() == numba_threads


def test_the_serial_twins_give_the_parallel_loops_values_bit_for_bit() -> None:
    """Each row is one thread's work in both, so one and two threads agree exactly."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (40, 3), generator=generator).cumsum(dim=1)
    groups = build_view_groups(labels, 2)
    z = torch.nn.functional.normalize(torch.randn(80, 8, generator=generator), dim=1)
    logits = torch.mm(z * 10, z.t())
    logits.diagonal().fill_(float("-inf"))
    weights = torch.rand(groups.group_size.shape[0], generator=generator)
    scale = torch.rand(80, generator=generator)
    results = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        torch.set_num_threads(threads)  # the fixture restores the test's count afterwards
        *saved, held, values = compiled.constraint_forward(
            logits.clone(), groups.start, groups.size, 2, groups.global_group, weights, 0.5
        )
        gradient = logits.nan_to_num(neginf=0.0).exp()
        compiled.constraint_backward(gradient, groups.start, groups.size, 2, tuple(saved), 0.7, True, scale)
        results.append([*saved, held, values, gradient.numpy()])
    for one, two in zip(*results):
        assert np.array_equal(one, two)
