"""The vectorised losses against the float64 loop oracles (tests/oracles.py): values and gradients.

The grid covers B, V in {1, 2, 3}, D, L in 1..5, temperatures, ragged labels with -1 and
batches where some anchors (or whole levels) have no positives. HCL_FAST=0 runs the full product.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import FAST
from oracles import (
    make_labels,
    oracle_constraint_loss,
    oracle_paper_loss,
    oracle_reference_loss,
    oracle_supcon,
    paper_default_weights,
)

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss

RTOL = 1e-6

# (B, V, L): includes one sample, one view, deep hierarchies and every L in 1..5.
FULL_SHAPES = list(itertools.product([1, 2, 5, 9], [1, 2, 3], [1, 2, 3, 4, 5]))
FAST_SHAPES = [
    (1, 1, 2),
    (1, 2, 3),
    (2, 1, 1),
    (5, 1, 3),
    (5, 2, 1),
    (5, 2, 4),
    (6, 3, 2),
    (9, 1, 5),
    (9, 2, 2),
    (9, 2, 5),
]
SHAPES = FAST_SHAPES if FAST else FULL_SHAPES


def make_features(num_samples: int, num_views: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + seed)
    return (torch.randn(num_samples, num_views, dim, generator=generator, dtype=torch.float64) * 3).requires_grad_()


def assert_value_and_grad_close(actual: torch.Tensor, expected: torch.Tensor, features: torch.Tensor) -> None:
    (grad_actual,) = torch.autograd.grad(actual, features, retain_graph=True)
    (grad_expected,) = torch.autograd.grad(expected, features, retain_graph=True)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-9)
    torch.testing.assert_close(grad_actual, grad_expected, rtol=RTOL, atol=1e-9)


@pytest.mark.parametrize(("num_samples", "num_views", "num_levels"), SHAPES)
@pytest.mark.parametrize("loss_class", [HiMulCon, HiConE, HiMulConE])
def test_paper_mode_matches_oracle(
    num_samples: int, num_views: int, num_levels: int, loss_class: type, formulation: str
) -> None:
    seed = num_samples * 100 + num_views * 10 + num_levels
    temperature = [0.07, 0.5][seed % 2]
    dim = [3, 8][seed % 2]
    features = make_features(num_samples, num_views, dim, seed)
    for ragged in (False, True):
        labels = make_labels(num_samples, num_levels, seed, ragged)
        if loss_class is HiConE:
            loss_fn, weights = HiConE(temperature), [1.0] * num_levels
        else:
            weights = [0.5 + 0.25 * level for level in range(num_levels)]
            pair = {"constraint": "pair"} if loss_class is HiMulConE else {}
            loss_fn = loss_class(temperature, level_weights=weights, **pair)
        expected = oracle_paper_loss(features, labels, temperature, weights, constrained=loss_class is not HiMulCon)
        assert_value_and_grad_close(loss_fn(features, labels), expected, features)


@pytest.mark.parametrize(("num_samples", "num_views", "num_levels"), SHAPES)
@pytest.mark.parametrize("loss_class", [HiConE, HiMulConE])
def test_held_bound_matches_oracle_with_detached_bound(
    num_samples: int, num_views: int, num_levels: int, loss_class: type, formulation: str
) -> None:
    seed = num_samples * 100 + num_views * 10 + num_levels + 7
    features = make_features(num_samples, num_views, 4, seed)
    weights = [1.0] * num_levels if loss_class is HiConE else [0.5 + 0.25 * level for level in range(num_levels)]
    kwargs = {} if loss_class is HiConE else {"level_weights": weights}
    loss_fn = loss_class(0.2, bound_gradient=False, **kwargs)
    for ragged in (False, True):
        labels = make_labels(num_samples, num_levels, seed, ragged)
        expected = oracle_paper_loss(features, labels, 0.2, weights, constrained=True, bound_gradient=False)
        assert_value_and_grad_close(loss_fn(features, labels), expected, features)
        # Same value as the loss as written; the gradients differ once a bound is active.
        written = loss_class(0.2, constraint="pair", **kwargs)
        torch.testing.assert_close(loss_fn(features, labels), written(features, labels))


def test_held_bound_changes_the_gradient_when_a_bound_is_active() -> None:
    features = make_features(9, 2, 4, 3)
    labels = make_labels(9, 3, 3, ragged=False)
    held = torch.autograd.grad(HiMulConE(0.2, bound_gradient=False)(features, labels), features)[0]
    written = torch.autograd.grad(HiMulConE(0.2, constraint="pair")(features, labels), features)[0]
    assert (held - written).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("loss_class", "kwargs"), [(HiMulCon, {}), (HiMulConE, {"mode": "reference"}), (HiConE, {"mode": "reference"})]
)
def test_held_bound_is_rejected_where_there_is_no_per_pair_bound(loss_class: type, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="bound_gradient=False applies to HiConE and HiMulConE in paper mode"):
        loss_class(0.1, bound_gradient=False, **kwargs)
    with pytest.raises(TypeError, match="bound_gradient must be True or False, got 'no'"):
        HiMulConE(0.1, bound_gradient="no")


@pytest.mark.parametrize(("num_samples", "num_views", "num_levels"), SHAPES)
@pytest.mark.parametrize(("loss_class", "loss_type"), [(HiMulCon, "hmc"), (HiConE, "hce"), (HiMulConE, "hmce")])
def test_reference_mode_matches_oracle(
    num_samples: int, num_views: int, num_levels: int, loss_class: type, loss_type: str
) -> None:
    seed = num_samples * 100 + num_views * 10 + num_levels
    temperature = [0.1, 0.3][seed % 2]
    features = make_features(num_samples, num_views, 4, seed)
    labels = make_labels(num_samples, num_levels, seed, ragged=False)
    expected = oracle_reference_loss(features, labels, temperature, torch.exp, loss_type)
    assert_value_and_grad_close(loss_class(temperature, mode="reference")(features, labels), expected, features)


@pytest.mark.parametrize("num_levels", [2, 4])
def test_reference_mode_sequence_weights_match_oracle(num_levels: int) -> None:
    features = make_features(12, 2, 5, num_levels)
    labels = make_labels(12, num_levels, num_levels, ragged=False)
    weights = [1.0 + level for level in range(num_levels - 1)]
    expected = oracle_reference_loss(features, labels, 0.2, weights, "hmce")
    actual = HiMulConE(0.2, level_weights=weights, mode="reference")(features, labels)
    assert_value_and_grad_close(actual, expected, features)


@pytest.mark.parametrize(("num_samples", "num_views"), [(1, 2), (4, 1), (7, 2), (10, 3)])
def test_supcon_matches_oracle(num_samples: int, num_views: int, formulation: str) -> None:
    features = make_features(num_samples, num_views, 6, num_samples)
    labels = make_labels(num_samples, 1, num_samples, ragged=True)[:, 0]
    assert_value_and_grad_close(SupConLoss(0.2)(features, labels), oracle_supcon(features, labels, 0.2), features)


def test_default_weights_match_oracle() -> None:
    features = make_features(8, 2, 4, 3)
    labels = make_labels(8, 3, 3, ragged=True)
    # HiMulConE's defaults: the paper's weights and the hinge reading with beta = 0.5.
    expected = oracle_constraint_loss(features, labels, 0.1, paper_default_weights(3), "hinge", 0.5)
    assert_value_and_grad_close(HiMulConE()(features, labels), expected, features)
    assert paper_default_weights(3)[-1] == pytest.approx(math.e)
