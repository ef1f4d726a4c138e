"""The CPCC regulariser (Zeng et al., ICLR 2023) and its SupCon and cross-entropy losses.

Checked against a float64 loop oracle written from the definition (class means by summing
vectors, tree distances by climbing parents, Pearson by explicit sums), by gradcheck, by
properties (affine distances give 0, scale/shift/permutation invariance, degenerate batches
give a graph-keeping zero and never NaN) and against :func:`hcl.metrics.cpcc`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST
from losses.trees import oracle_lca_height, random_double, random_labels, tree
from oracles import oracle_supcon

from hcl import Hierarchy
from hcl.losses import CPCCCrossEntropy, CPCCRegularizer, CPCCSupCon, SupConLoss
from hcl.metrics import cpcc as cpcc_metric

RTOL = 1e-9


# ------------------------------------------------------------------------- the loop oracle
def oracle_tree_distance(hierarchy: Hierarchy, a: int, b: int) -> int:
    """Edges between two finest-level nodes: up to their lowest common ancestor and down again."""
    return 2 * oracle_lca_height(hierarchy, a, b)


def oracle_cpcc_term(features: torch.Tensor, labels: torch.Tensor, hierarchy: Hierarchy, weight: float) -> torch.Tensor:
    """weight * (1 - Pearson(tree distance, l2 distance of class means)) over the classes present."""
    if features.dim() == 2:
        features = features.unsqueeze(1)
    vectors: dict[int, list[torch.Tensor]] = {}
    for sample in range(features.shape[0]):
        cls = int(labels[sample, -1])
        if cls >= 0:
            for view in range(features.shape[1]):
                vectors.setdefault(cls, []).append(features[sample, view])
    classes = sorted(vectors)
    if len(classes) < 3:
        return features.sum() * 0
    means = {c: sum(vectors[c]) / len(vectors[c]) for c in classes}
    tree_d, embed_d = [], []
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            tree_d.append(float(oracle_tree_distance(hierarchy, a, b)))
            embed_d.append(torch.sqrt(sum((means[a][k] - means[b][k]) ** 2 for k in range(features.shape[2]))))
    n = len(tree_d)
    mean_t, mean_e = sum(tree_d) / n, sum(embed_d) / n
    cov = sum((t - mean_t) * (e - mean_e) for t, e in zip(tree_d, embed_d))
    var_t = sum((t - mean_t) ** 2 for t in tree_d)
    var_e = sum((e - mean_e) ** 2 for e in embed_d)
    if var_t == 0 or float(var_e.detach()) == 0:
        return features.sum() * 0
    return weight * (1 - cov / torch.sqrt(var_t * var_e))


def oracle_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over known views of -log softmax(z)_t."""
    terms = []
    for sample in range(logits.shape[0]):
        target = int(labels[sample, -1])
        if target >= 0:
            for view in range(logits.shape[1]):
                z = logits[sample, view]
                terms.append(torch.log(sum(torch.exp(z[c]) for c in range(len(z)))) - z[target])
    return sum(terms) / len(terms) if terms else logits.sum() * 0


