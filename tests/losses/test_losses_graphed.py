"""CUDAGraphLoss: a captured loss replays the same values, gradients and per-level terms as the
eager one, and losses that would wait for the GPU (or that the table does not mark capturable)
are called directly."""

from __future__ import annotations

import warnings

import pytest
import torch

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss
from hcl.losses.graphed import CUDAGraphLoss

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cpu_inputs_call_the_loss_directly() -> None:
    loss_fn = HiMulConE(0.1)
    graphed = CUDAGraphLoss(loss_fn)
    features = torch.randn(8, 2, 4, requires_grad=True)
    labels = torch.randint(0, 2, (8, 3))
    assert torch.equal(graphed(features, labels), loss_fn(features, labels))
    assert torch.equal(graphed.last_level_terms, loss_fn.last_level_terms)
    assert "captured=0" in repr(graphed) and graphed.captured == 0
    flat = CUDAGraphLoss(SupConLoss(0.1))
    flat(features, labels[:, :1])
    assert flat.last_level_terms is None  # a loss without per-level terms


@needs_cuda
@pytest.mark.parametrize(
    "loss_fn",
    [
        HiMulConE(0.1, check_inputs=False),
        HiMulConE(0.1, bound_gradient=False, check_inputs=False),
        HiConE(0.2, check_inputs=False),
        HiMulCon(0.1, check_inputs=False),
    ],
    ids=repr,
)
def test_replays_match_the_eager_loss_batch_after_batch(loss_fn: torch.nn.Module) -> None:
    graphed = CUDAGraphLoss(loss_fn)
    generator = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(4):  # the first call captures, the others replay with new data
        features = torch.randn(64, 2, 32, device="cuda", generator=generator)
        labels = torch.randint(0, 3, (64, 3), device="cuda", generator=generator)
        results = []
        for fn in (graphed, loss_fn):
            x = features.clone().requires_grad_()
            loss = fn(x, labels)
            loss.backward()
            results.append((loss.detach().clone(), x.grad, fn.last_level_terms.clone()))
        torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    assert "captured=1" in repr(graphed) and graphed.captured == 1


@needs_cuda
@pytest.mark.parametrize(
    "loss_fn", [HiMulConE(0.1), HiMulConE(0.1, mode="reference", check_inputs=False)], ids=["checked", "reference"]
)
def test_losses_that_wait_for_the_gpu_are_called_directly(loss_fn: torch.nn.Module) -> None:
    graphed = CUDAGraphLoss(loss_fn)
    features = torch.randn(32, 2, 16, device="cuda", requires_grad=True)
    labels = torch.randint(0, 3, (32, 3), device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = graphed(features, labels)
    torch.testing.assert_close(value, loss_fn(features, labels))
    assert "captured=0" in repr(graphed)


def test_only_losses_that_never_wait_for_the_gpu_are_capturable(monkeypatch: pytest.MonkeyPatch) -> None:
    import hcl.losses.graphed as graphed_module

    monkeypatch.setattr(graphed_module, "dense_fits", lambda *args: True)  # as on a GPU
    features, labels = torch.randn(8, 2, 4), torch.randint(0, 2, (8, 3))
    capturable = {
        "unchecked paper": HiMulConE(0.1, check_inputs=False),
        "unchecked HiMulCon": HiMulCon(0.1, check_inputs=False),
    }
    not_capturable = {
        "checked": HiMulConE(0.1),
        "reference mode": HiConE(0.1, mode="reference", check_inputs=False),
        "foreign loss": torch.nn.Module(),
        # A building block, not an entry of the loss table (its entry, supcon, maps labels first).
        "flat SupCon": SupConLoss(0.1, check_inputs=False),
    }
    for name, loss_fn in {**capturable, **not_capturable}.items():
        assert CUDAGraphLoss(loss_fn)._capturable(features, labels) == (name in capturable), name
    monkeypatch.setattr(graphed_module, "dense_fits", lambda *args: False)  # too large for the dense form
    assert not CUDAGraphLoss(capturable["unchecked paper"])._capturable(features, labels)
