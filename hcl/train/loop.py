"""``fit(cfg)``: train into a run directory, with logs, checkpoints, evaluation and exact resume.

The run directory's files are those of :mod:`hcl.rundir`. :func:`fit` sets the run up
(:func:`hcl.train.run.start_run`), then trains it epoch by epoch: each step goes through
:func:`hcl.train.train_step`, is logged, and checkpointed every ``cfg.checkpoint_every`` steps
and at each epoch's end; evaluation runs every ``cfg.eval_every`` epochs and after the last.

Exact resume: the batches of an epoch are a pure function of (seed, epoch) and every sample's
augmentation a pure function of (seed, epoch, index) (:class:`hcl.train.SeededViews`), so a
resumed run skips the batches already done and reaches bit-identical weights on CPU, whatever
the number of DataLoader workers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from hcl import rundir
from hcl.losses.graphed import CUDAGraphLoss
from hcl.train.build import SeededViews, build_split
from hcl.train.config import TrainConfig
from hcl.train.distributed import cleanup_distributed, init_distributed, is_distributed
from hcl.train.evaluate import evaluate_model, evaluate_run
from hcl.train.faults import StopRequest, describe_lost_batch
from hcl.train.progress import EpochReporter
from hcl.train.run import TrainingRun, start_run
from hcl.train.step import NonFiniteLossError, train_step

__all__ = ["FitResult", "fit"]

StepCallback = Callable[[int, nn.Module, float], None]


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


def fit(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: StepCallback | None = None,
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
    and returns with ``interrupted=True``; a DataLoader worker that dies is reported with the
    batch (samples and files) it was loading.

    Args:
        cfg: the configuration.
        resume: continue from ``<output_dir>/checkpoint.pt`` (exactly: same batches, same
            augmentations, same weights as an uninterrupted run), or from the previous checkpoint
            ``checkpoint.prev.pt`` when that one is missing or damaged (with a warning). A
            directory without any run file starts fresh; one that holds a run but no loadable
            checkpoint is refused and left as it is, unless ``overwrite`` is given too.
        overwrite: start fresh even though the directory holds a run (it is replaced); with
            ``resume``, only when there is no loadable checkpoint to resume.
        on_step: called on rank 0 as ``on_step(step, model, loss)`` after each step and its
            checkpoint, e.g. for custom monitoring.

    Raises:
        FileExistsError: the directory holds a checkpoint and neither ``resume`` nor ``overwrite``.
        FileNotFoundError, ValueError: ``resume`` without ``overwrite`` on a run without a
            loadable checkpoint (the files are named and left unchanged).
        ValueError: inconsistent settings (batch size vs. data set and world size; a resumed
            config that differs from the checkpoint's in keys that change the result; a
            checkpoint past the end of the schedule; a malformed ``metrics.jsonl`` line).
        NonFiniteLossError: the loss became NaN or infinite.
        OSError: the output directory is unusable.
    """
    ctx = init_distributed(cfg.device)
    try:
        run = start_run(cfg, ctx, resume=resume, overwrite=overwrite)
        return _train(run, on_step)
    finally:
        cleanup_distributed(ctx)


