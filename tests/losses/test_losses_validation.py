"""Bad input to the losses: each error is a ValueError/TypeError naming the problem and the value."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss

FEATURES = torch.randn(4, 2, 3)
LABELS = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
ALL_LOSSES = [HiMulCon(), HiConE(), HiMulConE(), HiMulConE(mode="reference")]


@pytest.mark.parametrize("loss_fn", ALL_LOSSES, ids=repr)
def test_wrong_feature_shape(loss_fn: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"\(B, V, D\) or \(B, D\), got \(4, 2, 3, 1\)"):
        loss_fn(FEATURES.unsqueeze(-1), LABELS)
    with pytest.raises(ValueError, match=r"got \(4,\)"):
        loss_fn(torch.randn(4), LABELS)
    with pytest.raises(ValueError, match=r"at least one sample.*\(4, 0, 3\)"):
        loss_fn(torch.randn(4, 0, 3), LABELS)


@pytest.mark.parametrize("loss_fn", ALL_LOSSES, ids=repr)
def test_batch_size_mismatch(loss_fn: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="labels have 3 rows but features have 4 samples"):
        loss_fn(FEATURES, LABELS[:3])


@pytest.mark.parametrize(
    "bad", [LABELS.float(), LABELS.bool(), np.array([["a", "b"]] * 4)], ids=["float", "bool", "str"]
)
def test_non_integer_labels(bad: object) -> None:
    with pytest.raises(TypeError, match="must be"):
        HiMulConE()(FEATURES, bad)


def test_non_float_features() -> None:
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        HiMulConE()(torch.ones(4, 2, 3, dtype=torch.int64), LABELS)
    with pytest.raises(TypeError, match="must be a torch.Tensor, got ndarray"):
        HiMulConE()(FEATURES.numpy(), LABELS)


def test_known_label_below_unknown() -> None:
    labels = torch.tensor([[0, 0], [-1, 1], [1, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"known label below an unknown.*row 1: \[-1, 1\]"):
        HiMulConE()(FEATURES, labels)


def test_labels_below_minus_one() -> None:
    labels = torch.tensor([[0, 0], [0, -2], [1, 0], [1, 1]])
    with pytest.raises(ValueError, match=r">= -1.*got -2 in row 1"):
        HiMulCon()(FEATURES, labels)


def test_reference_mode_rejects_unknown_labels() -> None:
    labels = torch.tensor([[0, 0], [0, -1], [1, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"reference mode does not support unknown \(-1\).*row 1 is \[0, -1\]"):
        HiMulConE(mode="reference")(FEATURES, labels)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_features(value: float) -> None:
    features = FEATURES.clone()
    features[2, 1, 0] = value
    message = rf"1 non-finite values.*first is {value} at \(sample, view, dim\) = \(2, 1, 0\)"
    with pytest.raises(ValueError, match=message):
        HiMulConE()(features, LABELS)


@pytest.mark.parametrize("cls", [SupConLoss, HiMulCon, HiConE, HiMulConE])
@pytest.mark.parametrize("temperature", [0, -0.1, math.nan, math.inf])
def test_bad_temperature(cls: type, temperature: float) -> None:
    with pytest.raises(ValueError, match=rf"temperature must be finite and > 0, got {temperature}"):
        cls(temperature=temperature)


def test_temperature_type() -> None:
    with pytest.raises(TypeError, match="temperature must be a real number, got '0.1'"):
        HiMulCon(temperature="0.1")
    with pytest.raises(TypeError, match="got True"):
        SupConLoss(temperature=True)


def test_wrong_number_of_level_weights() -> None:
    with pytest.raises(ValueError, match=r"must have 2 entries \(one per label level.*got 3: \[1.0, 2.0, 3.0\]"):
        HiMulCon(level_weights=[1.0, 2.0, 3.0])(FEATURES, LABELS)
    with pytest.raises(ValueError, match=r"must have 1 entries \(reference mode.*got 2"):
        HiMulConE(level_weights=[1.0, 2.0], mode="reference")(FEATURES, LABELS)


def test_bad_level_weight_values() -> None:
    with pytest.raises(ValueError, match=r"level_weights\[1\] must be finite and >= 0, got -1.0"):
        HiMulCon(level_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"level_weights\[0\] must be finite and >= 0, got nan"):
        HiMulConE(level_weights=[math.nan])
    with pytest.raises(TypeError, match=r"level_weights\[0\] must be a real number, got 'a'"):
        HiMulCon(level_weights=["a"])
    with pytest.raises(TypeError, match="sequence of floats, got 'ab'"):
        HiMulCon(level_weights="ab")
    with pytest.raises(ValueError, match="must not be empty"):
        HiMulCon(level_weights=[])


def test_callable_weights_need_reference_mode() -> None:
    with pytest.raises(TypeError, match="needs mode='reference'"):
        HiMulCon(level_weights=torch.exp)


@pytest.mark.parametrize("cls", [HiMulCon, HiConE, HiMulConE])
def test_unknown_mode(cls: type) -> None:
    with pytest.raises(ValueError, match=r"mode must be one of \('paper', 'reference'\), got 'papr'"):
        cls(mode="papr")


def test_hicone_takes_no_weights() -> None:
    with pytest.raises(TypeError):
        HiConE(level_weights=[1.0, 1.0])  # type: ignore[call-arg]


def test_supcon_rejects_hierarchical_labels() -> None:
    with pytest.raises(
        ValueError, match=r"one label per sample.*got 2 levels \(B, L\); pass the finest level, labels\[:, -1\]"
    ):
        SupConLoss()(FEATURES, LABELS)
    assert torch.isfinite(SupConLoss()(FEATURES, LABELS[:, -1]))  # what the message suggests works
    with pytest.raises(ValueError, match=r"shape \(N, L\) or \(N,\), got \(4, 1, 1\)"):
        SupConLoss()(FEATURES, LABELS[:, :1].unsqueeze(-1))


@pytest.mark.parametrize("cls", [SupConLoss, HiMulCon, HiConE, HiMulConE])
@pytest.mark.parametrize("temperature", [1e-38, 9e-16, 1.1e15, 1e38])
def test_temperature_beyond_the_float32_range_is_refused_naming_the_limit(cls: type, temperature: float) -> None:
    message = rf"temperature must be between 1e-15 and 1e\+15 .*got {re.escape(repr(temperature))}"
    with pytest.raises(ValueError, match=message):
        cls(temperature=temperature)


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_level_weight_beyond_the_float32_range_is_refused_naming_the_limit(mode: str) -> None:
    with pytest.raises(ValueError, match=r"level_weights\[1\] must be at most 1e\+15 .*got 3e\+38"):
        HiMulCon(level_weights=[1.0, 3e38], mode=mode)
    labels = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match=r"level_weights\[0\] must be at most 1e\+15 .*got 1\.1805916207174113e\+21"):
        HiMulConE(level_weights=lambda k: torch.tensor(2.0**70), mode="reference")(torch.randn(4, 2, 3), labels)


@pytest.mark.parametrize("cls", [HiMulCon, HiMulConE])
@pytest.mark.parametrize("mode", ["paper", "reference"])
@pytest.mark.parametrize(("temperature", "weight"), [(1e-15, 1e15), (1e15, 1e15), (1e-15, 0.0), (1e15, 1e-30)])
def test_the_extremes_inside_the_limits_give_finite_values_and_gradients(
    cls: type, mode: str, temperature: float, weight: float
) -> None:
    labels = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 2], [0, 1, 2], [1, 2, 3], [1, 2, 3]])
    features = torch.randn(6, 2, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    weights = [weight] * (3 if mode == "paper" else 2)
    value = cls(temperature, level_weights=weights, mode=mode)(features, labels)
    value.backward()
    assert math.isfinite(value.item()) and bool(torch.isfinite(features.grad).all())
