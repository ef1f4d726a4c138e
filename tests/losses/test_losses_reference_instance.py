"""Reference mode's instance column: the reference code takes the last label column for a
per-image instance id and never as a level; ``instance_column="absent"`` appends one so that the
finest real label is a level, as in the reference's training."""

from __future__ import annotations

import pytest
import torch
from oracles import oracle_reference_loss

from hcl.losses import HiConE, HiMulCon, HiMulConE, SupConLoss
from hcl.losses.reference import reference_hierarchical_loss

LOSSES = [(HiMulCon, "hmc"), (HiConE, "hce"), (HiMulConE, "hmce")]


def make_batch(num_samples: int, num_levels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_samples, 2, 5, generator=generator, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, 2, (num_samples, num_levels), generator=generator)
    return features, labels


def with_instances(labels: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    return torch.cat([labels, instances.unsqueeze(1)], dim=1)


def assert_same_loss(actual: torch.Tensor, expected: torch.Tensor, features: torch.Tensor) -> None:
    grads = [torch.autograd.grad(loss, features, retain_graph=True)[0] for loss in (actual, expected)]
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("loss_class", "loss_type"), LOSSES)
@pytest.mark.parametrize("num_levels", [1, 2, 3])
def test_absent_appends_the_row_index_and_matches_the_oracle(loss_class: type, loss_type: str, num_levels: int) -> None:
    features, labels = make_batch(10, num_levels, seed=num_levels)
    actual = loss_class(0.2, mode="reference", instance_column="absent")(features, labels)
    indexed = with_instances(labels, torch.arange(10))
    assert_same_loss(actual, loss_class(0.2, mode="reference")(features, indexed), features)
    assert_same_loss(actual, oracle_reference_loss(features, indexed, 0.2, torch.exp, loss_type), features)


@pytest.mark.parametrize(("loss_class", "loss_type"), LOSSES)
def test_the_instance_values_never_enter_the_loss(loss_class: type, loss_type: str) -> None:
    # Row index, dataset indices (as a training batch would carry) or a constant: same loss.
    features, labels = make_batch(9, 3, seed=4)
    loss_fn = loss_class(0.2, mode="reference")
    row_index = loss_fn(features, with_instances(labels, torch.arange(9)))
    for instances in (torch.tensor([812, 3, 77, 40000, 5, 6, 901, 12, 64]), torch.zeros(9, dtype=torch.int64)):
        assert_same_loss(loss_fn(features, with_instances(labels, instances)), row_index, features)


@pytest.mark.parametrize(("loss_class", "loss_type"), LOSSES)
def test_the_finest_label_is_a_level_only_with_the_column_appended(loss_class: type, loss_type: str) -> None:
    features, labels = make_batch(10, 3, seed=5)
    finer = labels.clone()
    finer[:, -1] = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])  # every sample its own finest class
    absent = loss_class(0.2, mode="reference", instance_column="absent")
    present = loss_class(0.2, mode="reference")
    assert abs(absent(features, labels).item() - absent(features, finer).item()) > 1e-3
    # Taken as an instance id, the finest column is ignored: the reference's behaviour on labels
    # without an instance column.
    torch.testing.assert_close(present(features, labels), present(features, finer), rtol=0, atol=0)


def test_one_level_is_a_scaled_supcon() -> None:
    # Labels (class, instance): one level, the SupCon of the class times t / 0.07, divided by
    # the two label columns.
    features, labels = make_batch(10, 1, seed=6)
    actual = HiMulConE(0.2, mode="reference", instance_column="absent")(features, labels)
    expected = SupConLoss(0.2)(features, labels[:, 0]) * (0.2 / 0.07) * torch.exp(torch.tensor(1.0)).item() / 2
    assert_same_loss(actual, expected, features)


def test_level_weights_count_one_per_real_level() -> None:
    features, labels = make_batch(8, 3, seed=7)
    weights = [0.5, 1.0, 2.0]
    actual = HiMulConE(0.2, level_weights=weights, mode="reference", instance_column="absent")(features, labels)
    expected = oracle_reference_loss(features, with_instances(labels, torch.arange(8)), 0.2, weights, "hmce")
    assert_same_loss(actual, expected, features)
    with pytest.raises(ValueError, match="level_weights must have 3 entries .* got 2"):
        HiMulConE(0.2, level_weights=[1.0, 2.0], mode="reference", instance_column="absent")(features, labels)


def test_instance_column_is_checked_and_named() -> None:
    with pytest.raises(ValueError, match="instance_column must be one of \\('present', 'absent'\\), got 'auto'"):
        HiMulConE(mode="reference", instance_column="auto")
    with pytest.raises(ValueError, match="instance_column='absent' applies to mode='reference', not mode='paper'"):
        HiMulConE(instance_column="absent")
    with pytest.raises(ValueError, match="got 'yes'"):
        reference_hierarchical_loss(torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.int64), instance_column="yes")
    assert HiConE(mode="reference").instance_column == "present" and HiConE().instance_column is None
    assert "instance_column='absent'" in repr(HiMulCon(mode="reference", instance_column="absent"))


@pytest.mark.parametrize(("loss_class", "num_levels"), [(HiConE, 2), (HiMulConE, 2), (HiMulConE, 3)])
def test_reference_is_a_scaled_level_max_when_no_two_samples_share_a_subclass(
    loss_class: type, num_levels: int
) -> None:
    # Without a repeated prefix of length 2 the reference's "first sample of each prefix" keeps
    # every sample, and what remains of the reference is hcl.losses.constraints' "level_max"
    # reading scaled by (t / 0.07) and L / (L + 1): the precise relation its docstring states.
    features, labels = make_batch(10, num_levels, seed=8)
    labels[:, 1] = torch.arange(10)
    reference = loss_class(0.2, mode="reference", instance_column="absent")(features, labels)
    level_max = loss_class(0.2, constraint="level_max")(features, labels)
    assert_same_loss(reference, level_max * (0.2 / 0.07) * num_levels / (num_levels + 1), features)
