"""A training run set up from its config: fresh, or resumed exactly from its checkpoint.

:func:`start_run` checks the output folder, decides between a fresh start and a resume, builds
the data, batches, model, optimizer and objective, and returns them as one :class:`TrainingRun`;
:meth:`TrainingRun.save_checkpoint` writes the one checkpoint dict that a resume reads back.

The order of the set-up is part of exact resume: everything that draws from the global random
generators (the data set, the model's initial weights) runs after seeding, and a resumed run's
saved generator state is restored last, so building does not disturb it.
"""

from __future__ import annotations

import json
import math
import random
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hcl import rundir
from hcl.hierarchy import Hierarchy
from hcl.metrics import check_heldout_classes, seen_training_indices
from hcl.models import load_weights
from hcl.train.build import (
    build_batch_sampler,
    build_model,
    build_split,
    make_optimizer,
)
from hcl.train.checkpoint import (
    capture_rng_state,
    check_training_state,
    load_newest_checkpoint,
    remove_partial_writes,
    restore_rng_state,
    save_checkpoint,
)
from hcl.train.config import TrainConfig
from hcl.train.config_io import upgrade_keys
from hcl.train.distributed import DistributedContext
from hcl.train.faults import check_output_dir, removed_if_left_empty
from hcl.train.objectives import build_objective
from hcl.train.schedule import warmup_cosine

__all__ = ["TrainingRun", "start_run"]

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
# The most steps a run may take: its learning-rate schedule is an array of one float64 a step.
_MAX_STEPS = 100_000_000
# What a resume needs from the checkpoint (hcl.train.checkpoint checks the types).
_RESUME_KEYS = ("model", "optimizer", "scaler", "step", "rng", "config")


