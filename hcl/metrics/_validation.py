"""Input checks shared by the metrics: embeddings, label/embedding pairs and ``ks``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from hcl.labels import as_label_tensor


def as_embeddings(
    embeddings: Any,
    name: str = "embeddings",
    *,
    device: torch.device | str | None = None,
    normalize: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Validate a float (N, D) array or tensor and return it as ``dtype``, optionally L2-normalised.

    Raises:
        TypeError: not a real floating-point (or integer) array.
        ValueError: not 2-D, empty, non-finite values, or (with ``normalize``) a zero row.

    Shape:
        embeddings: (N, D). Returns (N, D).
    """
    if isinstance(embeddings, torch.Tensor):
        tensor = embeddings.detach()
    else:
        array = np.asarray(embeddings)
        if array.dtype == object or array.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a float array, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must be a real float tensor, got dtype {tensor.dtype}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tensor.shape)}")
    tensor = tensor.to(device=device if device is not None else tensor.device, dtype=dtype)
    finite = torch.isfinite(tensor).all(dim=1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        raise ValueError(f"{name} has a NaN or infinite value in row {row}")
    if normalize:
        norms = torch.linalg.vector_norm(tensor, dim=1)
        if not bool((norms > 0).all()):
            row = int((norms <= 0).nonzero()[0])
            raise ValueError(f"{name} row {row} is all zeros; its cosine similarity is undefined")
        tensor = tensor / norms[:, None]
    return tensor.contiguous()


def as_labels_for(labels: Any, embeddings: torch.Tensor, name: str, emb_name: str) -> torch.Tensor:
    """Validate labels (see :func:`hcl.labels.as_label_tensor`) and check one row per embedding.

    Shape:
        labels: (N, L) or (N,). Returns (N, L) int64 on the CPU.
    """
    labels = as_label_tensor(labels, name=name, device="cpu")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{name} has {labels.shape[0]} rows but {emb_name} has {embeddings.shape[0]}; they must match")
    return labels


def check_ks(ks: int | Iterable[int], name: str = "ks") -> tuple[int, ...]:
    """Positive integers, sorted and without repeats."""
    values = (ks,) if isinstance(ks, (int, np.integer)) else tuple(ks)
    if not values:
        raise ValueError(f"{name} must name at least one k")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must be positive integers, got {k!r}")
    return tuple(sorted({int(k) for k in values}))


def check_same_levels(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ValueError unless two label tensors have the same number of levels."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has {a.shape[1]} levels but {name_b} has {b.shape[1]}; they must match")


def train_and_test(
    train_emb: Any, train_labels: Any, test_emb: Any, test_labels: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated CPU embeddings and labels of a training and a test set that share a dimension and
    a number of levels: ``(train_x, train_y, test_x, test_y)``.

    Shape:
        train_emb: (N, D); train_labels: (N, L); test_emb: (M, D); test_labels: (M, L).
    """
    train_x = as_embeddings(train_emb, "train_emb", device="cpu")
    test_x = as_embeddings(test_emb, "test_emb", device="cpu")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"test_emb has dimension {test_x.shape[1]} but train_emb has {train_x.shape[1]}")
    train_y = as_labels_for(train_labels, train_x, "train_labels", "train_emb")
    test_y = as_labels_for(test_labels, test_x, "test_labels", "test_emb")
    check_same_levels(train_y, test_y, "train_labels", "test_labels")
    return train_x, train_y, test_x, test_y
