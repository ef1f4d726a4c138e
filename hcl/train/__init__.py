"""Training: the config, ``fit`` (a run directory) and ``train`` (a loader), evaluation, checkpoints, DDP helpers."""

from hcl.rundir import save_embeddings
from hcl.train.build import SeededViews, build_model, build_split, make_optimizer
from hcl.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from hcl.train.config import LOSS_DISPLAY_NAMES, LOSSES, TrainConfig, apply_overrides, load_config, save_config
from hcl.train.distributed import all_gather_no_grad, all_gather_with_grad, init_distributed, resolve_device
from hcl.train.evaluate import EMBEDDINGS, embed_dataset, evaluate_embeddings, evaluate_model, evaluate_run, load_run
from hcl.train.loop import FitResult, fit
from hcl.train.objectives import build_objective
from hcl.train.schedule import warmup_cosine
from hcl.train.step import NonFiniteLossError, train, train_step

__all__ = [
    "EMBEDDINGS",
    "LOSSES",
    "LOSS_DISPLAY_NAMES",
    "FitResult",
    "NonFiniteLossError",
    "SeededViews",
    "TrainConfig",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "apply_overrides",
    "build_model",
    "build_objective",
    "build_split",
    "capture_rng_state",
    "embed_dataset",
    "evaluate_embeddings",
    "evaluate_model",
    "evaluate_run",
    "fit",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "load_run",
    "make_optimizer",
    "resolve_device",
    "restore_rng_state",
    "save_checkpoint",
    "save_config",
    "save_embeddings",
    "train",
    "train_step",
    "warmup_cosine",
]
