"""CIFAR-100 (Krizhevsky 2009) with its 20 superclasses, from the official python pickles.

Expected layout: ``root/cifar-100-python/{train,test,meta}`` (the unpacked
``cifar-100-python.tar.gz``), or ``root`` being that folder itself. Each split pickle holds
``data`` (N x 3072 uint8, channel-major), ``fine_labels`` and ``coarse_labels``; ``meta`` holds
``fine_label_names`` and ``coarse_label_names``. The pickles are read with an unpickler that only
admits plain containers and numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hcl.data.base import HierarchicalDataset, encode_paths
from hcl.data.files import check_split, default_data_dir, find_first, official_files
from hcl.hierarchy import Hierarchy

__all__ = ["CIFAR100", "load_cifar_pickle"]

_OFFICIAL_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Protocol-2 pickles written by Python 3 rebuild bytes objects through these.
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
}


class CIFAR100(HierarchicalDataset):
    """CIFAR-100, 32x32 RGB, labelled superclass > class.

    The hierarchy holds every (superclass, class) pair that occurs in the split (all 100 classes
    in the official files), with names from ``meta``. A class filed under two superclasses is an
    error.

    Args:
        root: directory holding ``cifar-100-python/``, or that folder (default
            :func:`hcl.data.files.default_data_dir`: ``$HCL_DATA_DIR``, the repository's ``data/`` or
            ``./data``).
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        transform: applied to each PIL image (see :class:`hcl.data.base.HierarchicalDataset`).
        target_transform: applied to each label row.
        download: accepted for torchvision's sake; nothing is fetched, a missing file says where
            to put the official ones.
        subset: keep a seeded, class-stratified subset of this size.
        unseen_classes: class or superclass names held out of the training split.
        levels: keep only the first k levels.

    Raises:
        FileNotFoundError: a pickle is missing (the message names the paths tried and the
            official archive).
        ValueError: a malformed pickle, label lists that disagree with the image count, or label
            ids without a name in ``meta``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        download: bool = False,
        subset: int | None = None,
        unseen_classes: Sequence[str] | None = None,
        levels: int | None = None,
    ) -> None:
        super().__init__(
            transform=transform,
            target_transform=target_transform,
            channels=3,
            image_size=32,
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
        )
        check_split(split, ("train", "test"), "CIFAR-100")
        self.root = Path(root) if root is not None else default_data_dir()
        folders = (self.root / "cifar-100-python", self.root)
        where = (
            f"unpack the official cifar-100-python.tar.gz ({_OFFICIAL_SOURCE}) in {self.root}, "
            f"giving {folders[0]}/train, test and meta"
        )
        with official_files("CIFAR-100", where, download=download):
            data_path = find_first((f / split for f in folders), f"CIFAR-100 pickle {split!r}")
            meta_path = find_first((data_path.parent / "meta",), "CIFAR-100 pickle 'meta'")
        batch = load_cifar_pickle(data_path)
        meta = load_cifar_pickle(meta_path)
        fine_names = _names(meta, "fine_label_names", meta_path)
        coarse_names = _names(meta, "coarse_label_names", meta_path)
        images = np.asarray(_field(batch, "data", data_path))
        fine = np.asarray(_field(batch, "fine_labels", data_path), dtype=np.int64).reshape(-1)
        coarse = np.asarray(_field(batch, "coarse_labels", data_path), dtype=np.int64).reshape(-1)
        if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{data_path}: 'data' must be uint8 of shape (N, 3072), got {images.dtype} {images.shape}")
        if not len(fine) == len(coarse) == len(images):
            raise ValueError(f"{data_path}: {len(images)} images but {len(fine)} fine and {len(coarse)} coarse labels")
        if len(images) == 0:
            raise ValueError(f"split {split!r} in {data_path} has no images")
        _check_ids(fine, len(fine_names), "fine_labels", data_path, meta_path)
        _check_ids(coarse, len(coarse_names), "coarse_labels", data_path, meta_path)
        parent: dict[int, int] = {}
        for f, c in zip(fine.tolist(), coarse.tolist()):
            if parent.setdefault(f, c) != c:
                raise ValueError(
                    f"{data_path}: class {fine_names[f]!r} appears under two superclasses, "
                    f"{coarse_names[parent[f]]!r} and {coarse_names[c]!r}"
                )
        hierarchy = Hierarchy.from_paths(
            [(coarse_names[c], fine_names[f]) for f, c in sorted(parent.items())],
            level_names=("superclass", "class"),
        )
        self._images = images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        paths = [(coarse_names[c], fine_names[f]) for f, c in zip(fine.tolist(), coarse.tolist())]
        self._select(
            hierarchy,
            encode_paths(hierarchy, paths),
            split=split,
            source=str(data_path),
            subset=subset,
            unseen_classes=unseen_classes,
            levels=levels,
        )

    def _load_image(self, row: int, index: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._images[row]))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def load_cifar_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a CIFAR python pickle (written by Python 2 or 3) with ``str`` keys."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            data = _RestrictedUnpickler(f, encoding="bytes").load()
        except Exception as err:  # damaged bytes make the unpickler raise almost anything; name the file
            raise ValueError(f"{path}: not a readable CIFAR pickle ({err})") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a CIFAR pickle holds a dict, got {type(data).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in data.items()}


def _field(data: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise ValueError(f"{path}: missing the {key!r} entry (has {sorted(data)})")
    return data[key]


def _names(meta: Mapping[str, Any], key: str, path: Path) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in _field(meta, key, path)]


def _check_ids(ids: np.ndarray, count: int, key: str, data_path: Path, meta_path: Path) -> None:
    bad = (ids < 0) | (ids >= count)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{data_path}: {key}[{i}] = {int(ids[i])} has no name in {meta_path} ({count} names)")
