"""One optimisation step (:func:`train_step`) and a plain loop over a loader (:func:`train`).

The low-level entry points for notebooks and custom data: no run directory, no checkpoints.
:func:`hcl.train.fit` builds its training on :func:`train_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hcl.train.build import autocast_context, make_optimizer
from hcl.train.distributed import all_gather_no_grad, all_gather_with_grad, is_distributed, resolve_device
from hcl.train.progress import live_bars

__all__ = ["NonFiniteLossError", "train", "train_step"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step. Nothing was saved over it."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def _as_views(images: Any) -> torch.Tensor:
    """Batch images as (B, V, C, H, W): a (B, C, H, W) batch is one view."""
    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images), dim=1)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"a batch of images must be a tensor, got {type(images).__name__}")
    if images.dim() == 4:
        return images.unsqueeze(1)
    if images.dim() == 5:
        return images
    raise ValueError(f"a batch of images must be (B, C, H, W) or (B, V, C, H, W), got {tuple(images.shape)}")


def train_step(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    grad_clip: float | None = None,
    step: int = 0,
    gather: bool = True,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimisation step: forward all views, loss over the (global) batch, backward, update.

    The V views of each sample are forwarded as one (B*V, C, H, W) batch; outputs are reshaped to
    (B, V, D) and cast to float32 for the loss. Under a process group, outputs and labels of all
    ranks are gathered first (:func:`hcl.train.all_gather_with_grad`), so the loss sees every
    rank's negatives and the gradients equal those of one process over the concatenated batch.
    A NaN or infinite loss raises :class:`NonFiniteLossError` before the optimizer changes anything
    (its gradients are discarded).

    Args:
        model: maps (N, C, H, W) images to (N, D) outputs (a DDP-wrapped model is fine).
        loss_fn: ``loss_fn(outputs (B, V, D), labels (B, L)) -> scalar``.
        images: (B, V, C, H, W) or (B, C, H, W), on the model's device.
        labels: (B, L) int64, on the model's device.
        optimizer: stepped once (gradients are zeroed first).
        scaler: a GradScaler for fp16 (None otherwise).
        precision: fp32, bf16 or fp16 autocast for the model's forward pass.
        channels_last: feed images in channels-last memory format.
        grad_clip: clip the gradient norm to this value.
        step: the global step, named in the error message of a non-finite loss.
        gather: gather across ranks when a process group is initialised.

    Returns:
        (loss value, the gathered outputs (detached), the gathered labels).
    """
    views = _as_views(images)
    batch, num_views = views.shape[:2]
    flat = views.flatten(0, 1)
    if channels_last:
        flat = flat.contiguous(memory_format=torch.channels_last)
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(flat.device, precision):
        outputs = model(flat)
    outputs = outputs.float().reshape(batch, num_views, -1)
    if gather and is_distributed():
        outputs = all_gather_with_grad(outputs)
        labels = all_gather_no_grad(labels)
    loss = loss_fn(outputs, labels)
    scaled = scaler is not None and scaler.is_enabled()
    (scaler.scale(loss) if scaled else loss).backward()
    # The one read-back of the step, after the backward pass is queued: until here the host runs
    # ahead of the GPU, so the loss's own launches overlap the model's work.
    value = float(loss.detach())
    if not math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(outputs.detach()).all()):
            raise NonFiniteLossError(
                f"the loss became non-finite at step {step}: the model's outputs hold NaN or inf", step
            )
        raise NonFiniteLossError(f"the loss became {value} at step {step}; stopping", step)
    if scaled:
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return value, outputs.detach(), labels


def train(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Iterable[Sequence[Any]],
    *,
    epochs: int = 1,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 0.05,
    lr_schedule: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    grad_clip: float | None = None,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` on ``loader`` for ``epochs`` epochs; returns the loss of every step.

    The low-level entry point for notebooks and custom data: no run directory, no checkpoints
    (use :func:`fit` for those). Batches are ``(images, labels)`` or ``(images, labels, ...)``
    with images (B, V, C, H, W) or (B, C, H, W). Before each epoch, ``set_epoch`` of the loader's
    (batch) sampler is called when it has one.

    Args:
        model: moved to ``device`` and put in training mode.
        loss_fn: ``loss_fn(outputs (B, V, D), labels (B, L)) -> scalar``, e.g. ``HiMulConE()``.
        loader: an iterable of batches, re-iterated every epoch.
        epochs: passes over ``loader``.
        optimizer: default SGD (momentum 0.9, weight decay 1e-4) at ``lr``.
        lr: the learning rate of the default optimizer.
        lr_schedule: a learning rate per global step (e.g. :func:`hcl.train.warmup_cosine`).
        device: default CUDA, else MPS, else CPU.
        precision: fp32, bf16 or fp16 autocast (fp16 uses a GradScaler).
        channels_last: channels-last memory format for model and inputs.
        grad_clip: clip the gradient norm.
        progress: show a tqdm bar (on a terminal or in a notebook only: never in a log file).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the step is named).
    """
    device = resolve_device("auto") if device is None else torch.device(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    if optimizer is None:
        optimizer = make_optimizer(model, "sgd", lr=lr, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    losses: list[float] = []
    for epoch in range(epochs):
        for holder in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not live_bars(progress), leave=False)
        for batch in bar:
            images, labels = batch[0], batch[1]
            step = len(losses)
            if lr_schedule is not None:
                if step >= len(lr_schedule):
                    raise ValueError(f"lr_schedule has {len(lr_schedule)} entries but step {step} needs one more")
                for group in optimizer.param_groups:
                    group["lr"] = float(lr_schedule[step])
            value, _, _ = train_step(
                model,
                loss_fn,
                _as_views(images).to(device, non_blocking=True),
                torch.as_tensor(labels).to(device, non_blocking=True),
                optimizer,
                scaler=scaler,
                precision=precision,
                channels_last=channels_last,
                grad_clip=grad_clip,
                step=step,
            )
            losses.append(value)
            bar.set_postfix(loss=f"{value:.4f}")
    return losses