def _train(run: TrainingRun, on_step: StepCallback | None) -> FitResult:
    """The epoch loop: train, evaluate when due, checkpoint; stop early on Ctrl-C."""
    cfg, ctx = run.cfg, run.ctx
    history: list[float] = []
    interrupted = False
    results = None
    with StopRequest() as stop:
        reporter = EpochReporter(
            progress=cfg.progress,
            is_main=ctx.is_main,
            num_epochs=run.num_epochs,
            steps_per_epoch=run.steps_per_epoch,
            total_steps=run.total_steps,
            start_step=run.step,
            batch_size=cfg.batch_size,
        )
        try:
            while run.step < run.total_steps:
                epoch = run.step // run.steps_per_epoch
                interrupted = _train_epoch(run, epoch, stop, history, on_step, reporter)
                if interrupted:
                    break
                reporter.end_epoch(epoch, run.step, float(run.schedule[run.step - 1]))
                completed = run.step // run.steps_per_epoch if run.step % run.steps_per_epoch == 0 else epoch + 1
                final = run.step >= run.total_steps
                if (final and cfg.eval_every >= 0) or (cfg.eval_every > 0 and completed % cfg.eval_every == 0):
                    outcome = _evaluate(run, completed, final)
                    results = outcome if final else results
                run.save_checkpoint()
                if not final and stop.agreed(ctx.device):
                    interrupted = True
                    break
        finally:
            reporter.close()
    if interrupted and ctx.is_main:
        print(
            f"interrupted at step {run.step}; checkpoint written to {run.checkpoint_path}; continue with --resume",
            file=sys.stderr,
        )
    return FitResult(
        run.run_dir,
        run.step,
        run.step // run.steps_per_epoch,
        interrupted=interrupted,
        results=results,
        history=history,
        model=run.model,
    )


def _train_epoch(
    run: TrainingRun,
    epoch: int,
    stop: StopRequest,
    history: list[float],
    on_step: StepCallback | None,
    reporter: EpochReporter,
) -> bool:
    """Train the rest of ``epoch`` from ``run.step``; True when stopped by Ctrl-C (after a checkpoint)."""
    cfg, ctx = run.cfg, run.ctx
    first = run.step - epoch * run.steps_per_epoch
    last = min(run.steps_per_epoch, run.total_steps - epoch * run.steps_per_epoch)
    batches, loader = _epoch_loader(run, epoch, first, last)
    run.net.train()
    bar = reporter.step_bar(epoch, first, last)
    throughput = _Throughput(cfg.batch_size)
    iterator = iter(loader)
    try:
        for images, labels, _ in iterator:
            loss = _train_batch(run, images, labels, epoch)
            history.append(loss)
            reporter.record_step(loss)
            throughput.steps += 1
            bar.update(1)
            end_of_epoch = run.step % run.steps_per_epoch == 0 or run.step == run.total_steps
            if ctx.is_main and (run.step % cfg.log_every == 0 or end_of_epoch):
                bar.set_postfix(_log_train_step(run, loss, throughput.images_per_s()))
                throughput.reset()
            saved = bool(cfg.checkpoint_every) and run.step % cfg.checkpoint_every == 0 and not end_of_epoch
            if saved:
                run.save_checkpoint()
            if on_step is not None and ctx.is_main:
                on_step(run.step, run.model, loss)
            if not end_of_epoch and stop.agreed(ctx.device):
                if not saved:
                    run.save_checkpoint()
                return True
    except RuntimeError as error:
        # Raised by next(iterator), or by the SIGCHLD handler anywhere inside a step.
        if "DataLoader worker" not in str(error):
            raise
        lost = describe_lost_batch(iterator, batches, run.train_set, first)
        raise RuntimeError(f"{str(error).rstrip(' .')}; {lost}") from error
    finally:
        bar.close()
    return False


def _epoch_loader(
    run: TrainingRun, epoch: int, first: int, last: int
) -> tuple[list[list[tuple[int, int]]], DataLoader]:
    """The ``(epoch, index)`` keys of batches ``first`` to ``last - 1`` of ``epoch``, and their loader."""
    run.sampler.set_epoch(epoch)
    batches = [[(epoch, i) for i in batch] for batch in list(run.sampler)[first:last]]
    seeded = SeededViews(run.train_set, run.cfg.seed)
    # The loader draws a base seed each time it is iterated. From the global generator that
    # is one extra draw per resume inside an epoch, after which the global stream (dropout,
    # stochastic depth) of a resumed run differs from an uninterrupted run's.
    loader = DataLoader(
        seeded,
        batch_sampler=batches,
        num_workers=run.cfg.num_workers,
        pin_memory=run.ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(seeded.item_seed(epoch, len(seeded))),
    )
    return batches, loader