def assert_value_and_grad_close(actual: torch.Tensor, expected: torch.Tensor, inputs: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-12)
    (grad_actual,) = torch.autograd.grad(actual, inputs, retain_graph=True)
    (grad_expected,) = torch.autograd.grad(expected, inputs, retain_graph=True)
    torch.testing.assert_close(grad_actual, grad_expected, rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------------------- against the oracle
TREES = [(2, 3), (2, 2, 2), (1, 3, 2), (3, 2, 1, 2)]
SHAPES = [(12, 1, 3), (9, 2, 4), (20, 3, 2)] if FAST else [(6, 1, 2), (12, 1, 3), (9, 2, 4), (20, 3, 2), (40, 2, 8)]


@pytest.mark.parametrize("branching", TREES)
@pytest.mark.parametrize(("num_samples", "num_views", "dim"), SHAPES)
@pytest.mark.parametrize("ragged", [False, True])
def test_regularizer_matches_oracle(branching, num_samples: int, num_views: int, dim: int, ragged: bool) -> None:
    hierarchy = tree(branching, ragged)
    labels = random_labels(hierarchy, num_samples, seed=num_samples + dim, unknown=2 if ragged else 0)
    features = random_double(num_samples, num_views, dim, seed=dim)
    actual = CPCCRegularizer(hierarchy, weight=0.7)(features, labels)
    assert_value_and_grad_close(actual, oracle_cpcc_term(features, labels, hierarchy, 0.7), features)


@pytest.mark.parametrize("branching", TREES[:2])
@pytest.mark.parametrize("num_views", [1, 2])
def test_cpcc_supcon_matches_oracle(branching, num_views: int) -> None:
    hierarchy = tree(branching, ragged=True)
    labels = random_labels(hierarchy, 10, seed=3, unknown=2)
    features = random_double(10, num_views, 5, seed=4)
    actual = CPCCSupCon(hierarchy, temperature=0.3, cpcc_weight=2.0)(features, labels)
    expected = oracle_supcon(features, labels[:, -1], 0.3) + oracle_cpcc_term(features, labels, hierarchy, 2.0)
    assert_value_and_grad_close(actual, expected, features)


@pytest.mark.parametrize("branching", TREES[:2])
@pytest.mark.parametrize("num_views", [1, 2])
def test_cpcc_cross_entropy_matches_oracle(branching, num_views: int) -> None:
    hierarchy = tree(branching, ragged=True)
    num_classes = hierarchy.num_nodes(hierarchy.num_levels - 1)
    labels = random_labels(hierarchy, 11, seed=5, unknown=3)
    outputs = random_double(11, num_views, 4 + num_classes, seed=6)
    actual = CPCCCrossEntropy(hierarchy, cpcc_weight=0.5)(outputs, labels)
    features, logits = outputs[..., :4], outputs[..., 4:]
    expected = oracle_cross_entropy(logits, labels) + oracle_cpcc_term(features, labels, hierarchy, 0.5)
    assert_value_and_grad_close(actual, expected, outputs)


def test_gradcheck() -> None:
    hierarchy = tree((2, 2, 2))
    num_classes = hierarchy.num_nodes(2)
    labels = random_labels(hierarchy, 8, seed=1, unknown=1)
    features = random_double(8, 2, 3, seed=2)
    outputs = random_double(8, 1, 3 + num_classes, seed=3)
    assert torch.autograd.gradcheck(lambda f: CPCCRegularizer(hierarchy)(f, labels), (features,))
    assert torch.autograd.gradcheck(lambda f: CPCCSupCon(hierarchy, temperature=0.5)(f, labels), (features,))
    assert torch.autograd.gradcheck(lambda o: CPCCCrossEntropy(hierarchy)(o, labels), (outputs,))


# ------------------------------------------------------------------------- properties
def ultrametric_features(hierarchy: Hierarchy, labels: torch.Tensor, slope: float, offset: float) -> torch.Tensor:
    """Features whose class means are ``offset + slope * tree distance`` apart (slope, offset > 0).

    Every node gets its own axis; a class mean is sum_l sqrt(w_l) e_(its level-l ancestor), so
    two classes sharing s levels are sqrt(2 sum_(l >= s) w_l) apart. Each sample adds noise
    that cancels within its class (pairs of +/-), so the class means stay exact.
    """
    num_levels = hierarchy.num_levels
    target = [offset + slope * 2 * (num_levels - s) for s in range(num_levels + 1)]
    target[num_levels] = 0.0
    weights = [(target[s] ** 2 - target[s + 1] ** 2) / 2 for s in range(num_levels)]
    axes = [hierarchy.num_nodes(level) for level in range(num_levels)]
    base = [sum(axes[:level]) for level in range(num_levels)]
    noise_dim = 2
    features = torch.zeros(len(labels), sum(axes) + noise_dim, dtype=torch.float64)
    seen: dict[int, int] = {}
    for sample, row in enumerate(labels.tolist()):
        for level, node in enumerate(row):
            features[sample, base[level] + node] = math.sqrt(weights[level])
        count = seen.get(row[-1], 0)
        seen[row[-1]] = count + 1
        features[sample, -noise_dim + count // 2 % noise_dim] = 0.3 * (1 if count % 2 == 0 else -1)
    return features


def paired_labels(hierarchy: Hierarchy) -> torch.Tensor:
    """Two samples (noise +/-) of every finest-level class."""
    return hierarchy.node_labels(hierarchy.num_levels - 1).repeat_interleave(2, dim=0)


@pytest.mark.parametrize("branching", [(2, 3), (2, 2, 2), (3, 2, 1, 2)])
def test_distances_affine_in_the_tree_give_zero(branching) -> None:
    hierarchy = tree(branching)
    labels = paired_labels(hierarchy)
    regularizer = CPCCRegularizer(hierarchy, weight=1.5)
    features = ultrametric_features(hierarchy, labels, slope=0.7, offset=0.4).requires_grad_()
    value = regularizer(features, labels)
    assert abs(float(value.detach())) < 1e-12
    assert regularizer.cpcc(features, labels) == pytest.approx(1.0, abs=1e-12)
    # CPCC = 1 is its maximum, so the gradient vanishes there.
    (grad,) = torch.autograd.grad(value, features)
    assert float(grad.abs().max()) < 1e-9


def test_distances_opposite_to_the_tree_give_two_times_the_weight() -> None:
    # Siblings on the diagonals of a square, cousins on its sides: siblings are the farther pairs.
    hierarchy = tree((2, 2))
    labels = hierarchy.node_labels(1)
    corners = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    regularizer = CPCCRegularizer(hierarchy, weight=1.5)
    assert regularizer.cpcc(corners, labels) == pytest.approx(-1.0, abs=1e-12)
    assert float(regularizer(corners, labels)) == pytest.approx(2 * 1.5, abs=1e-12)


def test_invariant_to_scale_shift_and_batch_order() -> None:
    hierarchy = tree((2, 2, 2))
    labels = random_labels(hierarchy, 16, seed=7, unknown=2)
    features = random_double(16, 2, 5, seed=8).detach()
    regularizer = CPCCRegularizer(hierarchy)
    value = regularizer(features, labels)
    torch.testing.assert_close(regularizer(3.0 * features + 1.5, labels), value, rtol=1e-10, atol=1e-12)
    order = torch.randperm(16)
    torch.testing.assert_close(regularizer(features[order], labels[order]), value, rtol=1e-10, atol=1e-12)
    views = torch.randperm(2)
    torch.testing.assert_close(regularizer(features[:, views], labels), value, rtol=1e-10, atol=1e-12)


def test_samples_unknown_at_the_finest_level_are_ignored() -> None:
    hierarchy = tree((2, 3))
    labels = random_labels(hierarchy, 10, seed=9)
    features = random_double(10, 1, 4, seed=10).detach()
    extra = torch.tensor([[0, -1], [1, -1], [-1, -1]])
    more = torch.cat([features, 100 * torch.randn(3, 1, 4, dtype=torch.float64)])
    regularizer = CPCCRegularizer(hierarchy)
    torch.testing.assert_close(regularizer(more, torch.cat([labels, extra])), regularizer(features, labels))


def _assert_graph_keeping_zero(value: torch.Tensor, inputs: torch.Tensor) -> None:
    assert value.requires_grad and float(value.detach()) == 0.0
    (grad,) = torch.autograd.grad(value, inputs)
    assert torch.isfinite(grad).all() and float(grad.abs().max()) == 0.0


def test_fewer_than_three_classes_give_a_graph_keeping_zero() -> None:
    hierarchy = tree((2, 3))
    regularizer = CPCCRegularizer(hierarchy)
    features = random_double(4, 2, 3, seed=11)
    for finest in ([0, 0, 3, 3], [2, 2, 2, 2], [-1, -1, -1, -1], [0, 4, -1, -1]):
        labels = torch.tensor([[-1 if c < 0 else c // 3, c] for c in finest])
        _assert_graph_keeping_zero(regularizer(features, labels), features)
        assert math.isnan(regularizer.cpcc(features, labels))


def test_constant_distances_give_a_graph_keeping_zero() -> None:
    # Every class under its own root (or a one-level tree): all tree distances are equal.
    for hierarchy in (tree((4, 1)), tree((5,))):
        labels = hierarchy.node_labels(hierarchy.num_levels - 1).repeat(2, 1)
        features = random_double(len(labels), 1, 3, seed=12)
        _assert_graph_keeping_zero(CPCCRegularizer(hierarchy)(features, labels), features)
    # All class means equal (a collapsed embedding): no distance varies.
    hierarchy = tree((2, 3))
    labels = hierarchy.node_labels(1)
    features = torch.ones(len(labels), 1, 3, dtype=torch.float64, requires_grad=True)
    _assert_graph_keeping_zero(CPCCRegularizer(hierarchy)(features, labels), features)


def test_coinciding_class_means_keep_gradients_finite() -> None:
    hierarchy = tree((2, 3))
    labels = hierarchy.node_labels(1)
    features = random_double(len(labels), 1, 3, seed=13).detach()
    features[1] = features[0]
    features.requires_grad_()
    value = CPCCRegularizer(hierarchy)(features, labels)
    (grad,) = torch.autograd.grad(value, features)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_zero_weight_gives_the_base_losses() -> None:
    hierarchy = tree((2, 2, 2))
    labels = random_labels(hierarchy, 12, seed=14, unknown=2)
    features = random_double(12, 2, 4, seed=15)
    torch.testing.assert_close(
        CPCCSupCon(hierarchy, temperature=0.2, cpcc_weight=0)(features, labels),
        SupConLoss(temperature=0.2)(features, labels[:, -1]),
    )
    outputs = random_double(12, 1, 3 + 8, seed=16)
    target = labels[:, -1]
    torch.testing.assert_close(
        CPCCCrossEntropy(hierarchy, cpcc_weight=0)(outputs, labels),
        F.cross_entropy(outputs[:, 0, 3:], target, ignore_index=-1),
    )
    unknown = labels.clone()
    unknown[:, -1] = -1
    _assert_graph_keeping_zero(CPCCCrossEntropy(hierarchy)(outputs, unknown), outputs)


def test_agrees_with_the_cpcc_metric_when_class_means_are_unit_vectors() -> None:
    """hcl.metrics.cpcc L2-normalises each class mean before taking distances; the paper's
    regulariser does not. With class means of unit norm the two compute the same number."""
    hierarchy = tree((2, 2, 2))
    labels = random_labels(hierarchy, 24, seed=17)
    generator = torch.Generator().manual_seed(18)
    directions = F.normalize(torch.randn(8, 6, generator=generator, dtype=torch.float64), dim=1)
    scales = 0.5 + torch.rand(24, 2, generator=generator, dtype=torch.float64)
    classes = labels[:, -1]
    for cls in classes.unique():  # scale each class's vectors to a mean of exactly 1
        scales[classes == cls] /= scales[classes == cls].mean()
    features = scales[:, :, None] * directions[classes][:, None, :]
    regularizer = CPCCRegularizer(hierarchy)
    metric = cpcc_metric(features.reshape(-1, 6), labels.repeat_interleave(2, dim=0))
    assert regularizer.cpcc(features, labels) == pytest.approx(metric, abs=1e-12)
    # Without unit means they differ: the metric ignores each mean's length, the regulariser not.
    stretched = features * torch.linspace(1, 3, 8, dtype=torch.float64)[classes][:, None, None]
    assert cpcc_metric(stretched.reshape(-1, 6), labels.repeat_interleave(2, dim=0)) == pytest.approx(metric)
    assert regularizer.cpcc(stretched, labels) != pytest.approx(metric, abs=1e-3)


# ------------------------------------------------------------------------- validation
def test_bad_arguments_name_the_value() -> None:
    hierarchy = tree((2, 3))
    features = torch.randn(4, 1, 3)
    with pytest.raises(TypeError, match="hierarchy must be an hcl.Hierarchy, got list"):
        CPCCRegularizer([[0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight must be finite and >= 0, got -1"):
        CPCCRegularizer(hierarchy, weight=-1)
    with pytest.raises(ValueError, match="cpcc_weight|weight must be finite"):
        CPCCSupCon(hierarchy, cpcc_weight=math.inf)
    with pytest.raises(ValueError, match="labels must have 2 levels"):
        CPCCRegularizer(hierarchy)(features, torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="label 6 at level 1 is out of range"):
        CPCCRegularizer(hierarchy)(features, torch.tensor([[0, 0], [0, 1], [1, 6], [1, 3]]))
    with pytest.raises(ValueError, match="is not a child of"):
        CPCCRegularizer(hierarchy)(features, torch.tensor([[0, 0], [0, 1], [0, 4], [1, 3]]))
    with pytest.raises(ValueError, match="non-finite"):
        CPCCRegularizer(hierarchy)(torch.full((4, 1, 3), math.nan), torch.tensor([[0, 0]] * 4))
    with pytest.raises(ValueError, match=r"representation and 6 logits .* got shape \(4, 1, 6\)"):
        CPCCCrossEntropy(hierarchy)(torch.randn(4, 1, 6), torch.tensor([[0, 0]] * 4))


def test_buffers_stay_out_of_the_state_dict() -> None:
    hierarchy = tree((2, 3))
    assert not CPCCCrossEntropy(hierarchy).state_dict()
    assert not CPCCSupCon(hierarchy).state_dict()
