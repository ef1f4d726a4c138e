"""Validation and vectorised prefix arithmetic for hierarchical label tensors.

The label convention itself is documented once, on :class:`hcl.Hierarchy`: an (N, L) int64
tensor, column 0 coarsest, ``-1`` meaning unknown at that level and below.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_label_tensor", "prefix_ids", "shared_prefix_length"]


def as_label_tensor(
    labels: Any,
    *,
    num_levels: int | None = None,
    name: str = "labels",
    device: torch.device | str | None = None,
    check_values: bool = True,
) -> torch.Tensor:
    """Validate hierarchical labels and return them as an (N, L) int64 tensor.

    Args:
        labels: array-like of integers, shape (N, L), or (N,) which is read as L = 1.
        num_levels: if given, the required L.
        name: how the argument is called in error messages.
        device: where to put the result (default: where ``labels`` already is, else CPU).
        check_values: check the values too (>= -1, no known label below an unknown one). On a
            GPU that reads them back to the host, which waits for all queued work.

    Raises:
        TypeError: labels are not integers (floats, bools, strings).
        ValueError: wrong shape, values below -1, or a known label below an unknown one.
    """
    if isinstance(labels, torch.Tensor):
        tensor = labels
    else:
        array = np.asarray(labels)
        if array.dtype == object or array.dtype.kind in "USa":
            raise TypeError(f"{name} must be integers, got an array of dtype {array.dtype}")
        tensor = torch.from_numpy(array.copy()) if array.dtype.kind in "iu" else torch.as_tensor(array)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{name} must be an integer tensor, got dtype {tensor.dtype}")
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(1)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (N, L) or (N,), got {tuple(tensor.shape)}")
    if num_levels is not None and tensor.shape[1] != num_levels:
        raise ValueError(f"{name} must have {num_levels} levels (columns), got {tensor.shape[1]}")
    if tensor.shape[1] == 0:
        raise ValueError(f"{name} must have at least one level, got shape {tuple(tensor.shape)}")
    tensor = tensor.to(dtype=torch.int64, device=device if device is not None else tensor.device)
    if check_values and tensor.numel():
        low = int(tensor.min())
        if low < -1:
            row = int((tensor < -1).any(dim=1).nonzero()[0])
            raise ValueError(f"{name} must be >= -1 (unknown), got {low} in row {row}: {tensor[row].tolist()}")
        unknown = tensor < 0
        # Once a level is unknown, every finer level must be unknown too.
        bad = (unknown[:, :-1] & ~unknown[:, 1:]).any(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise ValueError(f"{name} has a known label below an unknown (-1) one in row {row}: {tensor[row].tolist()}")
    return tensor


def prefix_ids(labels: torch.Tensor) -> torch.Tensor:
    """Dense ids of each sample's label prefix, level by level.

    Two samples get the same id in column ``l`` exactly when their labels agree, and are known,
    in columns ``0..l``. Unknown prefixes get ``-1``. Ids at each level are ``0..n_l-1`` in the
    lexicographic order of the prefixes. Cost: O(N log N) per level.

    Shape:
        labels: (N, L) int64, validated by :func:`as_label_tensor`. Returns (N, L) int64.
    """
    if labels.device.type == "cpu":
        # NumPy's indexing is 10-30x faster than torch's on the CPU at N = 1M.
        return torch.from_numpy(_prefix_ids_numpy(labels.numpy()))
    n, num_levels = labels.shape
    out = torch.full_like(labels, -1)
    parent = torch.zeros(n, dtype=torch.int64, device=labels.device)
    for level in range(num_levels):
        known = labels[:, level] >= 0
        if not bool(known.any()):
            break
        values, raw = torch.unique(labels[known, level], return_inverse=True)
        # One 1-D key per (parent prefix, label) pair: far faster than torch.unique(dim=0),
        # and ordered like the pairs, so ids stay lexicographic in the prefixes.
        key = parent[known] * len(values) + raw
        _, inverse = torch.unique(key, return_inverse=True)
        out[known, level] = inverse
        parent = out[:, level]
    return out


def _prefix_ids_numpy(labels: np.ndarray) -> np.ndarray:
    """:func:`prefix_ids` on the CPU, with the same ids.

    Shape:
        labels: (N, L) int64. Returns (N, L) int64.
    """
    n, num_levels = labels.shape
    out = np.full((n, num_levels), -1, dtype=np.int64)
    parent = np.zeros(n, dtype=np.int64)
    for level in range(num_levels):
        known = labels[:, level] >= 0
        if not known.any():
            break
        rows = slice(None) if known.all() else known  # a mask copies: skip it when all are known
        raw, num_values = _dense_ranks(labels[rows, level])
        out[rows, level] = _dense_ranks(parent[rows] * num_values + raw)[0]
        parent = out[:, level]
    return out


def _dense_ranks(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Each value's rank among the distinct values (``np.unique``'s inverse), and their count.

    A value range up to a few times the length is ranked with a presence table and a cumulative
    sum, O(N + range), instead of the O(N log N) sort of ``np.unique``.

    Shape:
        values: (N,) int64, N >= 1. Returns (N,) int64.
    """
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span > max(4 * len(values), 1 << 16):
        distinct, inverse = np.unique(values, return_inverse=True)
        return inverse.reshape(-1), len(distinct)
    shifted = values - low
    present = np.zeros(span, dtype=np.int64)
    present[shifted] = 1
    rank = np.cumsum(present, out=present)
    return rank[shifted] - 1, int(rank[-1])


def shared_prefix_length(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of leading levels on which two label rows agree and are known.

    Shape:
        a: (..., L), b: broadcastable to a. Returns (...) int64 in 0..L.
    """
    agree = (a == b) & (a >= 0) & (b >= 0)
    return agree.to(torch.int64).cumprod(dim=-1).sum(dim=-1)
