"""Multi-process helpers: set-up from torchrun's environment and gradient-preserving gathers.

With DistributedDataParallel each process sees its own shard of the batch. A contrastive loss
needs the negatives (and positives) of ALL processes, so every rank gathers the embeddings and
labels of the whole global batch and computes the same loss over it. The gather keeps the
autograd graph: its backward sums the gradient of every rank's copy of the loss (an all-reduce)
and hands each rank the slice that belongs to its own embeddings. Each rank then holds
``world_size * dL/dz_rank``, and DDP's gradient averaging divides by ``world_size`` again, so the
parameter gradients equal those of a single process that saw the concatenated batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "cleanup_distributed",
    "init_distributed",
    "is_distributed",
    "resolve_device",
]


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_sizes(tensor: torch.Tensor) -> list[int]:
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _gather_padded(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather along dim 0 when ranks hold different numbers of rows (pad, gather, trim)."""
    largest = max(sizes)
    padded = tensor
    if tensor.shape[0] < largest:
        pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        sizes = _gather_sizes(tensor)
        rank = dist.get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return _gather_padded(tensor, sizes)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (in rank order), keeping gradients.

    The backward pass all-reduces (sums) the incoming gradient and returns this rank's slice;
    see the module docstring for why this, combined with DDP's averaging, reproduces the
    single-process gradient. Ranks may hold different numbers of rows. Outside a process group
    (or with one process) the tensor is returned unchanged.

    Shape:
        tensor: (n_rank, ...). Returns (sum of n_rank over ranks, ...).
    """
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (e.g. integer labels) from all ranks along dim 0, without autograd.

    Shape:
        tensor: (n_rank, ...). Returns (sum of n_rank over ranks, ...).
    """
    if not is_distributed():
        return tensor
    return _gather_padded(tensor, _gather_sizes(tensor))


def resolve_device(name: str | torch.device = "auto", *, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when present, else MPS, else CPU. An unavailable explicit choice raises.

    ``cuda`` is this process's GPU (``local_rank`` modulo the GPU count); ``cuda:N`` is GPU N.

    Raises:
        ValueError: unknown device name, or ``cuda``/``mps`` requested but not available (the
            message says to choose ``cpu`` or ``auto``).
    """
    text = str(name)
    kind, _, index = text.partition(":")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} was requested but this machine has no usable CUDA GPU; use cpu or auto")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise ValueError(f"device {text!r} was requested but this machine has {count} CUDA GPU(s), cuda:0..")
        return torch.device("cuda", int(index) if index else local_rank % count)
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was requested but MPS is not available; use cpu or auto")
        return torch.device("mps")
    if text == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {text!r}")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory and runs the evaluation."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; uses NCCL on CUDA and gloo otherwise.
    Without those variables (a plain ``hcl train``) it returns a single-process context. An
    already-initialised group (e.g. a test that set one up) is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return DistributedContext(
            dist.get_rank(), dist.get_world_size(), local_rank, resolve_device(device, local_rank=local_rank)
        )
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistributedContext(0, 1, 0, resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    resolved = resolve_device(device, local_rank=local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, resolved, initialised_here=True)


def cleanup_distributed(ctx: DistributedContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.initialised_here and dist.is_initialized():
        dist.destroy_process_group()
