"""The training loop: one step, a plain ``train`` over a loader, and the ``fit(cfg)`` harness.

``fit`` owns a run directory (the contract other parts of hcl read)::

    <output_dir>/config.json          the TrainConfig
    <output_dir>/hierarchy.json       the label hierarchy
    <output_dir>/checkpoint.pt        {model, optimizer, scaler, step, epoch, rng, config, ...}
    <output_dir>/metrics.jsonl        {"kind": "train", ...} and {"kind": "eval", ...} lines
    <output_dir>/results.json         written by the final evaluation (and ``hcl evaluate``)
    <output_dir>/embeddings_<split>.npz

Exact resume: the batches of an epoch are a pure function of (seed, epoch) and every sample's
augmentation a pure function of (seed, epoch, index) (:class:`SeededViews`), so a resumed run
skips the batches already done and reaches bit-identical weights on CPU, whatever the number of
DataLoader workers.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hcl import rundir
from hcl.train.build import (
    SeededViews,
    autocast_context,
    build_batch_sampler,
    build_model,
    build_split,
    make_optimizer,
)
from hcl.train.checkpoint import (
    capture_rng_state,
    check_training_state,
    load_checkpoint,
    remove_partial_writes,
    restore_rng_state,
    save_checkpoint,
)
from hcl.train.config import TrainConfig
from hcl.train.distributed import (
    DistributedContext,
    all_gather_no_grad,
    all_gather_with_grad,
    cleanup_distributed,
    init_distributed,
    is_distributed,
    resolve_device,
)
from hcl.train.evaluate import evaluate_model, evaluate_run
from hcl.train.schedule import warmup_cosine

__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "fit",
    "train",
    "train_step",
]

# Config keys that may differ between a checkpoint and the config that resumes it: they change
# how a run is executed or reported, never what it computes.
_RESUMABLE_CHANGES = frozenset(
    {
        "num_workers",
        "progress",
        "log_every",
        "checkpoint_every",
        "eval_every",
        "eval_batch_size",
        "device",
        "output_dir",
        "cuda_graphs",
    }
)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step. Nothing was saved over it."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        run_dir: the run directory.
        step: global steps done.
        epoch: epochs completed.
        interrupted: stopped by Ctrl-C (SIGINT) after checkpointing; resume with ``resume=True``.
        results: the final evaluation (as in ``results.json``), or None when it did not run.
        history: the loss of every step this call ran.
        model: the trained model (unwrapped from DDP / torch.compile), on its training device.
    """

    run_dir: Path
    step: int
    epoch: int
    interrupted: bool = False
    results: dict[str, Any] | None = None
    history: list[float] = field(default_factory=list)
    model: nn.Module | None = None


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
            raise NonFiniteLossError(f"the loss became non-finite at step {step}: the model's outputs hold NaN or inf", step)
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
        progress: show a tqdm bar.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the step is named).
    """
    from tqdm.auto import tqdm

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
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
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


# ----------------------------------------------------------------------------- fit(cfg)


class _StopRequest:
    """SIGINT handling: the first Ctrl-C asks the loop to stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        except ValueError:  # not the main thread: Ctrl-C cannot be caught here
            self._installed = False
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing the current step, then writing a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def agreed(self, device: torch.device) -> bool:
        """True when any rank was asked to stop (so that all ranks stop at the same step)."""
        if not is_distributed():
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def check_output_dir(path: Path, needed_bytes: int = 0) -> None:
    """Fail before training when ``path`` cannot hold the run: not creatable, not writable, full.

    Raises:
        OSError: naming the directory and the reason.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output directory {path}: {error.strerror or error}") from error
    probe = path / f".write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OSError(f"the output directory {path} is not writable: {error.strerror or error}") from error
    finally:
        # On a read-only file system even removing a file that was never created fails (EROFS),
        # which would replace the clear error above.
        with suppress(OSError):
            probe.unlink(missing_ok=True)
    free = shutil.disk_usage(path).free
    if needed_bytes and free < needed_bytes:
        raise OSError(
            f"the output directory {path} has {free / 2**20:.1f} MiB free, but a checkpoint needs about "
            f"{needed_bytes / 2**20:.1f} MiB (twice that while it is replaced)"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _lost_batch(iterator: Any, batches: Sequence[Sequence[tuple[int, int]]], dataset: Dataset, first: int) -> str:
    """Which batch a dead DataLoader worker was loading: its position, sample indices and files.

    PyTorch reports only the worker's pid. The batch comes from the iterator's task table (batch
    position -> worker); ``first`` is the position of ``batches[0]`` in its epoch. The table is
    private to torch's multi-process iterator, so this degrades to "unknown" without it.
    """
    dead = [i for i, worker in enumerate(getattr(iterator, "_workers", [])) if not worker.is_alive()]
    tasks = getattr(iterator, "_task_info", {})
    lost = sorted(i for i, info in tasks.items() if len(info) == 1 and (not dead or info[0] in dead))
    if not lost:
        return "the batch it was loading is unknown"
    keys = batches[lost[0]]
    indices = [index for _, index in keys]
    paths = getattr(dataset, "paths", None)
    files = f" (files: {', '.join(paths[i] for i in indices)})" if paths else ""
    return (
        f"it was loading batch {first + lost[0] + 1} of epoch {keys[0][0] + 1}, samples {indices}{files}; "
        "one of them may crash the image decoder, or the worker ran out of memory"
    )


def _config_differences(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    current = cfg.to_dict()
    return sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k])


def fit(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int, nn.Module, float], None] | None = None,
) -> FitResult:
    """Train according to ``cfg`` into the run directory ``cfg.output_dir``.

    Runs on CUDA when present, else MPS, else CPU (``cfg.device``); under ``torchrun`` each
    process trains its shard with DistributedDataParallel and the loss sees all ranks' samples.
    Logs JSON lines, checkpoints every ``cfg.checkpoint_every`` steps and at each epoch end,
    evaluates on ``cfg.eval_split`` every ``cfg.eval_every`` epochs and after the last one
    (writing ``results.json`` and ``embeddings_<split>.npz``).

    Faults: the output directory is checked (creatable, writable, room for a checkpoint) before
    training; a NaN/infinite loss raises :class:`NonFiniteLossError` naming the step and leaves
    the last good checkpoint untouched; Ctrl-C finishes the current step, writes a checkpoint
    and returns with ``interrupted=True``.

    Args:
        cfg: the configuration.
        resume: continue from ``<output_dir>/checkpoint.pt`` (exactly: same batches, same
            augmentations, same weights as an uninterrupted run). Without a checkpoint the run
            starts fresh.
        overwrite: start fresh even though the directory holds a checkpoint (it is replaced).
        on_step: called on rank 0 as ``on_step(step, model, loss)`` after each step and its
            checkpoint, e.g. for custom monitoring.

    Raises:
        FileExistsError: the directory holds a checkpoint and neither ``resume`` nor ``overwrite``.
        ValueError: inconsistent settings (batch size vs. data set and world size; a resumed
            config that differs from the checkpoint's in keys that change the result).
        NonFiniteLossError: the loss became NaN or infinite.
        OSError: the output directory is unusable.
    """
    ctx = init_distributed(cfg.device)
    loading: dict[str, Any] = {}  # the current epoch's loader iterator, to name a dead worker's batch
    try:
        return _fit(cfg, ctx, resume=resume, overwrite=overwrite, on_step=on_step, loading=loading)
    except RuntimeError as error:
        # Raised by next(iterator), or by the SIGCHLD handler anywhere inside a step.
        if "DataLoader worker" in str(error) and loading:
            raise RuntimeError(f"{str(error).rstrip(' .')}; {_lost_batch(**loading)}") from error
        raise
    finally:
        cleanup_distributed(ctx)


def _fit(
    cfg: TrainConfig,
    ctx: DistributedContext,
    *,
    resume: bool,
    overwrite: bool,
    on_step: Callable[[int, nn.Module, float], None] | None,
    loading: dict[str, Any],
) -> FitResult:
    from tqdm.auto import tqdm

    device = ctx.device
    run_dir = Path(cfg.output_dir)
    ckpt_path = run_dir / rundir.CHECKPOINT_FILE
    if ctx.is_main:
        check_output_dir(run_dir)
        remove_partial_writes(ckpt_path)  # left by a run killed while writing a checkpoint
    state = None
    if ckpt_path.is_file():
        if resume:
            state = load_checkpoint(ckpt_path)
            check_training_state(state, ckpt_path, ("model", "optimizer", "scaler", "step", "rng", "config"))
            changed = _config_differences(state["config"], cfg)
            if changed:
                detail = ", ".join(f"{k}: {state['config'].get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
                raise ValueError(f"cannot resume {ckpt_path}: the config differs in {detail}")
        elif not overwrite:
            raise FileExistsError(
                f"{run_dir} already holds a checkpoint; resume it (--resume), overwrite it (--overwrite) "
                "or choose another output_dir"
            )
    elif resume and ctx.is_main:
        print(f"no checkpoint in {run_dir}: starting a fresh run", file=sys.stderr)

    _seed_everything(cfg.seed)
    train_set = build_split(cfg, cfg.train_split, augment=True)
    hierarchy = train_set.hierarchy
    labels = train_set.labels
    sampler = build_batch_sampler(cfg, labels, world_size=ctx.world_size, rank=ctx.rank)
    steps_per_epoch = len(sampler)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    schedule = warmup_cosine(
        cfg.lr, total_steps, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), min_lr=min(cfg.min_lr, cfg.lr)
    )

    num_classes = int(labels[:, -1].max()) + 1 if cfg.loss == "cross_entropy" else None
    model_spec = {
        "in_channels": train_set.channels,
        "image_size": cfg.image_size or train_set.image_size,
        "num_classes": num_classes,
    }
    model = build_model(cfg, **model_spec)
    if cfg.pretrained and state is None:
        from hcl.models import load_weights

        report = load_weights(model, cfg.pretrained)
        if ctx.is_main:
            print(report, file=sys.stderr)
    num_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if ctx.is_main:
        check_output_dir(run_dir, needed_bytes=3 * num_bytes)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    from hcl.train.objectives import build_objective

    objective = build_objective(
        cfg.loss,
        temperature=cfg.temperature,
        level_weights=cfg.level_weights,
        mode=cfg.loss_mode,
        bound_gradient=cfg.bound_gradient,
        cuda_graphs=cfg.cuda_graphs,
    )

    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        if ctx.is_main:
            rundir.truncate_metrics_log(run_dir, step)
            print(f"resuming {run_dir} at step {step} (epoch {step // steps_per_epoch})", file=sys.stderr)
    elif ctx.is_main:
        rundir.write_config(run_dir, cfg.to_dict())
        rundir.write_hierarchy(run_dir, hierarchy)
        rundir.start_metrics_log(run_dir)
        rundir.clear_evaluation(run_dir)

    net: nn.Module = model
    if ctx.world_size > 1:
        if cfg.sync_batchnorm and device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    # Restored last, so that building the model and data does not disturb the saved streams.
    if state is not None:
        restore_rng_state(state["rng"])

    last_saved = [step if state is not None else None]

    def checkpoint(at_step: int) -> None:
        last_saved[0] = at_step
        if not ctx.is_main:
            return
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": at_step,
                "epoch": at_step // steps_per_epoch,
                "batch_in_epoch": at_step % steps_per_epoch,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "rng": capture_rng_state(),
                "config": cfg.to_dict(),
                "hierarchy": json.dumps(hierarchy.to_dict()),
                "model_spec": model_spec,
            },
            ckpt_path,
        )

    def evaluate(epoch: int, at_step: int, final: bool) -> dict[str, Any] | None:
        result = None
        if ctx.is_main:
            if final:
                result = evaluate_run(run_dir, cfg=cfg, model=model, device=device, progress=cfg.progress)
                result["step"] = at_step
                rundir.write_results(run_dir, result)
                metrics = {"retrieval": result["retrieval"], "cpcc": result["cpcc"]}
            else:
                eval_set = build_split(cfg, cfg.eval_split)
                query_set = build_split(cfg, cfg.eval_query_split) if cfg.eval_query_split else None
                metrics = evaluate_model(model, eval_set, cfg, device=device, query_set=query_set)
            rundir.append_metrics(run_dir, {"kind": "eval", "epoch": epoch, "step": at_step, **metrics})
            model.train()
        if is_distributed():
            dist.barrier()
        return result

    collate_device = device.type == "cuda"
    seeded = SeededViews(train_set, cfg.seed)
    history: list[float] = []
    interrupted = False
    results = None
    epoch = step // steps_per_epoch
    with _StopRequest() as stop:
        epoch_bar = tqdm(total=num_epochs, initial=epoch, desc="epochs", disable=not (cfg.progress and ctx.is_main))
        while step < total_steps:
            epoch = step // steps_per_epoch
            sampler.set_epoch(epoch)
            first = step - epoch * steps_per_epoch
            last = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            batches = [[(epoch, i) for i in batch] for batch in list(sampler)[first:last]]
            # The loader draws a base seed each time it is iterated. From the global generator that
            # is one extra draw per resume inside an epoch, after which the global stream (dropout,
            # stochastic depth) of a resumed run differs from an uninterrupted run's.
            loader = DataLoader(
                seeded,
                batch_sampler=batches,
                num_workers=cfg.num_workers,
                pin_memory=collate_device,
                generator=torch.Generator().manual_seed(seeded.item_seed(epoch, len(seeded))),
            )
            net.train()
            bar = tqdm(total=last, initial=first, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False,
                       disable=not (cfg.progress and ctx.is_main))
            window_start, window_steps = time.perf_counter(), 0
            iterator = iter(loader)
            loading.update(iterator=iterator, batches=batches, dataset=train_set, first=first)
            for images, batch_labels, _ in iterator:
                images = images.to(device, non_blocking=True)
                batch_labels = batch_labels.to(device, non_blocking=True)
                for group in optimizer.param_groups:
                    group["lr"] = float(schedule[step])
                try:
                    loss, outputs, gathered = train_step(
                        net, objective, images, batch_labels, optimizer, scaler=scaler, precision=cfg.precision,
                        channels_last=cfg.channels_last, grad_clip=cfg.grad_clip, step=step + 1,
                    )
                except NonFiniteLossError as error:
                    where = f"{ckpt_path} (step {last_saved[0]})" if last_saved[0] is not None else "none"
                    raise NonFiniteLossError(
                        f"{error} (epoch {epoch + 1}, batch {step - epoch * steps_per_epoch + 1}); nothing was "
                        f"saved. Last good checkpoint: {where}. Lower the lr, enable grad_clip or use fp32.",
                        error.step,
                    ) from None
                step += 1
                window_steps += 1
                history.append(loss)
                bar.update(1)
                end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
                if ctx.is_main and (step % cfg.log_every == 0 or end_of_epoch):
                    elapsed = time.perf_counter() - window_start
                    level_terms = objective.level_terms(outputs, gathered) if hasattr(objective, "level_terms") else []
                    record = {
                        "kind": "train",
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "loss": loss,
                        "loss_levels": level_terms,
                        "lr": float(schedule[step - 1]),
                        "images_per_s": window_steps * cfg.batch_size / max(elapsed, 1e-9),
                    }
                    rundir.append_metrics(run_dir, record)
                    postfix = {"loss": f"{loss:.4f}", "img/s": f"{record['images_per_s']:.0f}"}
                    postfix.update({f"L{i}": f"{v:.3f}" for i, v in enumerate(level_terms)})
                    bar.set_postfix(postfix)
                    window_start, window_steps = time.perf_counter(), 0
                saved = False
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not end_of_epoch:
                    checkpoint(step)
                    saved = True
                if on_step is not None and ctx.is_main:
                    on_step(step, model, loss)
                if not end_of_epoch and stop.agreed(device):
                    if not saved:
                        checkpoint(step)
                    interrupted = True
                    break
            bar.close()
            if interrupted:
                break
            completed = step // steps_per_epoch if step % steps_per_epoch == 0 else epoch + 1
            final = step >= total_steps
            if (final and cfg.eval_every >= 0) or (cfg.eval_every > 0 and completed % cfg.eval_every == 0):
                outcome = evaluate(completed, step, final)
                results = outcome if final else results
            checkpoint(step)
            epoch_bar.update(1)
            if not final and stop.agreed(device):
                interrupted = True
                break
        epoch_bar.close()
    if interrupted and ctx.is_main:
        print(f"interrupted at step {step}; checkpoint written to {ckpt_path}; continue with --resume",
              file=sys.stderr)
    return FitResult(
        run_dir, step, step // steps_per_epoch, interrupted=interrupted, results=results, history=history, model=model
    )
