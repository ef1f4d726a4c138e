"""Property-based fuzzing of every loss, paper and reference mode, against the float64 oracles.

Batches are drawn with 1..8 samples, 1..3 views, dimensions 1..6, depths 1..6, ragged ``-1``
labels, duplicate rows, all-identical or all-distinct labels, identical or duplicated features
and scales from 1e-6 to 1e6. Every call either returns a finite value and finite gradients that
match the loop oracles of tests/oracles.py, or raises a clear ValueError/TypeError; nothing else
(no NaN, no inf, no IndexError or RuntimeError from inside torch).
"""

from __future__ import annotations

import math
from typing import Any

import hypothesis.strategies as st
import pytest
import torch
from conftest import FAST
from hypothesis import HealthCheck, given, settings
from oracles import oracle_constraint_loss, oracle_paper_loss, oracle_reference_loss, paper_default_weights
from reliability.strategies import label_rows

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss

# The oracles are Python loops: HCL_FAST=1 (make test, CI) tries 40 batches per loss, HCL_FAST=0 400.
ORACLE_FUZZ = settings(max_examples=40 if FAST else 400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=150 if FAST else 1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RTOL64, RTOL32 = 1e-7, 2e-4
CONSTRAINED = {HiMulCon: False, HiMulConE: True, HiConE: True}
REFERENCE_TYPE = {HiMulCon: "hmc", HiMulConE: "hmce", HiConE: "hce"}


@st.composite
def label_batches(draw: st.DrawFn) -> torch.Tensor:
    """(B, L) labels of 1..8 samples and 1..6 levels (see :func:`reliability.strategies.label_rows`)."""
    num_samples, num_levels = draw(st.integers(1, 8)), draw(st.integers(1, 6))
    return torch.from_numpy(draw(label_rows(num_samples, num_levels)))


@st.composite
def feature_batches(draw: st.DrawFn, num_samples: int) -> tuple[torch.Tensor, bool]:
    """(B, V, D) float64 features (random, all identical, or with duplicated rows; any scale), and
    whether they are tie-free.

    Duplicates make pair losses tie exactly, where the hierarchy constraint's max has many valid
    subgradients (torch splits them, the kernel picks one): only values are compared there.
    """
    num_views, dim = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    features = torch.randn(num_samples, num_views, dim, generator=generator, dtype=torch.float64)
    kind = draw(st.sampled_from(["random", "identical", "duplicated"]))
    if kind == "identical":
        features[:] = features[0, 0].clone()
    elif kind == "duplicated" and num_samples > 1:
        features[num_samples // 2 :] = features[: num_samples - num_samples // 2].clone()
    return features * 10.0 ** draw(st.integers(-6, 6)), kind == "random"


def _value_and_grad(loss_fn: Any, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = features.detach().clone().requires_grad_()
    value = loss_fn(features, labels)
    (grad,) = torch.autograd.grad(value, features, allow_unused=True)
    return value.detach(), torch.zeros_like(features) if grad is None else grad


def _assert_matches(
    loss_fn: Any, oracle: Any, features: torch.Tensor, labels: torch.Tensor, temperature: float, tie_free: bool
) -> None:
    """The loss in float64 and float32 against the oracle in float64: values and (without ties)
    gradients."""
    value64, grad64 = _value_and_grad(oracle, features, labels)
    # The natural size of a gradient is 1 / (t |f|); compare gradients relative to it.
    scale = max(grad64.abs().max().item(), 1.0 / (temperature * features.norm(dim=-1).max().item()))
    for dtype, rtol in ((torch.float64, RTOL64), (torch.float32, RTOL32)):
        value, grad = _value_and_grad(loss_fn, features.to(dtype), labels)
        assert value.dim() == 0 and math.isfinite(value.item()) and bool(torch.isfinite(grad).all())
        torch.testing.assert_close(value.double(), value64, rtol=rtol, atol=rtol)
        if tie_free:
            torch.testing.assert_close(grad.double() / scale, grad64 / scale, rtol=rtol, atol=rtol)


@ORACLE_FUZZ
@given(data=st.data(), labels=label_batches(), temperature=st.sampled_from([0.05, 0.1, 0.5, 1.0]))
@pytest.mark.parametrize(
    ("loss_class", "reading"), [(HiMulCon, None), (HiMulConE, "pair"), (HiMulConE, "hinge"), (HiConE, None)]
)
def test_paper_mode_is_finite_and_matches_the_oracle(
    loss_class: type, reading: str | None, data, labels, temperature, cases
) -> None:
    features, tie_free = data.draw(feature_batches(labels.shape[0]))
    num_levels = labels.shape[1]
    weights = [1.0] * num_levels if loss_class is HiConE else paper_default_weights(num_levels)
    loss_fn = loss_class(temperature) if reading is None else loss_class(temperature, constraint=reading)

    def oracle(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if reading == "hinge":
            return oracle_constraint_loss(f, y, temperature, weights, "hinge", 0.5)
        return oracle_paper_loss(f, y, temperature, weights, constrained=CONSTRAINED[loss_class])

    _assert_matches(loss_fn, oracle, features, labels, temperature, tie_free)
    cases.add(f"losses.paper.{loss_class.__name__}", "value")


@ORACLE_FUZZ
@given(data=st.data(), labels=label_batches(), temperature=st.sampled_from([0.05, 0.1, 0.5, 1.0]))
def test_supcon_is_finite_and_matches_the_oracle(data, labels, temperature, cases) -> None:
    features, tie_free = data.draw(feature_batches(labels.shape[0]))
    flat = labels[:, :1]

    def oracle(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return oracle_paper_loss(f, y, temperature, [1.0], constrained=False)

    _assert_matches(SupConLoss(temperature), oracle, features, flat, temperature, tie_free)
    cases.add("losses.paper.SupConLoss", "value")


@ORACLE_FUZZ
@given(data=st.data(), labels=label_batches(), temperature=st.sampled_from([0.05, 0.1, 0.5, 1.0]))
@pytest.mark.parametrize("loss_class", [HiMulCon, HiMulConE, HiConE])
def test_reference_mode_is_finite_and_matches_the_oracle_or_rejects_unknowns(
    loss_class: type, data, labels, temperature, cases
) -> None:
    features, tie_free = data.draw(feature_batches(labels.shape[0]))
    loss_fn = loss_class(temperature, mode="reference")
    if bool((labels < 0).any()):
        with pytest.raises(ValueError, match=r"reference mode does not support unknown \(-1\) labels"):
            loss_fn(features, labels)
        cases.add(f"losses.reference.{loss_class.__name__}", "rejected")
        return

    def oracle(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return oracle_reference_loss(f, y, temperature, torch.exp, REFERENCE_TYPE[loss_class])

    _assert_matches(loss_fn, oracle, features, labels, temperature, tie_free)
    cases.add(f"losses.reference.{loss_class.__name__}", "value")


# ----------------------------------------------------------------------------- bad inputs

bad_features = st.one_of(
    st.builds(lambda shape: torch.randn(shape), st.lists(st.integers(0, 3), min_size=0, max_size=5).map(tuple)),
    st.builds(lambda v: torch.full((3, 2, 4), v), st.sampled_from([math.nan, math.inf, -math.inf])),
    st.builds(lambda: torch.ones(3, 2, 4, dtype=torch.int64)),
    st.builds(lambda: torch.ones(3, 2, 4, dtype=torch.complex64)),
    st.just([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
    st.just(None),
)
bad_labels = st.one_of(
    st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=4), min_size=0, max_size=5)
    .map(lambda rows: rows if len({len(r) for r in rows}) <= 1 else rows[:1])
    .map(lambda rows: torch.tensor(rows, dtype=torch.int64) if rows else torch.zeros(0, 2, dtype=torch.int64)),
    st.builds(lambda: torch.zeros(3, 2, dtype=torch.float32)),
    st.builds(lambda: torch.zeros(3, 2, 2, dtype=torch.int64)),
    st.just("0,1"),
    st.just(None),
)
bad_settings = st.fixed_dictionaries(
    {
        "temperature": st.sampled_from([0.1, 0.0, -1.0, math.nan, math.inf, True, "0.1", None]),
        "level_weights": st.sampled_from([None, [], [1.0], [1.0, 2.0], [1.0, -1.0], [math.nan, 1.0], "12", [True]]),
    }
)


@FUZZ
@given(features=bad_features, labels=bad_labels, options=bad_settings, mode=st.sampled_from(["paper", "reference"]))
@pytest.mark.parametrize("loss_class", [HiMulCon, HiMulConE, HiConE, SupConLoss])
def test_any_input_gives_a_finite_value_or_a_clear_error(
    loss_class: type, features, labels, options, mode, cases
) -> None:
    """Junk of every kind: a finite value (when the junk happens to be valid) or ValueError/TypeError."""
    kwargs: dict[str, Any] = {"temperature": options["temperature"]}
    if loss_class in (HiMulCon, HiMulConE):
        kwargs["level_weights"] = options["level_weights"]
    if loss_class is not SupConLoss:
        kwargs["mode"] = mode
    try:
        loss_fn = loss_class(**kwargs)
        value = loss_fn(features, labels)
    except (ValueError, TypeError) as error:
        assert str(error), "an error without a message"
        cases.add("losses.bad_input", "rejected")
        return
    assert isinstance(value, torch.Tensor) and value.dim() == 0 and math.isfinite(value.item())
    cases.add("losses.bad_input", "value")


@pytest.mark.parametrize("loss_class", [HiMulCon, HiMulConE, HiConE, SupConLoss])
def test_zero_embeddings_give_finite_values_and_gradients(loss_class: type, cases) -> None:
    """A dead network's all-zero output has no direction; training must not turn it into NaN."""
    features = torch.zeros(4, 2, 3, requires_grad=True)
    labels = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 0]])
    value = loss_class()(features, labels[:, :1] if loss_class is SupConLoss else labels)
    value.backward()
    assert math.isfinite(value.item()) and bool(torch.isfinite(features.grad).all())
    cases.add("losses.zero_embeddings", "value")
