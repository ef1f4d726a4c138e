"""Fashion-MNIST (Xiao et al. 2017) with the 3-level hierarchy of Seo & Shin (2019).

The images are the official IDX files. By default they are read from Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist/``); any directory holding
``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` works too, including torchvision's layout
(``<root>/FashionMNIST/raw/``). The hierarchy ships as package data,
``hcl/data/fashion_mnist_hierarchy.json``::

    clothes: tops (T-shirt/top, Pullover, Shirt), bottoms (Trouser), dresses (Dress), outers (Coat)
    goods:   accessories (Bag), shoes (Sandal, Sneaker, Ankle boot)
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hcl.data.base import HierarchicalDataset
from hcl.data.files import check_split, find_first, official_files, read_maybe_gzip
from hcl.hierarchy import Hierarchy

__all__ = ["DEFAULT_FASHION_MNIST_ROOT", "FASHION_MNIST_CLASSES", "FashionMNIST", "read_idx", "read_idx_header"]

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
# Package data next to this module, so installed wheels carry it (see pyproject.toml).
HIERARCHY_FILE = Path(__file__).with_name("fashion_mnist_hierarchy.json")
# The class of each IDX label value 0..9, as documented with the data set.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILE_STEM = {"train": "train", "test": "t10k"}
_OFFICIAL_FILES = "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz"
_OFFICIAL_SOURCE = "https://github.com/zalandoresearch/fashion-mnist, folder data/fashion"
_IDX_UBYTE = 0x08


class FashionMNIST(HierarchicalDataset):
    """Fashion-MNIST, 28x28 grey images, labelled group > category > class.

    Args:
        root: directory with the IDX files (default: Debian's ``/usr/share/datasets/fashion-mnist``).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        transform: applied to each PIL image (see :class:`hcl.data.base.HierarchicalDataset`).
        target_transform: applied to each label row.
        download: accepted for torchvision's sake; nothing is fetched, a missing file says where
            to put the official ones.
        subset: keep a seeded, class-stratified subset of this size.
        unseen_classes: class names held out of the training split (e.g. ``["Sneaker"]``).
        levels: keep only the first k levels.
        hierarchy_file: a hierarchy JSON replacing the shipped one (its finest level must name
            the ten classes).

    Raises:
        FileNotFoundError: the IDX files are not in ``root`` (the message lists the paths tried
            and the official files).
        ValueError: a malformed IDX file, or image and label files that disagree in length.
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
        hierarchy_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            transform=transform,
            target_transform=target_transform,
            channels=1,
            image_size=28,
            mean=(0.2860,),
            std=(0.3530,),
        )
        check_split(split, tuple(_FILE_STEM), "Fashion-MNIST")
        self.root = Path(root) if root is not None else DEFAULT_FASHION_MNIST_ROOT
        where = (
            f"put the official {_OFFICIAL_FILES} ({_OFFICIAL_SOURCE}) in {self.root}, "
            "or install Debian's dataset-fashion-mnist package and leave root unset"
        )
        with official_files("Fashion-MNIST", where, download=download):
            images_path = _locate(self.root, f"{_FILE_STEM[split]}-images-idx3-ubyte")
            labels_path = _locate(self.root, f"{_FILE_STEM[split]}-labels-idx1-ubyte")
        raw = read_idx(labels_path)
        # Images are decoded on first use: the labels alone (sampler, evaluation) need no pixels.
        image_dims = read_idx_header(images_path)
        if len(image_dims) != 3 or raw.ndim != 1:
            raise ValueError(
                f"expected 3-d images in {images_path} and 1-d labels in {labels_path}, "
                f"got shapes {image_dims} and {raw.shape}"
            )
        if len(raw) != image_dims[0]:
            raise ValueError(f"{labels_path} has {len(raw)} labels but {images_path} has {image_dims[0]} images")
        self._images_path = images_path
        self._image_dims = image_dims
        self._image_array: np.ndarray | None = None
        if raw.size and raw.max() >= len(FASHION_MNIST_CLASSES):
            bad = int(np.flatnonzero(raw >= len(FASHION_MNIST_CLASSES))[0])
            raise ValueError(f"{labels_path}: label {int(raw[bad])} at index {bad} is not a class id 0..9")
        hierarchy = Hierarchy.from_json(hierarchy_file if hierarchy_file is not None else HIERARCHY_FILE)
        table = hierarchy.encode_leaf(FASHION_MNIST_CLASSES)
        self._select(
            hierarchy,
            table[torch.from_numpy(raw.astype(np.int64))],
            split=split,
            source=str(images_path),
            subset=subset,
            unseen_classes=unseen_classes,
            levels=levels,
        )

    @property
    def _images(self) -> np.ndarray:
        """All images of the split, (N, 28, 28) uint8, read from the IDX file on first use."""
        if self._image_array is None:
            images = read_idx(self._images_path)
            if images.shape != self._image_dims:
                raise ValueError(f"{self._images_path} holds {images.shape}, its header said {self._image_dims}")
            self._image_array = images
        return self._image_array

    def _load_image(self, row: int, index: int) -> Image.Image:
        return Image.fromarray(self._images[row])


def _locate(root: Path, stem: str) -> Path:
    folders = (root, root / "FashionMNIST" / "raw", root / "raw")
    return find_first(
        (folder / name for folder in folders for name in (f"{stem}.gz", stem)),
        f"Fashion-MNIST file {stem}[.gz]",
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an unsigned-byte IDX file (LeCun's MNIST format), gzipped or not.

    Shape:
        Returns the array with the dimensions from the file header, dtype uint8.
    """
    path = Path(path)
    data = read_maybe_gzip(path)
    dims = _parse_header(data, path)
    header = 4 + 4 * len(dims)
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise ValueError(f"{path}: header promises {dims} = {expected} bytes, the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_header(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The dimensions an IDX file's header announces, reading only the header."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from err
    return _parse_header(head, path)


def _parse_header(data: bytes, path: Path) -> tuple[int, ...]:
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    if data[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: IDX element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    return tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
