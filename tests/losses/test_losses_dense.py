"""The dense (GPU) form of the paper-mode losses: when it is chosen, and its degenerate cases.
Its values and gradients against the oracle are checked in test_losses_oracle.py (the
``formulation`` fixture runs those tests through both forms)."""

from __future__ import annotations

import pytest
import torch

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss
from hcl.losses.dense import DENSE_MAX_ELEMENTS, dense_fits, dense_paper_loss


def test_dense_form_is_chosen_on_cuda_while_it_fits() -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert dense_fits(4096, 4, cuda)
    assert not dense_fits(4096, 4, cpu)
    largest = int((DENSE_MAX_ELEMENTS // 4) ** 0.5)
    assert dense_fits(largest, 4, cuda) and not dense_fits(largest + 1, 4, cuda)


@pytest.mark.parametrize(
    ("labels", "num_views"),
    [
        (torch.tensor([[0, 1], [1, 0], [2, 2]]), 1),  # one view of distinct classes
        (torch.tensor([[-1, -1], [-1, -1]]), 2),  # nothing known
    ],
    ids=["distinct", "unknown"],
)
@pytest.mark.parametrize("constrained", [False, True])
def test_no_positive_pair_gives_zero_with_a_finite_zero_gradient(
    labels: torch.Tensor, num_views: int, constrained: bool
) -> None:
    features = torch.randn(labels.shape[0], num_views, 4, dtype=torch.float64, requires_grad=True)
    loss, level_terms = dense_paper_loss(features, labels, 0.1, [1.0, 2.0], constrained)
    (grad,) = torch.autograd.grad(loss, features)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    assert torch.equal(level_terms, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("reading", ["pair", "pair_held", "hinge"])
def test_dense_and_grouped_forms_agree_on_a_large_ragged_batch(monkeypatch: pytest.MonkeyPatch, reading: str) -> None:
    import hcl.losses.functional as functional

    generator = torch.Generator().manual_seed(11)
    features = torch.randn(300, 2, 16, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (300, 4), generator=generator)
    labels[torch.arange(4) >= torch.randint(1, 5, (300,), generator=generator).unsqueeze(1)] = -1
    losses = [HiMulConE(0.1, constraint=reading), HiConE(0.2, constraint=reading), HiMulCon(0.5)]
    for loss_fn in [*losses, SupConLoss(0.1)]:
        target = labels[:, :1] if isinstance(loss_fn, SupConLoss) else labels
        results = []
        for dense in (False, True):
            monkeypatch.setattr(functional, "dense_fits", lambda *args, dense=dense: dense)
            x = features.clone().requires_grad_()
            loss = loss_fn(x, target)
            results.append((loss.detach(), torch.autograd.grad(loss, x)[0]))
        torch.testing.assert_close(results[1], results[0], rtol=1e-9, atol=1e-12)


def test_skipping_input_checks_skips_only_the_value_checks() -> None:
    features = torch.randn(6, 2, 4)
    features[2, 1, 3] = float("nan")
    labels = torch.tensor([[0, 1], [0, 0], [1, 1], [1, 1], [0, 1], [1, 0]])
    with pytest.raises(ValueError, match="non-finite"):
        HiMulConE(0.1)(features, labels)
    assert torch.isnan(HiMulConE(0.1, check_inputs=False)(features, labels))  # the caller checks the loss
    with pytest.raises(ValueError, match="must have shape"):
        HiMulConE(0.1, check_inputs=False)(features[:, :, :, None, None], labels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss_fn", [HiMulConE(0.1, check_inputs=False), SupConLoss(0.1, check_inputs=False)], ids=repr)
def test_dense_form_never_waits_for_the_gpu(loss_fn: torch.nn.Module) -> None:
    features = torch.randn(256, 2, 128, device="cuda", requires_grad=True)
    labels = torch.randint(0, 4, (256, 4), device="cuda")
    target = labels[:, :1] if isinstance(loss_fn, SupConLoss) else labels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        loss_fn(features, target).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss_fn(features, target))
