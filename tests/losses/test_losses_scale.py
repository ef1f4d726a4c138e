"""Every loss on embeddings is blind to their scale: ``loss(f * c)`` equals ``loss(f)`` in float32
for c from 1e-30 to 1e30, and so does its gradient with respect to f.

The losses see directions only (cosine similarities; CPCC is a correlation), but a plain L2
normalisation squares the entries: in float32 rows with norm above ~1.8e19 normalised to zero and
rows below ~1e-19 to ``x / eps``, which gave a constant loss and a zero gradient, or a wrong one,
without an error (:mod:`hcl.losses._normalize`).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from loss_variants import embedding_loss_variants
from losses.trees import random_labels, tree

from hcl.losses import get_loss
from hcl.losses._normalize import unit_rows, unit_rows_and_norms

HIERARCHY = tree((2, 2, 2))
LABELS = random_labels(HIERARCHY, 8, seed=3)
SCALES = [10.0**exponent for exponent in range(-30, 31, 5)]


def _variants() -> list[Any]:
    return [
        pytest.param(name, options, id="-".join([name, *options.values()]))
        for name, options in embedding_loss_variants()
    ]


def _value_and_grad(loss_fn: torch.nn.Module, features: torch.Tensor, scale: float) -> tuple[float, torch.Tensor]:
    leaf = features.detach().clone().requires_grad_()
    value = loss_fn(leaf * scale, LABELS)
    value.backward()
    return value.item(), leaf.grad


@pytest.mark.parametrize(("name", "options"), _variants())
def test_loss_and_gradient_do_not_depend_on_the_scale(name: str, options: dict[str, str], formulation: str) -> None:
    loss_fn = get_loss(name).build(hierarchy=HIERARCHY, **options)
    features = torch.randn(8, 2, 5, generator=torch.Generator().manual_seed(11))
    value, grad = _value_and_grad(loss_fn, features, 1.0)
    assert math.isfinite(value) and grad.abs().max() > 0
    for scale in SCALES:
        scaled_value, scaled_grad = _value_and_grad(loss_fn, features, scale)
        assert scaled_value == pytest.approx(value, rel=1e-5, abs=1e-5), scale
        torch.testing.assert_close(scaled_grad / grad.abs().max(), grad / grad.abs().max(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_unit_rows_equal_normalize_to_the_bit_where_it_is_finite(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(300, 7, generator=generator) * torch.logspace(-6, 6, 300).unsqueeze(1)).to(dtype)
    x[7] = 0  # an all-zero row stays zero, with norm eps, as torch.nn.functional.normalize has it
    z, norm = unit_rows_and_norms(x)
    assert torch.equal(z, torch.nn.functional.normalize(x, dim=1))
    assert torch.equal(norm, torch.linalg.vector_norm(x, dim=1).clamp(min=1e-12))
    leaf, plain = x.float().requires_grad_(), x.float().requires_grad_()
    weights = torch.randn(300, 7, generator=generator)
    (unit_rows(leaf) * weights).sum().backward()
    (torch.nn.functional.normalize(plain, dim=1) * weights).sum().backward()
    assert torch.equal(leaf.grad, plain.grad)


@pytest.mark.parametrize("scale", [1e-38, 1e-30, 1e-19, 1e19, 1e30, 1e37])
def test_unit_rows_keep_the_direction_and_the_norm_at_extreme_scales(scale: float) -> None:
    x = torch.tensor([[3.0, -4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    z, norm = unit_rows_and_norms(x * scale)
    expected = torch.nn.functional.normalize(x, dim=1)
    torch.testing.assert_close(z, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(norm[:2] / scale, torch.tensor([5.0, math.sqrt(3.0)]), rtol=1e-6, atol=0)
    assert norm[2] == 1e-12 or norm[2] == pytest.approx(1e-12)