def _train_batch(run: TrainingRun, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> float:
    """One step at ``run.step``'s learning rate, then ``run.step += 1``; returns the loss."""
    device, cfg = run.ctx.device, run.cfg
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    for group in run.optimizer.param_groups:
        group["lr"] = float(run.schedule[run.step])
    try:
        loss, _, _ = train_step(
            run.net,
            run.objective,
            images,
            labels,
            run.optimizer,
            scaler=run.scaler,
            precision=cfg.precision,
            channels_last=cfg.channels_last,
            grad_clip=cfg.grad_clip,
            step=run.step + 1,
        )
    except NonFiniteLossError as error:
        where = f"{run.checkpoint_path} (step {run.last_saved})" if run.last_saved is not None else "none"
        raise NonFiniteLossError(
            f"{error} (epoch {epoch + 1}, batch {run.step - epoch * run.steps_per_epoch + 1}); nothing was "
            f"saved. Last good checkpoint: {where}. Lower the lr, enable grad_clip or use fp32.",
            error.step,
        ) from None
    run.step += 1
    return loss


def _log_train_step(run: TrainingRun, loss: float, images_per_s: float) -> dict[str, str]:
    """Append the step's ``"train"`` record to ``metrics.jsonl``; returns the progress bar's postfix.

    ``loss_levels`` holds the step's per-level terms when the loss table says the loss has them
    (:attr:`hcl.losses.LossSpec.level_terms`), else nothing.

    Raises:
        AttributeError: the table says the loss has per-level terms but its module never set
            ``last_level_terms``.
    """
    level_terms: list[float] = []
    spec = run.cfg.loss_spec
    if spec.level_terms:
        module = run.objective.loss if isinstance(run.objective, CUDAGraphLoss) else run.objective
        if not hasattr(module, "last_level_terms"):
            raise AttributeError(
                f"loss {spec.name!r} is registered with level_terms=True, but its module "
                f"{type(module).__name__} never set last_level_terms; set it in every call or register "
                "the loss with level_terms=False"
            )
        terms = run.objective.last_level_terms  # this step's, from its own loss pass; None: no split
        level_terms = [] if terms is None else terms.tolist()
    record = {
        "kind": "train",
        "step": run.step,
        "epoch": run.step / run.steps_per_epoch,
        "loss": loss,
        "loss_levels": level_terms,
        "lr": float(run.schedule[run.step - 1]),
        "images_per_s": images_per_s,
    }
    rundir.append_metrics(run.run_dir, record)
    postfix = {"loss": f"{loss:.4f}", "img/s": f"{images_per_s:.0f}"}
    postfix.update({f"L{i}": f"{v:.3f}" for i, v in enumerate(level_terms)})
    return postfix


def _evaluate(run: TrainingRun, epoch: int, final: bool) -> dict[str, Any] | None:
    """Evaluate on rank 0 and log an ``"eval"`` record; the final one is :func:`evaluate_run`'s, returned."""
    cfg, model = run.cfg, run.model
    result = None
    if run.ctx.is_main:
        if final:
            result = evaluate_run(run.run_dir, cfg=cfg, model=model, device=run.ctx.device, progress=cfg.progress)
            result["step"] = run.step
            rundir.write_results(run.run_dir, result)
            metrics = {"retrieval": result["retrieval"], "cpcc": result["cpcc"]}
        else:
            eval_set = build_split(cfg, cfg.eval_split)
            query_set = build_split(cfg, cfg.eval_query_split) if cfg.eval_query_split else None
            metrics = evaluate_model(model, eval_set, cfg, device=run.ctx.device, query_set=query_set)
        rundir.append_metrics(run.run_dir, {"kind": "eval", "epoch": epoch, "step": run.step, **metrics})
        model.train()
    if is_distributed():
        dist.barrier()
    return result


class _Throughput:
    """Images per second over the steps since the last training log line."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def images_per_s(self) -> float:
        return self.steps * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
