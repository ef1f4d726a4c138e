"""Soft-label hierarchical cross-entropy (Bertinetto et al., CVPR 2020).

Checked against a float64 loop oracle written from the definition (LCA heights by climbing
parents, normalised by the largest one, a softmax of -beta * height, cross-entropy by explicit
sums), by gradcheck and by properties: large beta gives hard cross-entropy, batch order does not
matter, unknown samples are ignored, the height is the one hcl.metrics.mistake_severity reports.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from losses.trees import oracle_lca_height, random_double, random_labels, tree

from hcl import Hierarchy
from hcl.losses import SoftLabelCrossEntropy
from hcl.metrics import mistake_severity

RTOL = 1e-9


def oracle_soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, hierarchy: Hierarchy, beta: float):
    num_classes = logits.shape[-1]
    heights = [[oracle_lca_height(hierarchy, c, t) for c in range(num_classes)] for t in range(num_classes)]
    largest = max(max(row) for row in heights) or 1
    terms = []
    for sample in range(logits.shape[0]):
        target = int(labels[sample, -1])
        if target < 0:
            continue
        weights = [math.exp(-beta * heights[target][c] / largest) for c in range(num_classes)]
        soft = [w / sum(weights) for w in weights]
        for view in range(logits.shape[1]):
            z = logits[sample, view]
            log_norm = torch.log(sum(torch.exp(z[c]) for c in range(num_classes)))
            terms.append(sum(soft[c] * (log_norm - z[c]) for c in range(num_classes)))
    return sum(terms) / len(terms) if terms else logits.sum() * 0


# ------------------------------------------------------------------------- against the oracle
@pytest.mark.parametrize("branching", [(2, 3), (2, 2, 2), (1, 3, 2), (3, 2, 1, 2), (5,)])
@pytest.mark.parametrize(("num_samples", "num_views"), [(1, 1), (7, 1), (6, 2)])
@pytest.mark.parametrize("beta", [0.5, 4.0, 30.0])
def test_matches_oracle(branching, num_samples: int, num_views: int, beta: float) -> None:
    hierarchy = tree(branching, ragged=num_samples > 1)
    num_classes = hierarchy.num_nodes(hierarchy.num_levels - 1)
    labels = random_labels(hierarchy, num_samples, seed=num_samples, unknown=1 if num_samples > 1 else 0)
    logits = random_double(num_samples, num_views, num_classes, seed=num_views)
    actual = SoftLabelCrossEntropy(hierarchy, beta=beta)(logits, labels)
    expected = oracle_soft_cross_entropy(logits, labels, hierarchy, beta)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-12)
    (grad_actual,) = torch.autograd.grad(actual, logits)
    (grad_expected,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad_actual, grad_expected, rtol=1e-7, atol=1e-12)


def test_gradcheck() -> None:
    hierarchy = tree((2, 2, 2))
    labels = random_labels(hierarchy, 6, seed=1, unknown=1)
    logits = random_double(6, 2, 8, seed=2)
    assert torch.autograd.gradcheck(lambda z: SoftLabelCrossEntropy(hierarchy, beta=3.0)(z, labels), (logits,))


# ------------------------------------------------------------------------- properties
def test_soft_targets_closed_form() -> None:
    # (2, 2, 2): from a leaf, 1 class at height 0, 1 at 1, 2 at 2, 4 at 3; heights / 3.
    hierarchy = tree((2, 2, 2))
    loss = SoftLabelCrossEntropy(hierarchy, beta=6.0)
    targets = loss.soft_targets(torch.arange(8), torch.float64)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(8, dtype=torch.float64))
    weights = [math.exp(-6.0 * h / 3) for h in (0, 1, 2, 2, 3, 3, 3, 3)]
    expected = torch.tensor(weights, dtype=torch.float64) / sum(weights)
    torch.testing.assert_close(targets[0], expected)
    # Every class gets the same profile, so the target matrix is symmetric here.
    torch.testing.assert_close(targets, targets.T)


def test_heights_are_normalised_by_the_largest_one() -> None:
    # One root: no two finest classes are more than L - 1 = 2 levels apart.
    hierarchy = tree((1, 2, 2))
    targets = SoftLabelCrossEntropy(hierarchy, beta=2.0).soft_targets(torch.tensor([0]), torch.float64)
    weights = torch.tensor([1.0, math.exp(-1.0), math.exp(-2.0), math.exp(-2.0)], dtype=torch.float64)
    torch.testing.assert_close(targets[0], weights / weights.sum())


def test_large_beta_gives_hard_cross_entropy() -> None:
    hierarchy = tree((2, 3), ragged=True)
    labels = random_labels(hierarchy, 9, seed=3, unknown=2)
    logits = random_double(9, 1, 6, seed=4).detach()
    hard = F.cross_entropy(logits[:, 0], labels[:, -1], ignore_index=-1)
    torch.testing.assert_close(SoftLabelCrossEntropy(hierarchy, beta=1e4)(logits, labels), hard)
    assert float(SoftLabelCrossEntropy(hierarchy, beta=1.0)(logits, labels)) != pytest.approx(float(hard), rel=1e-3)


def test_height_is_the_one_mistake_severity_reports() -> None:
    hierarchy = tree((2, 2, 2))
    rows = hierarchy.node_labels(2)
    loss = SoftLabelCrossEntropy(hierarchy, beta=1.0)
    for target, other in [(0, 1), (0, 2), (0, 7), (5, 4)]:
        height = mistake_severity(rows[[other]], rows[[target]])
        profile = -loss.soft_targets(torch.tensor([target]), torch.float64)[0].log()
        # -log y(c) = beta * height(c) / 3 + log Z: differences recover the height.
        assert (profile[other] - profile[target]) * 3 == pytest.approx(height)


def test_invariant_to_batch_order_and_ignores_unknown_samples() -> None:
    hierarchy = tree((2, 2, 2), ragged=True)
    labels = random_labels(hierarchy, 10, seed=5, unknown=3)
    logits = random_double(10, 2, 8, seed=6).detach()
    loss = SoftLabelCrossEntropy(hierarchy)
    value = loss(logits, labels)
    order = torch.randperm(10)
    torch.testing.assert_close(loss(logits[order], labels[order]), value)
    torch.testing.assert_close(loss(logits[3:], labels[3:]), value)


def test_no_known_sample_gives_a_graph_keeping_zero() -> None:
    hierarchy = tree((2, 3))
    logits = random_double(3, 1, 6, seed=7)
    value = SoftLabelCrossEntropy(hierarchy)(logits, torch.tensor([[0, -1], [1, -1], [-1, -1]]))
    assert value.requires_grad and float(value.detach()) == 0.0
    (grad,) = torch.autograd.grad(value, logits)
    assert float(grad.abs().max()) == 0.0


def test_a_single_class_gives_zero_loss() -> None:
    hierarchy = Hierarchy.from_paths([("a", "b")])
    logits = random_double(1, 1, 1, seed=8)
    assert float(SoftLabelCrossEntropy(hierarchy)(logits.detach(), torch.tensor([[0, 0]]))) == 0.0


# ------------------------------------------------------------------------- validation
def test_bad_arguments_name_the_value() -> None:
    hierarchy = tree((2, 3))
    with pytest.raises(TypeError, match="hierarchy must be an hcl.Hierarchy, got NoneType"):
        SoftLabelCrossEntropy(None)  # type: ignore[arg-type]
    for beta in (0, -2.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=f"beta must be finite and > 0, got {beta!r}"):
            SoftLabelCrossEntropy(hierarchy, beta=beta)
    with pytest.raises(TypeError, match="beta must be a real number, got True"):
        SoftLabelCrossEntropy(hierarchy, beta=True)
    loss = SoftLabelCrossEntropy(hierarchy)
    with pytest.raises(ValueError, match=r"one column per finest-level class \(6\), got shape \(2, 1, 5\)"):
        loss(torch.randn(2, 1, 5), torch.tensor([[0, 0], [1, 3]]))
    with pytest.raises(ValueError, match="labels must have 2 levels"):
        loss(torch.randn(2, 6), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="labels have 3 rows but features have 2 samples"):
        loss(torch.randn(2, 6), torch.tensor([[0, 0], [1, 3], [1, 4]]))
    with pytest.raises(ValueError, match="is not a child of"):
        loss(torch.randn(2, 6), torch.tensor([[0, 0], [0, 4]]))
    assert not loss.state_dict()