@dataclass
class TrainingRun:
    """Everything :func:`hcl.train.fit` trains with; ``step`` advances as it trains.

    Attributes:
        cfg: the configuration.
        ctx: this process's place in the process group (device, rank, world size).
        train_set: the whole training split (held-out classes included), with the augmentation
            of ``cfg.views_per_image`` views.
        sampler: this rank's batch sampler (:func:`hcl.train.build.build_batch_sampler`), over
            the samples outside ``cfg.heldout_classes`` only.
        steps_per_epoch: batches per epoch and rank.
        total_steps: the global steps of the whole run (``cfg.epochs``, capped by ``cfg.max_steps``).
        schedule: the learning rate of every global step.
        model: the model being trained, unwrapped, on ``ctx.device``.
        model_spec: the arguments of :func:`hcl.train.build_model` besides the config.
        net: ``model`` as forwarded: wrapped in DistributedDataParallel and/or ``torch.compile``.
        optimizer: the optimizer.
        scaler: the fp16 GradScaler (disabled otherwise).
        objective: ``objective(outputs (B, V, D), labels (B, L)) -> loss``.
        step: global steps done.
        last_saved: the step of the newest checkpoint on disk, or None.
        keep_previous: the next checkpoint moves the one at ``checkpoint_path`` to
            ``previous_checkpoint_path`` first (False while that one is damaged: the run resumed
            from the previous one, which is kept instead).
    """

    cfg: TrainConfig
    ctx: DistributedContext
    train_set: Dataset
    sampler: Any
    steps_per_epoch: int
    total_steps: int
    schedule: np.ndarray
    model: nn.Module
    model_spec: dict[str, Any]
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    objective: nn.Module
    step: int = 0
    last_saved: int | None = None
    keep_previous: bool = True

    @property
    def run_dir(self) -> Path:
        """The run directory, ``cfg.output_dir``."""
        return Path(self.cfg.output_dir)

    @property
    def checkpoint_path(self) -> Path:
        """The run's checkpoint file."""
        return self.run_dir / rundir.CHECKPOINT_FILE

    @property
    def previous_checkpoint_path(self) -> Path:
        """The checkpoint before the newest, kept until the next one is written."""
        return self.run_dir / rundir.PREVIOUS_CHECKPOINT_FILE

    @property
    def num_epochs(self) -> int:
        """Epochs the run takes, the last one possibly partial."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def save_checkpoint(self) -> None:
        """Checkpoint the current step (rank 0 writes; every rank records it as saved)."""
        self.last_saved = self.step
        if not self.ctx.is_main:
            return
        save_checkpoint(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "batch_in_epoch": self.step % self.steps_per_epoch,
                "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps,
                "rng": capture_rng_state(),
                "config": self.cfg.to_dict(),
                "hierarchy": json.dumps(self.train_set.hierarchy.to_dict()),
                "model_spec": self.model_spec,
            },
            self.checkpoint_path,
            previous=self.previous_checkpoint_path if self.keep_previous else None,
        )
        self.keep_previous = True


def start_run(cfg: TrainConfig, ctx: DistributedContext, *, resume: bool, overwrite: bool) -> TrainingRun:
    """Set up the run of ``cfg``: a fresh one, or the checkpoint's when ``resume`` finds one.

    A fresh run (rank 0) writes ``config.json``, ``hierarchy.json`` and an empty
    ``metrics.jsonl``, and removes an earlier run's results and embeddings; a resumed one drops
    the log lines after its checkpoint. A run directory this call created is removed again when
    set-up fails before writing anything into it (e.g. a wrong data option). See
    :func:`hcl.train.fit` for the errors.
    """
    with removed_if_left_empty(Path(cfg.output_dir)) if ctx.is_main else nullcontext():
        return _start_run(cfg, ctx, resume=resume, overwrite=overwrite)


def _start_run(cfg: TrainConfig, ctx: DistributedContext, *, resume: bool, overwrite: bool) -> TrainingRun:
    resumed = _checkpoint_to_resume(cfg, ctx, resume=resume, overwrite=overwrite)
    state = None if resumed is None else resumed[0]
    _seed_everything(cfg.seed)
    train_set = build_split(cfg, cfg.train_split, augment=True)
    keep = _seen_samples(cfg, train_set)
    sampler = build_batch_sampler(cfg, train_set.labels, world_size=ctx.world_size, rank=ctx.rank, keep=keep)
    steps_per_epoch = len(sampler)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    if total_steps > _MAX_STEPS:
        raise ValueError(
            f"config key 'epochs' ({cfg.epochs}) at {steps_per_epoch} steps per epoch gives {total_steps} steps, "
            f"more than the {_MAX_STEPS} a run may take; lower 'epochs' or set 'max_steps'"
        )
    schedule = warmup_cosine(
        cfg.lr, total_steps, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), min_lr=min(cfg.min_lr, cfg.lr)
    )
    model, model_spec = _build_model(cfg, ctx, train_set, load_pretrained=state is None)
    if ctx.is_main:
        check_output_dir(Path(cfg.output_dir), needed_bytes=_peak_disk_bytes(cfg, model, train_set.hierarchy))
    optimizer = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    objective = build_objective(
        cfg.loss, hierarchy=train_set.hierarchy, cuda_graphs=cfg.cuda_graphs, **cfg.loss_options()
    )
    run = TrainingRun(
        cfg,
        ctx,
        train_set,
        sampler,
        steps_per_epoch,
        total_steps,
        schedule,
        model,
        model_spec,
        net=model,
        optimizer=optimizer,
        scaler=scaler,
        objective=objective,
    )
    if resumed is None:
        _start_fresh(run)
    else:
        _restore(run, *resumed)
    run.net = _wrap_for_training(model, cfg, ctx)
    if state is not None:
        restore_rng_state(state["rng"])  # last: building the model and data does not disturb the saved streams
    return run


def _checkpoint_to_resume(
    cfg: TrainConfig, ctx: DistributedContext, *, resume: bool, overwrite: bool
) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint state to resume from and its file, or None for a fresh run.

    Checks the output folder first. Nothing in it is changed when this raises.
    """
    run_dir = Path(cfg.output_dir)
    latest, previous = run_dir / rundir.CHECKPOINT_FILE, run_dir / rundir.PREVIOUS_CHECKPOINT_FILE
    if ctx.is_main:
        check_output_dir(run_dir)
        for path in (latest, previous):
            remove_partial_writes(path)  # left by a run killed while writing a checkpoint
    if not resume:
        if not (latest.exists() or previous.exists()) or overwrite:
            return None
        raise FileExistsError(
            f"{run_dir} already holds a checkpoint; resume it (--resume), overwrite it (--overwrite) "
            "or choose another output_dir"
        )
    try:
        state, path = load_newest_checkpoint(
            latest, previous, lambda state, path: check_training_state(state, path, _RESUME_KEYS)
        )
    except (FileNotFoundError, ValueError) as error:
        held = rundir.run_files(run_dir)
        if held and not overwrite:
            names = ", ".join(p.name for p in held)
            raise type(error)(
                f"cannot resume {run_dir}: {error}. It holds {names}, left as they are; start it afresh with "
                "--overwrite (replaces them) or choose another output_dir"
            ) from None
        if ctx.is_main:
            print(f"nothing to resume in {run_dir} ({error}): starting a fresh run", file=sys.stderr)
        return None
    current = cfg.to_dict()
    saved = upgrade_keys(state["config"], warn=False)  # a checkpoint of an older hcl may use renamed keys
    changed = sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"cannot resume {path}: the config differs in {detail}")
    return state, path


