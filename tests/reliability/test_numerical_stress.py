"""Numerical stress: low temperatures, wide embeddings, bf16/fp16 autocast and a batch of 8192 views.

Stated tolerances (measured errors are 10-100 times smaller on CPU):

* float32 against float64 inputs, at temperatures down to 0.01 and dimensions 2..4096: loss
  values within a relative 1e-5; gradients within 1e-4 of the largest gradient entry on generic
  embeddings, 1e-2 on tightly clustered or two-cluster embeddings (unconstrained losses).
* bf16 autocast against float32 (a linear model's outputs, then the loss): loss within a
  relative 2e-3, parameter gradients with cosine similarity >= 0.99 and relative norm error
  <= 0.1 (bf16 keeps 8 bits of mantissa); fp16: 2e-4, >= 0.9999 and <= 1e-2.
* 8192 views (4096 samples x 2 views): float32 against float64 as above (gradients of the
  constrained loss within 1e-3: among 8192 views some pair losses nearly tie, see below).

The hierarchy constraint (HiMulConE, HiConE) takes a max over pair losses; where pair losses
nearly tie (clustered embeddings) float32 rounding can switch the max to the other branch, which
changes the gradient (both are valid subgradients) but not the value. Constrained gradients are
therefore compared on generic embeddings only; values everywhere. Every value and gradient must
be finite. CUDA variants run where CUDA is present.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss
from hcl.losses.functional import default_level_weights

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
LOSSES = [HiMulCon, HiMulConE, HiConE, SupConLoss]
CONSTRAINED = (HiMulConE, HiConE)


def _loss(loss_class: type, temperature: float) -> Any:
    return loss_class(temperature)


def _labels(num_samples: int, loss_class: type, generator: torch.Generator, device: str) -> torch.Tensor:
    labels = torch.randint(0, 3, (num_samples, 3), generator=generator)
    return (labels[:, :1] if loss_class is SupConLoss else labels).to(device)


def _embeddings(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """float64 embeddings: generic, one tight cluster, or two opposite clusters."""
    noise = torch.randn(*shape, generator=generator, dtype=torch.float64)
    if kind == "generic":
        return noise
    base = torch.randn(shape[-1], generator=generator, dtype=torch.float64)
    if kind == "clustered":
        return base + 1e-3 * noise
    sign = torch.where(torch.rand(shape[0], 1, 1, generator=generator) < 0.5, 1.0, -1.0).double()
    return sign * base + 1e-2 * noise


def _value_and_grad(loss_fn: Any, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    features = features.detach().clone().requires_grad_()
    value = loss_fn(features, labels)
    value.backward()
    assert math.isfinite(value.item()), f"loss {value.item()}"
    assert bool(torch.isfinite(features.grad).all()), "non-finite gradient"
    return value.item(), features.grad.double()


def _assert_float32_matches_float64(
    loss_class: type, temperature: float, features: torch.Tensor, labels: torch.Tensor, grad_tol: float | None
) -> None:
    loss_fn = _loss(loss_class, temperature)
    value64, grad64 = _value_and_grad(loss_fn, features, labels)
    value32, grad32 = _value_and_grad(loss_fn, features.float(), labels)
    # Every ell(i,p) = LSE_i - x_ip (and its max with the bound) moves by at most twice the largest
    # logit error, and the loss weighs them with total weight sum(lambda) / L: float32 logits
    # cannot give the loss more accuracy than that, however the loss is computed.
    views = F.normalize(features.reshape(-1, features.shape[-1]), dim=1)
    exact = views @ views.t() / temperature
    rounded = views.float() @ views.float().t() / temperature
    logit_error = float((rounded.double() - exact).abs().max())
    weights = default_level_weights(labels.shape[1]) if loss_class in (HiMulCon, HiMulConE) else (1.0,)
    allowed = 1e-5 * abs(value64) + 2 * max(1.0, sum(weights) / len(weights)) * logit_error
    assert abs(value32 - value64) <= allowed, (value32, value64, allowed)
    if grad_tol is not None:
        error = (grad32 - grad64).abs().max().item() / grad64.abs().max().item()
        assert error <= grad_tol, f"gradient error {error:.2e} > {grad_tol}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("temperature", "dim"), [(0.01, 2), (0.01, 128), (0.01, 4096), (0.05, 512), (0.1, 2), (0.1, 4096), (1.0, 128)]
)
def test_low_temperatures_and_wide_embeddings(temperature: float, dim: int, device: str, cases) -> None:
    generator = torch.Generator().manual_seed(dim)
    features = _embeddings("generic", (16, 2, dim), generator).to(device)
    for loss_class in LOSSES:
        labels = _labels(16, loss_class, generator, device)
        _assert_float32_matches_float64(loss_class, temperature, features, labels, grad_tol=1e-4)
        cases.add("stress.temperature_dimension", "value")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("kind", "dim"), [("clustered", 2), ("clustered", 4096), ("two-clusters", 128)])
def test_near_duplicate_embeddings_at_temperature_001(kind: str, dim: int, device: str, cases) -> None:
    """Cosine similarities a hair apart (1e-3 noise), amplified 100 times by the temperature."""
    generator = torch.Generator().manual_seed(dim + 1)
    features = _embeddings(kind, (16, 2, dim), generator).to(device)
    for loss_class in LOSSES:
        labels = _labels(16, loss_class, generator, device)
        grad_tol = None if loss_class in CONSTRAINED else 1e-2
        _assert_float32_matches_float64(loss_class, 0.01, features, labels, grad_tol)
        cases.add("stress.near_duplicates", "value")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("dtype", "loss_tol", "min_cosine", "max_norm_error"),
    [(torch.bfloat16, 2e-3, 0.99, 0.1), (torch.float16, 2e-4, 0.9999, 1e-2)],
    ids=["bf16", "fp16"],
)
@pytest.mark.parametrize("temperature", [0.01, 0.1])
@pytest.mark.parametrize("loss_class", LOSSES)
def test_autocast_matches_float32(
    loss_class: type,
    temperature: float,
    dtype: torch.dtype,
    loss_tol: float,
    min_cosine: float,
    max_norm_error: float,
    device: str,
    cases,
) -> None:
    generator = torch.Generator().manual_seed(7)
    model = torch.nn.Linear(64, 128).to(device)
    inputs = torch.randn(128, 2, 64, generator=generator).to(device)
    labels = _labels(128, loss_class, generator, device)
    loss_fn = _loss(loss_class, temperature)
    results = []
    for enabled in (False, True):
        model.zero_grad()
        with torch.autocast(device_type=device, dtype=dtype, enabled=enabled):
            outputs = model(inputs)
            value = loss_fn(outputs, labels)  # the loss disables autocast inside and computes in float32
        assert outputs.dtype == (dtype if enabled else torch.float32)
        value.backward()
        assert math.isfinite(value.item()) and bool(torch.isfinite(model.weight.grad).all())
        results.append((value.item(), model.weight.grad.flatten().double().clone()))
    (value32, grad32), (value_amp, grad_amp) = results
    assert math.isclose(value_amp, value32, rel_tol=loss_tol), (value_amp, value32)
    assert F.cosine_similarity(grad_amp, grad32, dim=0).item() >= min_cosine
    assert ((grad_amp - grad32).norm() / grad32.norm()).item() <= max_norm_error
    cases.add("stress.autocast", "value")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype: torch.dtype, device: str, cases) -> None:
    """bf16/fp16 features, even near fp16's largest value, give the float32 result of the same numbers."""
    generator = torch.Generator().manual_seed(3)
    features = (torch.randn(64, 2, 32, generator=generator) * 6e4).clamp(-6.5e4, 6.5e4).to(dtype).to(device)
    labels = torch.randint(0, 2, (64, 3), generator=generator).to(device)
    for loss_class in LOSSES:
        y = labels[:, :1] if loss_class is SupConLoss else labels
        half, _ = _value_and_grad(_loss(loss_class, 0.05), features, y)
        single, _ = _value_and_grad(_loss(loss_class, 0.05), features.float(), y)
        # Bit-identical on CPU; CUDA kernels may reduce in another order (seen: 1e-7 relative).
        assert half == pytest.approx(single, rel=0 if device == "cpu" else 1e-6)
        cases.add("stress.half_inputs", "value")


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss_class", [HiMulCon, HiMulConE])
def test_a_batch_of_8192_views(loss_class: type, device: str, cases) -> None:
    generator = torch.Generator().manual_seed(8192)
    features = torch.randn(4096, 2, 32, generator=generator, dtype=torch.float64).to(device)
    labels = torch.randint(0, 8, (4096, 3), generator=generator).to(device)
    # Among 8192 views some pair losses nearly tie: the constraint's max may switch branch.
    grad_tol = 1e-3 if loss_class in CONSTRAINED else 1e-4
    _assert_float32_matches_float64(loss_class, 0.1, features, labels, grad_tol)
    cases.add("stress.8192_views", "value")
