"""Reference mode in training: hcl's labels carry no instance-id column, so the objective has
the loss append one and the finest label stays a level, as in the reference's training."""

from __future__ import annotations

import pytest
import torch

from hcl.losses import HiConE, HiMulCon, HiMulConE
from hcl.train import build_objective


@pytest.mark.parametrize(("name", "loss_class"), [("himulcon", HiMulCon), ("hicone", HiConE), ("himulcone", HiMulConE)])
def test_reference_objective_keeps_the_finest_label_as_a_level(name: str, loss_class: type) -> None:
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(8, 2, 6, generator=generator)
    labels = torch.randint(0, 2, (8, 3), generator=generator)
    objective = build_objective(name, mode="reference", cuda_graphs=False)
    with_instances = torch.cat([labels, torch.arange(8).unsqueeze(1)], dim=1)
    expected = loss_class(0.1, mode="reference")(outputs, with_instances)
    torch.testing.assert_close(objective(outputs, labels), expected, rtol=1e-6, atol=0)
    finer = labels.clone()
    finer[:, -1] = torch.arange(8)
    assert abs(objective(outputs, finer).item() - objective(outputs, labels).item()) > 1e-3
