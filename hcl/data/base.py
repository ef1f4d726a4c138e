"""The common shape of every hcl data set, and the options they all share.

A data set is a ``torch.utils.data.Dataset`` whose samples are ``(x, labels[i])``. Besides the
images it exposes, without decoding any image:

* ``hierarchy``: the :class:`hcl.Hierarchy` the labels are encoded in,
* ``labels``: the (N, L) int64 label rows of all its samples (the sampler and the evaluation read
  them directly),
* ``channels`` (1 or 3), ``image_size`` (native side length), ``mean`` / ``std`` (per-channel
  normalisation constants), ``paths`` (image files, or None for in-memory data sets), and
  ``unseen_mask`` (which samples belong to held-out classes).

torchvision's conventions hold, adapted to several levels: ``classes`` is one list of names per
level, coarse to fine (``classes[l][i]`` names id ``i`` of column ``l``; ``classes[-1]`` holds
torchvision's names in the hierarchy's order, so its ids differ from torchvision's: map by name),
``class_to_idx`` maps the finest level's names to their ids, ``targets`` is
``labels`` (rows, not ints), ``transform`` takes the image and ``target_transform`` the label row.
``download=True`` is accepted but fetches nothing: hcl reads local files only (DeepFashion is
licensed per user, Fashion-MNIST ships as a Debian package). A missing file raises a
FileNotFoundError naming the official files and the folder to put them in; with ``download=True``
the message first says that nothing was fetched.

Shared options, applied in this order: ``unseen_classes`` (hold classes out of the training
split), ``levels`` (keep the first k levels), ``subset`` (a seeded, class-stratified subset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hcl.hierarchy import Hierarchy
from hcl.labels import prefix_ids

__all__ = ["HierarchicalDataset", "encode_paths", "image_to_tensor", "truncate_hierarchy"]


class HierarchicalDataset(Dataset):
    """Base class: label bookkeeping, shared options and ``__getitem__``; subclasses decode images.

    A subclass parses its files into the label rows of every stored sample (``raw_labels``) and
    implements :meth:`_load_image` for a stored sample, then calls :meth:`_select`. Stored rows
    and data set indices differ once an option drops samples; errors name the index.

    Args:
        transform: applied to the PIL image; ``None`` returns the image as a float tensor
            (C, H, W) in [0, 1]. With :class:`hcl.data.MultiViewTransform`, x is (V, C, H, W).
        target_transform: applied to the sample's label row, an (L,) int64 tensor (e.g.
            ``lambda row: row[-1]`` for torchvision-style finest-level ints); ``None`` keeps the row.
        channels: 1 (grey) or 3 (RGB).
        image_size: native side length of the images.
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
    """

    def __init__(
        self,
        *,
        transform: Callable[[Image.Image], Any] | None,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {tuple(mean)} and {tuple(std)}")
        self.transform = transform
        self.target_transform = target_transform
        self.channels = channels
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.hierarchy: Hierarchy
        self.labels: torch.Tensor
        self.paths: list[str] | None = None
        self.unseen_mask: torch.Tensor
        self._rows = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ set-up for subclasses
    def _select(
        self,
        hierarchy: Hierarchy,
        raw_labels: torch.Tensor,
        *,
        split: str,
        source: str,
        raw_paths: Sequence[str] | None = None,
        subset: int | None = None,
        unseen_classes: Sequence[str] | None = None,
        levels: int | None = None,
        subset_seed: int = 0,
    ) -> None:
        """Apply the shared options and set ``hierarchy``, ``labels``, ``paths``, ``unseen_mask``.

        Args:
            hierarchy: the full hierarchy of the data set.
            raw_labels: label rows of every stored sample of this split, in ``hierarchy``.
            split: the split name (``unseen_classes`` removes samples only from ``"train"``).
            source: where the data came from, for error messages.
            raw_paths: one file path per stored sample, if the data set has files.
            subset: keep this many samples, stratified by finest label and seeded.
            unseen_classes: node names (at any level) whose samples are held out of training.
            levels: keep only the first ``levels`` levels of the hierarchy.
            subset_seed: seed of the subset draw.

        Shape:
            raw_labels: (N_raw, L) int64.
        """
        if raw_labels.shape[0] == 0:
            raise ValueError(f"split {split!r} of {source} has no samples")
        unseen = _unseen_mask(hierarchy, raw_labels, unseen_classes)
        rows = np.arange(raw_labels.shape[0])
        if split == "train" and unseen_classes:
            rows = rows[~unseen.numpy()]
            if len(rows) == 0:
                raise ValueError(f"unseen_classes {list(unseen_classes)} remove every sample of split {split!r}")
        labels = raw_labels[rows]
        if levels is not None:
            if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= hierarchy.num_levels:
                raise ValueError(f"levels must be an int in 1..{hierarchy.num_levels}, got {levels!r}")
            if levels < hierarchy.num_levels:
                hierarchy, labels = truncate_hierarchy(hierarchy, labels, levels)
        if subset is not None:
            keep = _stratified_subset(labels, subset, subset_seed)
            rows, labels = rows[keep], labels[keep]
        self.hierarchy = hierarchy
        self.labels = labels.contiguous()
        self.unseen_mask = unseen[rows]
        self.paths = [raw_paths[r] for r in rows] if raw_paths is not None else None
        self._rows = rows

    def _load_image(self, row: int, index: int) -> Image.Image:
        """Decode stored sample ``row`` (an index into the raw data), sample ``index`` of this data set.

        Errors report ``index``, the number the caller passed, not ``row``.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ torchvision's names
    @property
    def classes(self) -> list[list[str]]:
        """The node names of every level, coarse to fine: ``classes[l][i]`` names id ``i`` of column ``l``."""
        return [self.hierarchy.nodes(level) for level in range(self.hierarchy.num_levels)]

    @property
    def class_to_idx(self) -> dict[str, int]:
        """The finest level's names -> ids, torchvision's flat map (``labels[:, -1]`` holds these
        ids, and -1 for a sample whose path stops above the finest level)."""
        finest = self.hierarchy.num_levels - 1
        return {name: i for i, name in enumerate(self.hierarchy.nodes(finest))}

    @property
    def targets(self) -> torch.Tensor:
        """``labels`` under torchvision's name: the (N, L) int64 label rows, not one int per sample."""
        return self.labels

    # ------------------------------------------------------------------ the Dataset interface
    def __len__(self) -> int:
        return len(self._rows)

    def get_image(self, index: int) -> Image.Image:
        """The untransformed image of sample ``index`` (e.g. for thumbnails)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)} samples")
        return self._load_image(int(self._rows[index]), int(index))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = self.get_image(index)
        x = self.transform(image) if self.transform is not None else image_to_tensor(image, self.channels)
        y = self.labels[index]
        return x, self.target_transform(y) if self.target_transform is not None else y

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, {self.hierarchy!r}, image_size={self.image_size})"


def image_to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """A PIL image as a float tensor in [0, 1], converted to ``channels`` channels.

    Shape:
        Returns (channels, H, W) float32.
    """
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).float().div_(255.0)


def encode_paths(hierarchy: Hierarchy, paths: Sequence[Sequence[str]]) -> torch.Tensor:
    """:meth:`Hierarchy.encode` for many samples, encoding each distinct path once.

    Shape:
        Returns (len(paths), L) int64.
    """
    keys = [tuple(p) for p in paths]
    distinct = sorted(set(keys))
    table = hierarchy.encode(distinct).reshape(-1, hierarchy.num_levels)
    position = {p: i for i, p in enumerate(distinct)}
    return table[torch.tensor([position[p] for p in keys], dtype=torch.int64)]


def truncate_hierarchy(hierarchy: Hierarchy, labels: torch.Tensor, levels: int) -> tuple[Hierarchy, torch.Tensor]:
    """Keep the first ``levels`` levels: the hierarchy cut below them, and the labels re-encoded.

    Shape:
        labels: (N, L) int64 in ``hierarchy``. Returns the new hierarchy and (N, levels) int64.
    """
    paths = []
    for level in range(levels):
        for node in range(hierarchy.num_nodes(level)):
            if level == levels - 1 or not hierarchy.children(level, node):
                paths.append(hierarchy.path(level, node))
    cut = Hierarchy.from_paths(paths, level_names=hierarchy.level_names[:levels])
    unique, inverse = torch.unique(labels[:, :levels], dim=0, return_inverse=True)
    encoded = cut.encode(_row_path(hierarchy, row) for row in unique.tolist())
    return cut, encoded[inverse]


def _row_path(hierarchy: Hierarchy, row: Sequence[int]) -> tuple[str, ...]:
    known = [i for i in row if i >= 0]
    return hierarchy.path(len(known) - 1, known[-1]) if known else ()


def _unseen_mask(hierarchy: Hierarchy, labels: torch.Tensor, names: Sequence[str] | None) -> torch.Tensor:
    """True for samples under any of the named nodes (looked up at every level)."""
    mask = torch.zeros(labels.shape[0], dtype=torch.bool)
    if not names:
        return mask
    if isinstance(names, str):
        raise TypeError(f"unseen_classes must be a list of class names, got the string {names!r}")
    for name in names:
        found = False
        for level in range(hierarchy.num_levels):
            if str(name) in hierarchy.nodes(level):
                mask |= labels[:, level] == hierarchy.index(level, str(name))
                found = True
        if not found:
            raise ValueError(f"unseen class {name!r} is not a node of the hierarchy {hierarchy!r}")
    return mask


def _stratified_subset(labels: torch.Tensor, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset whose finest-label proportions follow the full set.

    Each finest label gets ``floor(size * share)`` samples, the remainder going to the labels
    with the largest fractional parts (ties broken by label order), so the draw is deterministic.
    """
    n = labels.shape[0]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= n:
        raise ValueError(f"subset must be an int in 1..{n} (the samples available), got {size!r}")
    prefix = prefix_ids(labels).numpy()
    depth = (prefix >= 0).sum(axis=1)
    leaf = np.where(depth > 0, np.take_along_axis(prefix, np.maximum(depth - 1, 0)[:, None], axis=1)[:, 0], -1)
    stratum = np.unique(np.stack([depth, leaf], axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    counts = np.bincount(stratum)
    exact = size * counts / n
    quota = np.floor(exact).astype(np.int64)
    remainder = size - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:remainder]] += 1
    rng = np.random.default_rng(seed)
    order = np.argsort(stratum + rng.random(n), kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(n) - starts[stratum[order]]
    return np.sort(order[rank < quota[stratum[order]]])
