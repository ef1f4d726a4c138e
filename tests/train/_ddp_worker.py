"""One rank of the 2-process gloo tests in test_train_ddp.py (run as a script, not collected).

``step --rank R --world W --init FILE --out DIR``: for each loss, one train_step of a
DDP-wrapped model on this rank's shard of a fixed batch; saves the loss, the gradients and the
gathered labels. Rank 0 also runs the same step in one process over the whole batch (the
reference the test compares every rank with).

``fit --config JSON --out DIR`` (with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, as
torchrun sets them): hcl.train.fit as under ``torchrun -m hcl train``; saves this rank's weights.
"""

from __future__ import annotations

import argparse
import json
import os
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


def run_step(args: argparse.Namespace) -> None:
    dist.init_process_group("gloo", init_method=f"file://{args.init}", rank=args.rank, world_size=args.world)
    images, labels = make_batch()
    shard = BATCH // args.world
    rows = slice(args.rank * shard, (args.rank + 1) * shard)
    result: dict[str, dict] = {}
    for name in LOSSES:
        model = make_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.0)
        loss, _, gathered = train_step(ddp, build_objective(name), images[rows], labels[rows], optimizer)
        result[name] = {"loss": loss, "grads": [p.grad.clone() for p in model.parameters()], "labels": gathered}
        if args.rank == 0:
            reference = make_model()
            optimizer = torch.optim.SGD(reference.parameters(), lr=0.0)
            loss, _, _ = train_step(reference, build_objective(name), images, labels, optimizer, gather=False)
            result[name]["reference"] = {"loss": loss, "grads": [p.grad.clone() for p in reference.parameters()]}
    torch.save(result, Path(args.out) / f"step_rank{args.rank}.pt")
    dist.destroy_process_group()


def run_fit(args: argparse.Namespace) -> None:
    cfg = TrainConfig.from_dict(json.loads(args.config))
    result = fit(cfg)
    state = {k: v.clone() for k, v in result.model.state_dict().items()}
    torch.save({"step": result.step, "model": state}, Path(args.out) / f"fit_rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("step", "fit"))
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--init", default="")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default="{}")
    arguments = parser.parse_args()
    if arguments.mode == "step":
        run_step(arguments)
    else:
        run_fit(arguments)
