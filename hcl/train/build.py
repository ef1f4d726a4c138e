"""What a config builds: the data set splits, the batches, the model, the optimizer, the autocast.

Training (:mod:`hcl.train.fit`) and evaluation (:mod:`hcl.train.evaluate`) both start here, so
they build the same data and the same model from the same config.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hcl.data import (
    HierarchicalBatchSampler,
    MultiViewTransform,
    build_dataset,
    dataset_options,
    eval_transform,
    supcon_augmentation,
)
from hcl.models import build_encoder
from hcl.train.config import TrainConfig

__all__ = [
    "SeededViews",
    "autocast_context",
    "build_batch_sampler",
    "build_model",
    "build_split",
    "make_optimizer",
]

_RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")
_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_split(cfg: TrainConfig, split: str, *, augment: bool = False, subset: int | None = None) -> Dataset:
    """The data set split of ``cfg`` with the transform training or evaluation needs.

    ``augment=True`` gives ``cfg.views_per_image`` SupCon-augmented views per image (x is (V, C, H, W));
    otherwise the deterministic evaluation transform (x is (C, H, W)). ``cfg.levels`` and
    ``cfg.data_options`` are passed to :func:`hcl.data.build_dataset`, and ``subset`` (default:
    ``cfg.train_subset`` for the training split, ``cfg.eval_subset`` otherwise) as its
    ``subset`` option.

    Raises:
        FileNotFoundError: ``cfg.data_root`` does not exist (named).
        ValueError: an unknown ``cfg.dataset``, or ``cfg.data_options`` holding an option the
            data set does not take (named, with the ones it takes).
    """
    if cfg.data_root is not None and not Path(cfg.data_root).exists():
        raise FileNotFoundError(f"data_root {cfg.data_root!r} does not exist (dataset {cfg.dataset!r})")
    takes = [key for key in dataset_options(cfg.dataset) if key != "target_transform"]  # training needs label rows
    unknown = [key for key in cfg.data_options if key not in takes]
    if unknown:
        raise ValueError(
            f"config key 'data_options' holds {', '.join(map(repr, unknown))}, which dataset {cfg.dataset!r} does "
            f"not take (it takes {', '.join(takes)}); remove it, e.g. --set data_options={{}}"
        )
    options: dict[str, Any] = dict(cfg.data_options)
    if cfg.levels is not None:
        options["levels"] = cfg.levels
    subset_key = None
    if subset is None:
        subset_key = "train_subset" if split == cfg.train_split else "eval_subset"
        subset = getattr(cfg, subset_key)
    if subset is not None:
        options["subset"] = subset
    try:
        dataset = build_dataset(cfg.dataset, split=split, root=cfg.data_root, **options)
    except ValueError as error:
        if subset_key is None or subset is None or not str(error).startswith("subset must be"):
            raise
        raise ValueError(f"config key {subset_key!r}: {error} in the {split!r} split of {cfg.dataset!r}") from error
    size = cfg.image_size or dataset.image_size
    if augment:
        view = supcon_augmentation(size, dataset.channels, dataset.mean, dataset.std)
        dataset.transform = MultiViewTransform(view, num_views=cfg.views_per_image)
    else:
        dataset.transform = eval_transform(size, dataset.channels, dataset.mean, dataset.std)
    return dataset


def build_batch_sampler(
    cfg: TrainConfig, labels: torch.Tensor, *, world_size: int = 1, rank: int = 0, keep: Any = None
) -> Any:
    """The training batches of one rank: ``cfg.sampler`` "hierarchical" or plain shuffled ones.

    Both shard each global batch of ``cfg.batch_size`` samples across ``world_size`` ranks, take
    ``set_epoch(epoch)`` and yield lists of sample indices, a pure function of (seed, epoch).
    With ``keep`` (e.g. :func:`hcl.metrics.seen_training_indices` for held-out classes), the
    batches are drawn from ``labels[keep]`` only and still yield indices into ``labels``.

    Shape:
        labels: (N, L) int64, the training split's labels; keep: (N_kept,) int64 indices.

    Raises:
        ValueError: ``cfg.batch_size`` is not divisible by ``world_size`` or exceeds the data set.
    """
    if keep is not None:
        keep = np.asarray(keep, dtype=np.int64)
        return _KeptBatches(
            build_batch_sampler(cfg, labels[torch.from_numpy(keep)], world_size=world_size, rank=rank), keep
        )
    if world_size > 1 and cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world_size} processes")
    per_rank = cfg.batch_size // world_size
    if cfg.sampler == "hierarchical":
        sampler: Any = HierarchicalBatchSampler(
            labels, per_rank, seed=cfg.seed, drop_last=True, num_replicas=world_size, rank=rank
        )
    else:
        sampler = _RandomBatches(len(labels), per_rank, seed=cfg.seed, num_replicas=world_size, rank=rank)
    if len(sampler) == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(labels)} training samples; lower it")
    return sampler


class _KeptBatches:
    """Batches of a sampler over a selection of the samples, as indices into all of them."""

    def __init__(self, sampler: Any, keep: np.ndarray) -> None:
        self.sampler, self.keep = sampler, keep

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            yield self.keep[batch].tolist()


class _RandomBatches:
    """Plain shuffled batches with the same interface and sharding as HierarchicalBatchSampler."""

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, num_replicas: int, rank: int) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // (self.batch_size * self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        blocks = order[: len(self) * self.batch_size * self.num_replicas]
        yield from blocks.reshape(len(self), self.num_replicas, self.batch_size)[:, self.rank, :].tolist()


class SeededViews(Dataset):
    """A dataset whose random augmentation is a pure function of (seed, epoch, index).

    Items are requested as ``(epoch, index)`` keys and returned as ``(x, labels, index)``. Each
    item runs the wrapped dataset's ``__getitem__`` under torch's CPU generator and Python's seeded
    from ``(seed, epoch, index)`` and restores their previous states afterwards, so the result
    does not depend on which worker process loads it or in which order.

    Args:
        dataset: a map-style dataset returning ``(x, labels)``.
        seed: the run's seed.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def item_seed(self, epoch: int, index: int) -> int:
        """The 63-bit seed of one item's augmentation."""
        state = np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
        return (int(state[0]) << 31) ^ int(state[1])

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, Any, int]:
        epoch, index = key
        seed = self.item_seed(epoch, index)
        python_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only, the one fork_rng restores: torch.manual_seed would also
            # queue a seed for every accelerator's generator, recording a Python stack trace
            # each time (a third of the data loading's time on CPU), and reseed a GPU's
            # stream in the training process.
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            try:
                x, labels = self.dataset[index]
            finally:
                random.setstate(python_state)
        return x, labels, index


def build_model(cfg: TrainConfig, *, in_channels: int, image_size: int, num_classes: int | None = None) -> nn.Module:
    """The :class:`hcl.models.Encoder` that ``cfg`` describes, with random weights.

    ``small_images=None`` in the config selects the small-image stem for ResNet-family backbones
    at 64 px or less.
    """
    small = cfg.small_images
    if small is None:
        small = image_size <= 64 and cfg.backbone.startswith(_RESNET_PREFIXES)
    return build_encoder(
        cfg.backbone,
        in_channels=in_channels,
        small_images=bool(small) and cfg.backbone != "compact_cnn",
        width=cfg.width,
        head_hidden_dim=cfg.head_hidden_dim,
        embedding_dim=cfg.embedding_dim,
        num_classes=num_classes if cfg.needs_classifier else None,
        head_norm=cfg.head_norm,
        output_features=cfg.loss_spec.output == "features_and_logits",
    )


def make_optimizer(
    model: nn.Module, name: str, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW (``momentum`` is its beta1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


def autocast_context(device: torch.device, precision: str) -> Any:
    """``torch.autocast`` for bf16/fp16 on ``device``; a no-op context for fp32."""
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    dtype = _PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