def _seen_samples(cfg: TrainConfig, train_set: Dataset) -> np.ndarray | None:
    """The training samples outside ``cfg.heldout_classes`` (None when no class is held out).

    Raises:
        ValueError: a held-out class that is unknown, not at the finest level, without training
            samples, or its parent's only child (named, with the parent).
    """
    if not cfg.heldout_classes:
        return None
    try:
        check_heldout_classes(train_set.labels, cfg.heldout_classes, hierarchy=train_set.hierarchy, level=-1)
    except (TypeError, ValueError) as error:
        raise type(error)(f"config key 'heldout_classes': {error}") from error
    return seen_training_indices(train_set.labels, cfg.heldout_classes, hierarchy=train_set.hierarchy)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build_model(
    cfg: TrainConfig, ctx: DistributedContext, train_set: Dataset, *, load_pretrained: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """The model on its device and its spec; ``cfg.pretrained`` weights only for a fresh run."""
    # Every finest-level class of the hierarchy, seen in training or not (held-out classes).
    hierarchy = train_set.hierarchy
    num_classes = hierarchy.num_nodes(hierarchy.num_levels - 1) if cfg.needs_classifier else None
    model_spec = {
        "in_channels": train_set.channels,
        "image_size": cfg.image_size or train_set.image_size,
        "num_classes": num_classes,
    }
    model = build_model(cfg, **model_spec)
    if cfg.pretrained and load_pretrained:
        report = load_weights(model, cfg.pretrained)
        if ctx.is_main:
            print(report, file=sys.stderr)
    model.to(ctx.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, model_spec


def _start_fresh(run: TrainingRun) -> None:
    if run.ctx.is_main:
        rundir.write_config(run.run_dir, run.cfg.to_dict())
        rundir.write_hierarchy(run.run_dir, run.train_set.hierarchy)
        rundir.start_metrics_log(run.run_dir)
        rundir.clear_evaluation(run.run_dir)


def _peak_disk_bytes(cfg: TrainConfig, model: nn.Module, hierarchy: Hierarchy) -> int:
    """Disk space a run needs at its peak: two checkpoints and the embeddings of the final evaluation.

    A checkpoint holds the model's state, the optimizer's (AdamW: two moments a parameter, SGD one)
    and a few KiB of random-generator state and config; the zip archive adds a header per tensor.
    While a checkpoint is written, the previous one is kept (:meth:`TrainingRun.save_checkpoint`).
    The embeddings are float32 rows with their int64 labels and index.
    """
    tensors = list(model.state_dict().values())
    parameters = list(model.parameters())
    model_bytes = sum(t.numel() * t.element_size() for t in tensors)
    optimizer_bytes = 2 * sum(p.numel() * p.element_size() for p in parameters)
    checkpoint_bytes = model_bytes + optimizer_bytes + 4096 * (len(tensors) + 2 * len(parameters)) + 2**20
    splits = [cfg.eval_split] + ([cfg.eval_query_split] if cfg.eval_query_split else []) if cfg.eval_every >= 0 else []
    rows = sum(len(build_split(cfg, split)) for split in splits)
    dim = getattr(model, "feature_dim", cfg.embedding_dim) if cfg.embedding == "features" else cfg.embedding_dim
    levels = hierarchy.num_levels
    hierarchy_bytes = 4 * len(json.dumps(hierarchy.to_dict()))  # stored in each file as a UCS-4 string
    return 2 * checkpoint_bytes + rows * (4 * dim + 8 * levels + 8) + len(splits) * hierarchy_bytes


def _restore(run: TrainingRun, state: dict[str, Any], path: Path) -> None:
    step = state["step"]
    if not 0 <= step <= run.total_steps:
        raise ValueError(
            f"checkpoint {path} is at step {step}, outside this run's schedule of {run.total_steps} steps "
            f"({run.cfg.epochs} epochs of {run.steps_per_epoch}"
            + (f", max_steps {run.cfg.max_steps})" if run.cfg.max_steps else ")")
        )
    run.keep_previous = path == run.checkpoint_path
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.step = run.last_saved = int(state["step"])
    if run.ctx.is_main:
        rundir.truncate_metrics_log(run.run_dir, run.step)
        if run.step == run.total_steps:
            print(
                f"{run.run_dir} is already complete (step {run.step} of {run.total_steps}): nothing left to train",
                file=sys.stderr,
            )
        else:
            print(
                f"resuming {run.run_dir} at step {run.step} of {run.total_steps} "
                f"(epoch {run.step // run.steps_per_epoch})",
                file=sys.stderr,
            )


def _wrap_for_training(model: nn.Module, cfg: TrainConfig, ctx: DistributedContext) -> nn.Module:
    """``model`` in DistributedDataParallel (with SyncBatchNorm if asked) and ``torch.compile`` as configured."""
    net = model
    if ctx.world_size > 1:
        if cfg.sync_batchnorm and ctx.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
    if cfg.compile:
        net = torch.compile(net)
    return net
