"""The loss kernel's alternative code paths agree with the oracle: compiled loops versus array ops
for the hierarchy constraint, square slices versus gathered blocks for the array ops' in-group
pairs, and a shared versus per-row shift for the log-sum-exp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from oracles import oracle_paper_loss, paper_default_weights

import hcl.losses._constraint as constraint
import hcl.losses._kernel as kernel
from hcl.losses import HiConE, HiMulConE

# Two coarse classes, three mid classes, ragged fine labels: groups of very different sizes.
LABELS = torch.tensor(
    [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, -1], [0, -1, -1], [1, 2, 0], [1, 2, 0], [1, 2, 1], [1, 3, 0]]
)


def features(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(10, 2, 5, generator=generator, dtype=torch.float64).requires_grad_()


def value_and_grad(loss: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return loss.detach(), torch.autograd.grad(loss, x)[0]


@pytest.mark.parametrize("slices", [True, False], ids=["square-slices", "gathered-blocks"])
@pytest.mark.parametrize("shared_shift", [True, False], ids=["shared-shift", "row-shift"])
def test_code_paths_match_oracle(monkeypatch: pytest.MonkeyPatch, slices: bool, shared_shift: bool) -> None:
    monkeypatch.setattr(constraint, "compiled_module", lambda: None)
    monkeypatch.setattr(constraint, "_SLICE_MIN_SIZE", 0 if slices else 10**9)
    monkeypatch.setattr(constraint, "_SLICE_GROUPS_PER_VIEW", 1.0)
    limit = 600.0 if shared_shift else -1.0
    monkeypatch.setattr(kernel, "_SHARED_SHIFT_RANGE", {torch.float32: limit, torch.float64: limit})
    cases = [
        (0, HiMulConE(0.2, level_weights=[1.0, 2.0, 3.0], constraint="pair"), [1.0, 2.0, 3.0]),
        (1, HiConE(0.7), [1.0] * 3),
    ]
    for seed, loss_fn, weights in cases:
        x = features(seed)
        actual = value_and_grad(loss_fn(x, LABELS), x)
        expected = value_and_grad(oracle_paper_loss(x, LABELS, loss_fn.temperature, weights, constrained=True), x)
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-12)


def test_row_shift_is_used_when_a_shared_shift_would_underflow() -> None:
    # t = 0.004: logits span [-250, 250], wider than exp can hold in float32 after one shared
    # shift (whole rows would underflow), so float32 takes the per-row shift, float64 not.
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(24, 2, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (24, 2), generator=generator)
    loss_fn = HiMulConE(0.004)
    assert 2 / 0.004 > kernel._SHARED_SHIFT_RANGE[torch.float32]
    assert 2 / 0.004 <= kernel._SHARED_SHIFT_RANGE[torch.float64]
    single = x.float().requires_grad_()
    double = x.clone().requires_grad_()
    loss32, loss64 = loss_fn(single, labels), loss_fn(double, labels)
    loss32.backward()
    loss64.backward()
    assert torch.isfinite(loss32)
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-4, atol=0)
    torch.testing.assert_close(single.grad.double(), double.grad, rtol=1e-3, atol=1e-3)


def test_backward_twice_with_retain_graph_gives_the_same_gradient() -> None:
    # The first backward may reuse the saved exponentials in place only when the graph is not
    # kept; with retain_graph=True they must survive for the second pass.
    x = features(4)
    loss = HiMulConE(0.3, constraint="pair")(x, LABELS)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x, retain_graph=True)
    (third,) = torch.autograd.grad(loss, x)
    expected = torch.autograd.grad(oracle_paper_loss(x, LABELS, 0.3, paper_default_weights(3), constrained=True), x)[0]
    assert torch.equal(first, second) and torch.equal(second, third)
    torch.testing.assert_close(first, expected, rtol=1e-6, atol=1e-12)


def test_cpu_loss_uses_the_compiled_constraint() -> None:
    # numba is a dependency (through umap-learn): the CPU path must not fall back to array ops.
    assert constraint.compiled_module() is not None
    assert constraint.compiled_for(torch.zeros(2, 2)) is not None
    # Other devices (CUDA, MPS, ...) have no NumPy view: they take the array ops.
    assert constraint.compiled_for(torch.zeros(2, 2, device="meta")) is None


@pytest.mark.parametrize("reading", ["pair", "pair_held", "hinge"])
def test_compiled_constraint_matches_array_ops_in_float32(monkeypatch: pytest.MonkeyPatch, reading: str) -> None:
    # float32 logits from one product are not exactly symmetric: x_ip and x_pi may differ in the
    # last bit. A view's bound is often such a pair (two views of one sample), so a transposed
    # term compared with the wrong copy moves a whole weight; the paths must agree to rounding.
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 3, (96, 3), generator=generator)
    labels[:4] = -1
    labels[4:8, 1:] = -1
    x = torch.randn(96, 2, 32, generator=generator).requires_grad_()
    loss_fn = HiMulConE(0.1, constraint=reading)
    compiled = value_and_grad(loss_fn(x, labels), x)
    monkeypatch.setattr(constraint, "compiled_module", lambda: None)
    array_ops = value_and_grad(loss_fn(x, labels), x)
    torch.testing.assert_close(compiled, array_ops, rtol=1e-4, atol=1e-6)


def test_compiled_constraint_matches_oracle_on_large_ragged_groups() -> None:
    # Level-0 groups of 88 and 58 views (each row's pair weights and their transposes span many
    # cache lines and prefetched rows); unknown labels make groups of size 0 and 2.
    generator = torch.Generator().manual_seed(11)
    coarse = torch.cat([torch.zeros(46, dtype=torch.int64), torch.ones(29, dtype=torch.int64)])
    labels = torch.stack(
        [coarse, torch.randint(0, 3, (75,), generator=generator), torch.randint(0, 4, (75,), generator=generator)], 1
    )
    labels[:2] = -1
    labels[2:4, 1:] = -1
    x = torch.randn(75, 2, 6, generator=generator, dtype=torch.float64).requires_grad_()
    weights = [1.0, 2.0, 3.0]
    actual = value_and_grad(HiMulConE(0.3, level_weights=weights, constraint="pair")(x, labels), x)
    expected = value_and_grad(oracle_paper_loss(x, labels, 0.3, weights, constrained=True), x)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-12)


GARBAGE_LABELS_SCRIPT = """
import torch
from hcl.losses import HiMulConE, get_loss
labels = torch.tensor([[-1, 0, 0], [-1, 0, 0], [-1, 0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 3], [1, -1, 2], [1, 0, -1]] * 6)
for threads in (1, 2):
    torch.set_num_threads(threads)
    losses = [get_loss("himulcone").build()]
    losses += [HiMulConE(constraint=reading, check_inputs=False) for reading in ("pair", "pair_held", "level_max")]
    for loss in losses:
        x = torch.randn(48, 2, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
        value = loss(x, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(x.grad).all(), (value, loss)
print("in bounds")
"""


def test_compiled_loops_stay_in_bounds_on_labels_that_skip_validation(tmp_path: Path) -> None:
    # check_inputs=False (the registry's losses, the trainer's path) lets through labels with a
    # known value below an unknown one, whose groups need not nest. The loss is then wrong, as
    # documented, but the compiled loops must not read or write outside their arrays: numba's
    # bounds checks (fresh cache, so that they are compiled in) turn any such access into an
    # IndexError. (Before the guard in _forward_rows this corrupted memory: exit code 139.)
    environment = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    environment["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])
    result = subprocess.run(
        [sys.executable, "-c", GARBAGE_LABELS_SCRIPT], env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and "in bounds" in result.stdout, result.stderr[-2000:]
