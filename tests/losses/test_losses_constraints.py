"""The readings of the hierarchy constraint (hcl.losses.constraints) against the float64 loop
oracle (tests/oracles.py), gradcheck, properties and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST
from oracles import make_labels, oracle_constraint_loss, oracle_paper_loss

from hcl.losses import CUDAGraphLoss, HiConE, HiMulCon, HiMulConE, SupConLoss
from hcl.losses.functional import hierarchical_contrastive_loss

READINGS = ("pair", "pair_held", "level_max", "hinge")
LEVEL_READINGS = ("level_max", "hinge")
# (B, V, L): one sample, one view, deep hierarchies.
SHAPES = [(1, 2, 3), (2, 1, 2), (5, 1, 3), (5, 2, 4), (6, 3, 2), (9, 2, 3)]
if not FAST:
    SHAPES += [(1, 1, 2), (4, 3, 5), (9, 1, 5), (12, 2, 4)]
RAGGED_LABELS = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 1, -1], [1, 0, 0], [1, 0, 1], [0, 0, 0]])


def make_features(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + seed)
    return (torch.randn(*shape, generator=generator, dtype=torch.float64) * 3).requires_grad_()


def value_and_grad(loss: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    (grad,) = torch.autograd.grad(loss, features, retain_graph=True)
    return loss.detach(), grad


def assert_same_loss(actual: torch.Tensor, expected: torch.Tensor, features: torch.Tensor, rtol: float = 1e-6) -> None:
    """Values and gradients agree (relative 1e-6, in float64)."""
    for got, want in zip(value_and_grad(actual, features), value_and_grad(expected, features), strict=True):
        torch.testing.assert_close(got, want, rtol=rtol, atol=1e-9)


def make_loss(loss_class: type, num_levels: int, **kwargs) -> tuple[torch.nn.Module, list[float]]:
    """The loss and its level weights (all ones for HiConE)."""
    if loss_class is HiConE:
        return HiConE(0.2, **kwargs), [1.0] * num_levels
    weights = [0.5 + 0.25 * level for level in range(num_levels)]
    return loss_class(0.2, level_weights=weights, **kwargs), weights


@pytest.mark.parametrize(("num_samples", "num_views", "num_levels"), SHAPES)
@pytest.mark.parametrize("loss_class", [HiConE, HiMulConE])
@pytest.mark.parametrize(("constraint", "beta"), [("level_max", 0.5), ("hinge", 0.5), ("hinge", 0.8)])
def test_level_readings_match_oracle(
    num_samples: int, num_views: int, num_levels: int, loss_class: type, constraint: str, beta: float, formulation: str
) -> None:
    # formulation: the hinge runs through the kernel (compiled and array-op constraint) and the
    # dense form; level_max has one form, run three times.
    seed = num_samples * 100 + num_views * 10 + num_levels
    features = make_features(num_samples, num_views, 4, seed=seed)
    loss_fn, weights = make_loss(loss_class, num_levels, constraint=constraint, constraint_weight=beta)
    for ragged in (False, True):
        labels = make_labels(num_samples, num_levels, seed, ragged)
        expected = oracle_constraint_loss(features, labels, 0.2, weights, constraint, beta)
        assert_same_loss(loss_fn(features, labels), expected, features)


@pytest.mark.parametrize("constraint", LEVEL_READINGS)
def test_functional_form_matches_oracle(constraint: str) -> None:
    features = make_features(8, 2, 5, seed=4)
    labels = make_labels(8, 3, 4, ragged=True)
    weights = [2.0, 0.5, 1.0]
    actual = hierarchical_contrastive_loss(
        features,
        labels,
        temperature=0.3,
        level_weights=weights,
        constrained=True,
        constraint=constraint,
        constraint_weight=0.25,
    )
    assert_same_loss(actual, oracle_constraint_loss(features, labels, 0.3, weights, constraint, 0.25), features)


@pytest.mark.parametrize("loss_class", [HiConE, HiMulConE])
def test_named_pair_readings_are_the_existing_ones(loss_class: type) -> None:
    features = make_features(9, 2, 4, seed=5)
    labels = make_labels(9, 3, 5, ragged=True)
    written, weights = make_loss(loss_class, 3, constraint="pair")
    held, _ = make_loss(loss_class, 3, constraint="pair_held")
    old_held, _ = make_loss(loss_class, 3, bound_gradient=False)
    old_held_named, _ = make_loss(loss_class, 3, bound_gradient=False, constraint="pair_held")
    assert_same_loss(written(features, labels), oracle_paper_loss(features, labels, 0.2, weights, True), features)
    expected_held = oracle_paper_loss(features, labels, 0.2, weights, True, bound_gradient=False)
    for loss_fn in (held, old_held, old_held_named):
        assert loss_fn.constraint == "pair_held" and not loss_fn.bound_gradient
        assert_same_loss(loss_fn(features, labels), expected_held, features)


# The hinge holds m_i constant, so its gradient is not the derivative of its value: the oracle
# and the interpolation test below check it instead.
@pytest.mark.parametrize("loss_class", [HiConE, HiMulConE])
def test_gradcheck_level_max(loss_class: type) -> None:
    loss_fn, _ = make_loss(loss_class, 3, constraint="level_max")
    features = make_features(6, 2, 5, seed=6)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, RAGGED_LABELS), (features,))


@pytest.mark.parametrize("constraint", LEVEL_READINGS)
def test_permutation_invariant(constraint: str) -> None:
    loss_fn = HiMulConE(0.3, constraint=constraint)
    features = make_features(12, 2, 4, seed=7)
    labels = make_labels(12, 3, 7, ragged=True)
    permutation = torch.randperm(12)
    loss, grad = value_and_grad(loss_fn(features, labels), features)
    permuted = features.detach()[permutation].requires_grad_()
    permuted_loss, permuted_grad = value_and_grad(loss_fn(permuted, labels[permutation]), permuted)
    torch.testing.assert_close(permuted_loss, loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(permuted_grad, grad[permutation], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("constraint", READINGS)
@pytest.mark.parametrize("loss_class", [HiConE, HiMulConE])
def test_one_level_is_supcon(constraint: str, loss_class: type) -> None:
    features = make_features(10, 2, 4, seed=8)
    labels = make_labels(10, 1, 8, ragged=True)
    kwargs = {} if loss_class is HiConE else {"level_weights": [1.0]}
    actual = loss_class(0.2, constraint=constraint, **kwargs)(features, labels)
    assert_same_loss(actual, SupConLoss(0.2)(features, labels[:, 0]), features)


@pytest.mark.parametrize("loss_class", [HiConE, HiMulConE])
def test_hinge_interpolates_between_no_constraint_and_held_bound(loss_class: type) -> None:
    # ell + beta relu(m - ell) = (1 - beta) ell + beta max(ell, m), m held: beta = 0 is HiMulCon,
    # beta = 1 the held bound, and every beta the straight line between them, gradient included.
    features = make_features(9, 2, 4, seed=9)
    labels = make_labels(9, 3, 9, ragged=True)
    held, weights = make_loss(loss_class, 3, constraint="pair_held")
    free = HiMulCon(0.2, level_weights=weights)
    for beta in (0.0, 0.3, 1.0):
        hinge, _ = make_loss(loss_class, 3, constraint="hinge", constraint_weight=beta)
        expected = (1 - beta) * free(features, labels) + beta * held(features, labels)
        assert_same_loss(hinge(features, labels), expected, features)


def test_hinge_keeps_a_gradient_where_the_held_bound_has_none() -> None:
    # Sample 1 is a coarse positive of anchors 0 and 2, closer to each than their finer positive
    # (2 and 0): the held bound silences both pairs, so sample 1's gradient loses their pull;
    # the hinge keeps a fraction 1 - beta of it.
    features = torch.tensor(
        [[1.0, 0.0, 0.0], [0.9, 0.3, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.2]], dtype=torch.float64
    ).requires_grad_()
    labels = torch.tensor([[0, 0], [0, 1], [0, 0], [1, 2]])
    weights = [1.0, 0.0]  # the coarse level only: sample 1 is a positive of sample 0 only there
    grads = {}
    for name, loss_fn in {
        "free": HiMulCon(0.5, level_weights=weights),
        "held": HiMulConE(0.5, level_weights=weights, constraint="pair_held"),
        "hinge": HiMulConE(0.5, level_weights=weights, constraint="hinge", constraint_weight=0.25),
    }.items():
        grads[name] = torch.autograd.grad(loss_fn(features, labels), features)[0]
    lost = (grads["free"] - grads["held"])[1]
    assert lost.abs().max() > 1e-2
    torch.testing.assert_close(grads["free"][1] - grads["hinge"][1], 0.25 * lost)
    torch.testing.assert_close(grads["hinge"], 0.75 * grads["free"] + 0.25 * grads["held"])


@pytest.mark.parametrize("loss_class", [HiConE, HiMulConE])
def test_level_max_is_the_running_max_of_the_level_terms(loss_class: type) -> None:
    # T_l from HiMulCon with one level weighted; the running max from the finest level up.
    features = make_features(12, 2, 4, seed=10)
    labels = make_labels(12, 4, 10, ragged=True)
    loss_fn, weights = make_loss(loss_class, 4, constraint="level_max")
    terms = []
    for level in range(4):
        only = [4.0 if j == level else 0.0 for j in range(4)]
        terms.append(HiMulCon(0.2, level_weights=only)(features, labels))
    for level in reversed(range(3)):
        terms[level] = torch.maximum(terms[level], terms[level + 1])
    expected = sum(w * t for w, t in zip(weights, terms, strict=True)) / 4
    assert_same_loss(loss_fn(features, labels), expected, features)
    unconstrained = HiMulCon(0.2, level_weights=weights)(features, labels)
    assert loss_fn(features, labels).item() >= unconstrained.item() - 1e-12


def test_level_max_is_at_least_the_unconstrained_loss_and_acts() -> None:
    raised = 0
    for seed in range(6):
        features = make_features(10, 2, 3, seed=20 + seed)
        labels = make_labels(10, 3, 20 + seed, ragged=seed % 2 == 1)
        level_max = HiMulConE(0.2, constraint="level_max")(features, labels).item()
        unconstrained = HiMulCon(0.2)(features, labels).item()
        assert level_max >= unconstrained - 1e-12
        raised += level_max > unconstrained + 1e-9
    assert raised > 0


@pytest.mark.parametrize("constraint", LEVEL_READINGS)
@pytest.mark.parametrize(
    ("shape", "labels"),
    [
        ((4, 1, 3), torch.tensor([[0, 0], [1, 1], [2, 0], [3, 0]])),
        ((1, 1, 3), torch.tensor([[0, 0]])),
        ((3, 2, 3), torch.full((3, 2), -1)),
    ],
    ids=["one-view-distinct", "one-sample-one-view", "all-unknown"],
)
def test_no_positive_pair_gives_a_zero_that_keeps_the_graph(
    constraint: str, shape: tuple[int, ...], labels: torch.Tensor
) -> None:
    features = make_features(*shape, seed=12)
    loss = HiMulConE(0.2, constraint=constraint)(features, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("constraint", LEVEL_READINGS)
def test_one_sample_with_views_and_float32_inputs(constraint: str) -> None:
    # A single sample: its other views are positives at every level; float32 stays float32.
    features = make_features(1, 3, 4, seed=11)
    labels = torch.tensor([[0, 1, -1]])
    expected = oracle_constraint_loss(features, labels, 0.2, [1.0, 1.0, 1.0], constraint)
    assert_same_loss(HiConE(0.2, constraint=constraint)(features, labels), expected, features)
    single = features.detach().float().requires_grad_()
    loss = HiConE(0.2, constraint=constraint)(single, labels)
    assert loss.dtype == torch.float32 and math.isclose(loss.item(), expected.item(), rel_tol=1e-5)
    assert bool(torch.isfinite(torch.autograd.grad(loss, single)[0]).all())


def test_arguments_are_checked_and_named() -> None:
    with pytest.raises(ValueError, match="constraint must be one of .* got 'max'"):
        HiMulConE(constraint="max")
    with pytest.raises(ValueError, match="bound_gradient=False .* contradicts constraint='hinge'"):
        HiConE(bound_gradient=False, constraint="hinge")
    with pytest.raises(ValueError, match="bound_gradient=False .* contradicts constraint='pair'"):
        HiMulConE(bound_gradient=False, constraint="pair")
    with pytest.raises(ValueError, match="constraint='level_max' applies to HiConE and HiMulConE .* not HiMulCon "):
        HiMulCon(constraint="level_max")
    with pytest.raises(ValueError, match="constraint='hinge' applies to .* not HiMulConE in mode 'reference'"):
        HiMulConE(mode="reference", constraint="hinge")
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=f"constraint_weight must be in \\[0, 1\\], got {bad}"):
            HiMulConE(constraint="hinge", constraint_weight=bad)
    with pytest.raises(TypeError, match="constraint_weight must be a real number .* got 'half'"):
        HiMulConE(constraint="hinge", constraint_weight="half")
    features, labels = torch.randn(4, 2, 3), torch.tensor([[0, 0], [0, 1], [1, 0], [1, 0]])
    with pytest.raises(ValueError, match="constraint='hinge' needs constrained=True"):
        hierarchical_contrastive_loss(features, labels, constraint="hinge")
    assert "constraint='hinge', constraint_weight=0.25" in repr(HiMulConE(constraint="hinge", constraint_weight=0.25))
    assert "constraint='hinge', constraint_weight=0.5" in repr(HiMulConE())
    assert "constraint='pair')" in repr(HiConE())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
@pytest.mark.parametrize("constraint", LEVEL_READINGS)
def test_cuda_matches_cpu_and_replays_as_a_cuda_graph(constraint: str) -> None:
    # The level readings read nothing back from the GPU, so a CUDA graph can capture them.
    loss_fn = HiMulConE(0.1, constraint=constraint, check_inputs=False)
    graphed = CUDAGraphLoss(loss_fn)
    generator = torch.Generator().manual_seed(13)
    for _ in range(3):  # the first call captures, the others replay with new data
        features = torch.randn(64, 2, 16, generator=generator, dtype=torch.float64)
        labels = torch.randint(0, 3, (64, 3), generator=generator)
        results = []
        for fn, device in ((loss_fn, "cpu"), (loss_fn, "cuda"), (graphed, "cuda")):
            x = features.to(device).requires_grad_()
            loss = fn(x, labels.to(device))
            loss.backward()
            results.append((loss.detach().cpu(), x.grad.cpu()))
        torch.testing.assert_close(results[1], results[0])
        torch.testing.assert_close(results[2], results[0])
    assert "captured=1" in repr(graphed)


def test_level_max_on_levels_with_equal_terms_matches_the_dense_reading() -> None:
    # Column 1 splits nothing, so levels 0 and 1 have the same groups and exactly equal terms: the
    # running maximum ties there, and the grouped kernel (CPU) must still give the dense reading's
    # value and gradient.
    from hcl.losses.constraints import level_constraint_loss

    labels = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 1], [1, 1, 2], [1, 1, 2], [1, 1, 3], [0, 0, 0]])
    features = make_features(7, 2, 5, seed=30)
    weights = [0.5, 2.0, 1.0]
    kernel = HiMulConE(0.2, level_weights=weights, constraint="level_max")(features, labels)
    dense, terms = level_constraint_loss(features, labels, 0.2, weights)
    assert terms[0] / weights[0] == terms[1] / weights[1]  # the tie is exact
    assert_same_loss(kernel, dense, features, rtol=1e-10)
