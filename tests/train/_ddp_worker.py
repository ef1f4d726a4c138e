"""One rank of the 2-process gloo test in test_train_ddp.py (run as a script, not collected).

Run with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, as torchrun sets them:
``python _ddp_worker.py --out DIR --config JSON``. The rank joins the process group, then

1. for each loss, runs one train_step of a DDP-wrapped model on its shard of a fixed batch and
   saves the loss, the gradients and the gathered labels; rank 0 also runs the same step in one
   process over the whole batch (the reference the test compares every rank with);
2. runs hcl.train.fit(config) in that process group, as ``torchrun -m hcl train`` does, and saves
   its final weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from hcl.train import TrainConfig, build_objective, fit, train_step

BATCH, VIEWS = 8, 2
LOSSES = ("himulcone", "himulcon", "supcon", "simclr", "cross_entropy")


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, VIEWS, 1, 6, 6, generator=generator)
    labels = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [1, 2, 4], [0, 0, 0], [1, 3, 5], [0, 1, 2]])
    return images, labels


def make_model() -> nn.Module:
    # No batch norm: per-rank batch statistics would differ from the whole batch's by design.
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, 8))


def run_step(rank: int, world: int, out: Path) -> None:
    images, labels = make_batch()
    shard = BATCH // world
    rows = slice(rank * shard, (rank + 1) * shard)
    result: dict[str, dict] = {}
    for name in LOSSES:
        model = make_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.0)
        loss, _, gathered = train_step(ddp, build_objective(name), images[rows], labels[rows], optimizer)
        result[name] = {"loss": loss, "grads": [p.grad.clone() for p in model.parameters()], "labels": gathered}
        if rank == 0:
            reference = make_model()
            optimizer = torch.optim.SGD(reference.parameters(), lr=0.0)
            loss, _, _ = train_step(reference, build_objective(name), images, labels, optimizer, gather=False)
            result[name]["reference"] = {"loss": loss, "grads": [p.grad.clone() for p in reference.parameters()]}
    torch.save(result, out / f"step_rank{rank}.pt")


def run_fit(rank: int, config: str, out: Path) -> None:
    cfg = TrainConfig.from_dict(json.loads(config))
    result = fit(cfg)
    state = {k: v.clone() for k, v in result.model.state_dict().items()}
    torch.save({"step": result.step, "model": state}, out / f"fit_rank{rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--config", required=True)
    arguments = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    run_step(rank, world, arguments.out)
    run_fit(rank, arguments.config, arguments.out)
    dist.destroy_process_group()
