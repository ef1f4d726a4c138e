"""``build_dataset``: one entry point for every data set, by name."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from PIL import Image

from hcl.data.base import HierarchicalDataset
from hcl.data.cifar import CIFAR100
from hcl.data.deepfashion import DeepFashionInShop
from hcl.data.fashion_mnist import FashionMNIST
from hcl.data.folder import HierarchicalImageFolder
from hcl.data.synthetic import SyntheticHierarchy

__all__ = ["DATASETS", "build_dataset", "dataset_options"]

DATASETS: dict[str, type[HierarchicalDataset]] = {
    "fashion_mnist": FashionMNIST,
    "synthetic": SyntheticHierarchy,
    "deepfashion": DeepFashionInShop,
    "cifar100": CIFAR100,
    "image_folder": HierarchicalImageFolder,
}


def build_dataset(
    name: str,
    *,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    transform: Callable[[Image.Image], Any] | None = None,
    **options: Any,
) -> HierarchicalDataset:
    """Construct a data set by name.

    Args:
        name: one of ``"fashion_mnist"``, ``"synthetic"``, ``"deepfashion"``, ``"cifar100"``,
            ``"image_folder"``.
        split: ``"train"`` or ``"test"`` (DeepFashion also ``"query"`` and ``"gallery"``).
        root: where the files are (each data set has a default; ``image_folder`` needs one).
        transform: applied to each PIL image.
        **options: passed to the data set's constructor (:func:`dataset_options` lists them),
            e.g. ``subset`` (a seeded, class-stratified subset size), ``unseen_classes`` (class
            names held out of training), ``levels`` (keep the first k levels) or
            ``target_transform`` (applied to each label row).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: an option the data set does not take (named, with the ones it takes).
        FileNotFoundError: missing files (the message names the path and the official files).
    """
    unknown = sorted(set(options) - set(dataset_options(name)))
    if unknown:
        raise TypeError(
            f"data set {name!r} takes no option {', '.join(map(repr, unknown))}; "
            f"its options are {', '.join(dataset_options(name))}"
        )
    return DATASETS[name](root, split, transform, **options)


def dataset_options(name: str) -> tuple[str, ...]:
    """The options :func:`build_dataset` passes on to data set ``name``: the keyword-only
    arguments of its class, in signature order.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    parameters = inspect.signature(DATASETS[name]).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
