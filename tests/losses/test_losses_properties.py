"""Properties of the losses: gradcheck, invariances, reductions, closed forms, degenerate cases,
precision (bf16 autocast, fp16 inputs) and CUDA agreement."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from oracles import oracle_paper_loss

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss

RAGGED_LABELS = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 1, -1], [1, 0, 0], [1, 0, 1], [0, 0, 0]])
FULL_LABELS = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0]])
# The paper as written, then HiMulConE's default (the hinge: its bound is held, so its gradient
# is not its value's derivative and gradcheck does not apply; the oracle tests check it).
DIFFERENTIABLE_PAPER_LOSSES = [HiMulCon(0.3), HiConE(0.3), HiMulConE(0.3, constraint="pair")]
PAPER_LOSSES = [*DIFFERENTIABLE_PAPER_LOSSES, HiMulConE(0.3)]
REFERENCE_LOSSES = [HiMulCon(0.3, mode="reference"), HiConE(0.3, mode="reference"), HiMulConE(0.3, mode="reference")]


def double_features(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("loss_fn", DIFFERENTIABLE_PAPER_LOSSES, ids=repr)
def test_gradcheck_paper(loss_fn: torch.nn.Module) -> None:
    features = double_features(6, 2, 5)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, RAGGED_LABELS), (features,))


@pytest.mark.parametrize("loss_fn", REFERENCE_LOSSES, ids=repr)
def test_gradcheck_reference(loss_fn: torch.nn.Module) -> None:
    features = double_features(6, 2, 5)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, FULL_LABELS), (features,))


def test_gradcheck_supcon_single_view() -> None:
    features = double_features(7, 4)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, -1])
    assert torch.autograd.gradcheck(lambda x: SupConLoss(0.2)(x, labels), (features,))


def _assert_permutation_invariant(loss_fn: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor) -> None:
    permutation = torch.randperm(labels.shape[0])
    loss = loss_fn(features, labels)
    (grad,) = torch.autograd.grad(loss, features)
    permuted = features.detach()[permutation].requires_grad_()
    permuted_loss = loss_fn(permuted, labels[permutation])
    (permuted_grad,) = torch.autograd.grad(permuted_loss, permuted)
    torch.testing.assert_close(permuted_loss, loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(permuted_grad, grad[permutation], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss_fn", PAPER_LOSSES, ids=repr)
def test_paper_mode_is_permutation_invariant(loss_fn: torch.nn.Module) -> None:
    ragged = torch.randint(-1, 2, (12, 1)).expand(-1, 3).clone()
    _assert_permutation_invariant(loss_fn, double_features(12, 2, 4, seed=1), ragged)
    _assert_permutation_invariant(loss_fn, double_features(12, 2, 4, seed=1), torch.randint(0, 2, (12, 3)))


@pytest.mark.parametrize("loss_fn", REFERENCE_LOSSES, ids=repr)
def test_reference_mode_depends_only_on_which_sample_comes_first(loss_fn: torch.nn.Module) -> None:
    # With distinct prefixes of length L-1, the reference's "first occurrence" keeps every
    # sample and then picks by label order: the batch order does not matter.
    labels = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 2, 1], [1, 0, 0], [1, 1, 1], [2, 0, 0], [2, 1, 0]])
    _assert_permutation_invariant(loss_fn, double_features(7, 2, 4, seed=2), labels)


def test_reference_mode_keeps_the_first_sample_of_each_prefix() -> None:
    # Samples 0 and 1 share the prefix (0, 0): the level with prefix length 1 sees only the first
    # of them, as in the reference code, so swapping them changes the loss, and the loss equals
    # the one of a batch where the second never existed at that level.
    features = double_features(4, 2, 4, seed=3)
    repeated = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    swapped = torch.tensor([1, 0, 2, 3])
    loss_fn = HiMulCon(0.3, level_weights=[1.0, 0.0], mode="reference")
    original, reordered = loss_fn(features, repeated), loss_fn(features[swapped], repeated[swapped])
    assert original.item() != pytest.approx(reordered.item())
    coarse_only = HiMulCon(0.3, level_weights=[1.0], mode="reference")
    kept = torch.tensor([0, 2, 3])
    torch.testing.assert_close(original, coarse_only(features[kept], repeated[kept, :2]) * 2 / 3)


def test_features_are_normalised_inside() -> None:
    features = double_features(8, 2, 4, seed=2)
    scales = torch.rand(8, 2, 1, dtype=torch.float64) * 10 + 0.1
    labels = torch.randint(0, 2, (8, 3))
    for loss_fn in PAPER_LOSSES + REFERENCE_LOSSES:
        torch.testing.assert_close(loss_fn(features * scales, labels), loss_fn(features, labels))


def test_one_level_himulcon_equals_supcon_equals_pml() -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    features = double_features(10, 2, 6, seed=3)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 5])
    himulcon = HiMulCon(0.15, level_weights=[1.0])(features, labels.unsqueeze(1))
    supcon = SupConLoss(0.15)(features, labels)
    flat = torch.cat(torch.unbind(features, dim=1))
    pml = pml_losses.SupConLoss(temperature=0.15)(flat, labels.repeat(2))
    torch.testing.assert_close(himulcon, supcon, rtol=1e-12, atol=0)
    torch.testing.assert_close(supcon, pml, rtol=1e-9, atol=0)
    grads = [torch.autograd.grad(loss, features, retain_graph=True)[0] for loss in (himulcon, supcon, pml)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grads[1], grads[2], rtol=1e-8, atol=1e-12)


def test_pml_agrees_with_one_view_and_singletons() -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    features = double_features(9, 5, seed=4)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5])  # 2..5 have no positive: skipped by both
    expected = pml_losses.SupConLoss(temperature=0.3)(features, labels)
    torch.testing.assert_close(SupConLoss(0.3)(features, labels), expected, rtol=1e-9, atol=0)


def _ell(similarity: torch.Tensor, temperature: float, i: int, p: int) -> float:
    others = [float(similarity[i, a]) / temperature for a in range(similarity.shape[0]) if a != i]
    return math.log(sum(math.exp(v) for v in others)) - float(similarity[i, p]) / temperature


def test_hicone_constraint_closed_form() -> None:
    # Unit vectors at 0, 30 and 90 degrees: a=(0,0) and f=(0,0) share the fine label, c=(0,1)
    # only the coarse one, and c is closer to both a and f than they are to each other, so the
    # constraint lifts every coarse pair of a and f to their fine pair's loss.
    angles = torch.tensor([0.0, 90.0, 30.0], dtype=torch.float64) * math.pi / 180
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([[0, 0], [0, 0], [0, 1]])
    similarity = features @ features.t()
    t = 0.5
    a, f, c = 0, 1, 2
    fine = (_ell(similarity, t, a, f) + _ell(similarity, t, f, a)) / 2
    assert _ell(similarity, t, a, c) < _ell(similarity, t, a, f)
    assert _ell(similarity, t, f, c) < _ell(similarity, t, f, a)
    coarse_c = (_ell(similarity, t, c, a) + _ell(similarity, t, c, f)) / 2  # c has no finer positive: no bound
    coarse = (_ell(similarity, t, a, f) + _ell(similarity, t, f, a) + coarse_c) / 3
    expected = (coarse + fine) / 2
    assert HiConE(t)(features, labels).item() == pytest.approx(expected, rel=1e-12)
    # Without the constraint the coarse pairs keep their smaller losses.
    unconstrained = HiMulCon(t, level_weights=[1.0, 1.0])(features, labels).item()
    assert unconstrained < expected - 1e-3
    # HiMulConE weights the same terms.
    weighted = HiMulConE(t, level_weights=[2.0, 3.0], constraint="pair")(features, labels).item()
    assert weighted == pytest.approx((2.0 * coarse + 3.0 * fine) / 2, rel=1e-12)


def test_hicone_equals_himulcon_when_constraint_is_inactive() -> None:
    # Fine pairs are closer than every coarse pair: max(ell, m) = ell everywhere.
    angles = torch.tensor([0.0, 5.0, 60.0, 65.0], dtype=torch.float64) * math.pi / 180
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([[0, 0], [0, 0], [0, 1], [0, 1]])
    torch.testing.assert_close(HiConE(0.2)(features, labels), HiMulCon(0.2, level_weights=[1.0, 1.0])(features, labels))


def test_no_positive_pair_returns_zero_with_graph() -> None:
    features = double_features(4, 3)
    distinct = torch.tensor([[0, 0], [1, 1], [2, 2], [3, 3]])
    for loss_fn in [HiMulCon(), HiConE(), HiMulConE(), HiMulConE(mode="reference")]:
        loss = loss_fn(features, distinct)
        assert loss.item() == 0.0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, features)
        assert torch.equal(grad, torch.zeros_like(grad))
    assert SupConLoss()(features, torch.arange(4)).item() == 0.0
    single = double_features(1, 3)
    for loss_fn in [SupConLoss(), HiMulConE()]:
        loss = loss_fn(single, torch.tensor([[0]]))
        assert loss.item() == 0.0 and loss.requires_grad


def test_single_sample_with_two_views_uses_its_views_at_every_level() -> None:
    features = double_features(1, 2, 3)
    labels = torch.tensor([[4, 1, 7]])
    loss = HiMulConE(0.5, level_weights=[1.0, 2.0, 3.0])(features, labels)
    # Two views: ell = log(exp(s/t)) - s/t = 0 for each anchor, at every level.
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert loss.requires_grad


def test_one_view_as_2d_features_equals_3d() -> None:
    features = double_features(7, 4)
    labels = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 0], [1, 0], [1, 1], [1, 1]])
    for loss_fn in PAPER_LOSSES + REFERENCE_LOSSES:
        torch.testing.assert_close(loss_fn(features, labels), loss_fn(features.unsqueeze(1), labels))


def test_unknown_level_is_skipped() -> None:
    # Nobody is known at level 2: its weight cannot matter, and the loss is finite.
    features = double_features(6, 2, 4)
    labels = torch.tensor([[0, 0, -1], [0, 1, -1], [1, 0, -1], [1, 0, -1], [0, -1, -1], [-1, -1, -1]])
    losses = [HiMulConE(0.2, level_weights=[1.0, 1.0, w], constraint="pair")(features, labels) for w in (1.0, 50.0)]
    torch.testing.assert_close(losses[0], losses[1])
    assert torch.isfinite(losses[0])
    # Fully unknown samples only appear in denominators: dropping their level terms is what the
    # oracle does too.
    expected = oracle_paper_loss(features, labels, 0.2, [1.0, 1.0, 1.0], constrained=True)
    torch.testing.assert_close(losses[0], expected)


def test_all_unknown_labels_give_zero() -> None:
    features = double_features(3, 1, 4)
    loss = HiMulCon()(features, torch.full((3, 2), -1))
    assert loss.item() == 0.0 and loss.requires_grad


def test_level_weights_are_linear() -> None:
    features = double_features(10, 2, 4, seed=5)
    labels = torch.randint(0, 2, (10, 3))
    per_level = [
        HiMulConE(0.3, level_weights=[float(level == k) for level in range(3)])(features, labels) for k in range(3)
    ]
    combined = HiMulConE(0.3, level_weights=[0.5, 2.0, 3.0])(features, labels)
    torch.testing.assert_close(combined, 0.5 * per_level[0] + 2.0 * per_level[1] + 3.0 * per_level[2])


def test_default_paper_weights() -> None:
    features = double_features(10, 2, 4, seed=6)
    labels = torch.randint(0, 3, (10, 4))
    weights = [math.exp(1 / (4 - level)) for level in range(4)]
    torch.testing.assert_close(HiMulCon()(features, labels), HiMulCon(level_weights=weights)(features, labels))
    torch.testing.assert_close(HiMulConE()(features, labels), HiMulConE(level_weights=weights)(features, labels))


def test_reference_weights_callable_sequence_and_default_agree() -> None:
    features = double_features(10, 2, 4, seed=7)
    labels = torch.randint(0, 3, (10, 4))
    # Prefix lengths 1, 2, 3 drop k = 3, 2, 1 columns: penalty exp(1/k).
    sequence = [float(torch.exp(torch.tensor(1.0 / k))) for k in (3, 2, 1)]
    default = HiMulConE(mode="reference")(features, labels)
    torch.testing.assert_close(HiMulConE(level_weights=torch.exp, mode="reference")(features, labels), default)
    torch.testing.assert_close(HiMulConE(level_weights=sequence, mode="reference")(features, labels), default)
    halved = HiMulCon(level_weights=lambda x: torch.exp(x) / 2, mode="reference")(features, labels)
    torch.testing.assert_close(halved, HiMulCon(mode="reference")(features, labels) / 2)


def test_reference_single_level_is_zero() -> None:
    features = double_features(4, 2, 3)
    loss = HiMulConE(mode="reference")(features, torch.tensor([[0], [0], [1], [1]]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_bf16_autocast_cpu_is_finite_and_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 32)
    inputs = torch.randn(64, 2, 16)
    labels = torch.randint(0, 3, (64, 3))
    for loss_fn in [SupConLoss(0.05), HiMulCon(0.05), HiConE(0.05), HiMulConE(0.05), HiMulConE(0.05, mode="reference")]:
        target = labels[:, 0] if isinstance(loss_fn, SupConLoss) else labels
        reference = loss_fn(model(inputs), target)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            embeddings = model(inputs)
            assert embeddings.dtype == torch.bfloat16
            loss = loss_fn(embeddings, target)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        torch.testing.assert_close(loss, reference, rtol=2e-2, atol=0)
        model.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_half_inputs_are_computed_in_float32() -> None:
    features = torch.randn(16, 2, 8).half()
    labels = torch.randint(0, 2, (16, 2))
    loss = HiMulConE()(features, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, HiMulConE()(features.float(), labels))


def test_small_temperature_is_finite() -> None:
    features = torch.randn(32, 2, 8)
    labels = torch.randint(0, 2, (32, 3))
    for loss_fn in [HiMulConE(0.005), HiConE(0.005), SupConLoss(0.005)]:
        target = labels[:, 0] if isinstance(loss_fn, SupConLoss) else labels
        x = features.clone().requires_grad_()
        loss = loss_fn(x, target)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_float32_matches_float64() -> None:
    features = torch.randn(40, 2, 16, dtype=torch.float64)
    labels = torch.randint(0, 3, (40, 3))
    for loss_fn in PAPER_LOSSES + REFERENCE_LOSSES:
        single = loss_fn(features.float(), labels).double()
        torch.testing.assert_close(single, loss_fn(features, labels), rtol=1e-5, atol=0)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
@pytest.mark.parametrize("loss_fn", [SupConLoss(0.1), *PAPER_LOSSES, *REFERENCE_LOSSES], ids=repr)
def test_cuda_matches_cpu(loss_fn: torch.nn.Module) -> None:
    features = torch.randn(64, 2, 16, dtype=torch.float64)
    labels = torch.randint(0, 3, (64, 3))
    target = labels[:, 0] if isinstance(loss_fn, SupConLoss) else labels
    results = []
    for device in ("cpu", "cuda"):
        x = features.to(device).detach().clone().requires_grad_()
        loss = loss_fn(x, target.to(device))
        loss.backward()
        results.append((loss.cpu(), x.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


@needs_cuda
def test_cuda_bf16_autocast_is_finite_and_close_to_fp32() -> None:
    features = F.normalize(torch.randn(256, 2, 64, device="cuda"), dim=-1)
    labels = torch.randint(0, 4, (256, 4), device="cuda")
    reference = HiMulConE(0.05)(features, labels)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = HiMulConE(0.05)(features.bfloat16(), labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, reference, rtol=2e-2, atol=0)
