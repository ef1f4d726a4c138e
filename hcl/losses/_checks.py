"""Argument validation shared by the losses: every error names the problem and the bad value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hcl.hierarchy import Hierarchy
from hcl.labels import as_label_tensor

MODES = ("paper", "reference")

LevelWeights = Sequence[float] | Callable[[torch.Tensor], Any]

# Beyond these a float32 loss (or its gradient) can overflow: logits reach 1/t, a level's terms
# lambda_l / t times about 2 + log N, and reference mode scales the loss by t / 0.07. Inside them
# lambda_l / t and lambda_l t / 0.07 stay below 1.5e31, far from float32's 3.4e38.
TEMPERATURE_RANGE = (1e-15, 1e15)
MAX_LEVEL_WEIGHT = 1e15


def check_no_indices_tuple(indices_tuple: Any, loss: str) -> None:
    """Refuse a mined ``indices_tuple``: hcl's losses use every pair of the batch.

    pytorch-metric-learning's losses take ``loss(embeddings, labels, indices_tuple=None)``, the
    tuple being a miner's pairs or triplets. hcl's take the keyword too, so that code written for
    them runs after changing the import, but only ``None``: which samples meet is chosen by the
    batches (:class:`hcl.data.HierarchicalBatchSampler`), not by a miner.

    Raises:
        ValueError: ``indices_tuple`` is not None (the message names ``loss``).
    """
    if indices_tuple is not None:
        raise ValueError(
            f"{loss} uses every pair of the batch and takes no indices_tuple (a miner's pairs or triplets); "
            "drop the miner and pass indices_tuple=None, and choose the batches with hcl.data.HierarchicalBatchSampler"
        )


def check_temperature(temperature: Any) -> float:
    """Return ``temperature`` as a float, or raise if it is not a finite number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a real number, got {temperature!r} of type {type(temperature).__name__}")
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    low, high = TEMPERATURE_RANGE
    if not low <= value <= high:
        raise ValueError(
            f"temperature must be between {low:g} and {high:g} (beyond, a float32 loss can overflow), got {temperature!r}"
        )
    return value


def check_mode(mode: Any) -> str:
    """Return ``mode`` if it is ``"paper"`` or ``"reference"``, else raise naming it."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def check_level_weights(level_weights: Any, mode: str) -> tuple[float, ...] | Callable[..., Any] | None:
    """Validate ``level_weights`` at construction time (their count is checked at call time).

    Paper mode takes a sequence of finite, non-negative floats. Reference mode also takes a
    callable (the reference's ``layer_penalty``, applied to ``1/k``).
    """
    if level_weights is None:
        return None
    if callable(level_weights):
        if mode != "reference":
            raise TypeError(
                "a callable level_weights (the reference's layer penalty) needs mode='reference'; "
                f"paper mode takes a sequence of floats, got {level_weights!r}"
            )
        return level_weights
    if isinstance(level_weights, (str, bytes)) or not isinstance(level_weights, (Sequence, torch.Tensor)):
        raise TypeError(f"level_weights must be a sequence of floats, got {level_weights!r}")
    values = []
    for i, weight in enumerate(level_weights):
        if isinstance(weight, torch.Tensor) and weight.numel() == 1:
            weight = weight.item()
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(f"level_weights[{i}] must be a real number, got {weight!r}")
        if not math.isfinite(float(weight)) or float(weight) < 0:
            raise ValueError(f"level_weights[{i}] must be finite and >= 0, got {weight!r}")
        if float(weight) > MAX_LEVEL_WEIGHT:
            raise ValueError(
                f"level_weights[{i}] must be at most {MAX_LEVEL_WEIGHT:g} (beyond, a float32 loss can "
                f"overflow), got {weight!r}"
            )
        values.append(float(weight))
    if not values:
        raise ValueError("level_weights must not be empty")
    return tuple(values)


def check_weight_count(weights: tuple[float, ...], expected: int, what: str) -> None:
    """Raise if a sequence of level weights does not have ``expected`` entries."""
    if len(weights) != expected:
        raise ValueError(f"level_weights must have {expected} entries ({what}), got {len(weights)}: {list(weights)}")


def check_features(features: Any, finite: bool = True) -> torch.Tensor:
    """Validate features and return them as a (B, V, D) view; ``finite`` checks for NaN and inf
    (on a GPU a host sync).

    Shape:
        features: (B, V, D) or (B, D) (one view). Returns (B, V, D).
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got dtype {features.dtype}")
    if features.dim() == 2:
        features = features.unsqueeze(1)
    elif features.dim() != 3:
        raise ValueError(f"features must have shape (B, V, D) or (B, D), got {tuple(features.shape)}")
    if min(features.shape) == 0:
        raise ValueError(f"features must have at least one sample, view and dimension, got {tuple(features.shape)}")
    # A finite sum proves every value finite (NaN and inf propagate); only otherwise look closer.
    if finite and not bool(torch.isfinite(features.detach().sum(dtype=torch.float64))):
        finite = torch.isfinite(features)
        if not bool(finite.all()):
            bad = (~finite).nonzero()[0].tolist()
            value = features[tuple(bad)].item()
            raise ValueError(
                f"features contain {int((~finite).sum())} non-finite values (NaN or inf); "
                f"the first is {value} at (sample, view, dim) = {tuple(bad)}"
            )
    return features


def check_labels(
    labels: Any, batch_size: int, device: torch.device, num_levels: int | None = None, values: bool = True
) -> torch.Tensor:
    """Validate labels with :func:`hcl.labels.as_label_tensor` and match them to the batch;
    ``values`` checks their values too (on a GPU a host sync).

    Shape:
        labels: (B, L) or (B,). Returns (B, L) int64 on ``device``.
    """
    labels = as_label_tensor(labels, num_levels=num_levels, device=device, check_values=values)
    if labels.shape[0] != batch_size:
        raise ValueError(f"labels have {labels.shape[0]} rows but features have {batch_size} samples")
    return labels


def check_real(value: Any, name: str, *, positive: bool) -> float:
    """Return ``value`` as a float, or raise naming ``name`` unless it is finite and > 0
    (``positive``) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")
    return number


def check_hierarchy(hierarchy: Any) -> Hierarchy:
    """Return ``hierarchy`` if it is an :class:`hcl.Hierarchy`, else raise naming its type."""
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"hierarchy must be an hcl.Hierarchy, got {type(hierarchy).__name__}")
    return hierarchy


def check_finest_labels(
    labels: Any, batch_size: int, device: torch.device, hierarchy: Hierarchy, values: bool = True
) -> torch.Tensor:
    """Validate labels encoded in ``hierarchy`` and return their finest column; ``values``
    checks them against the tree too (:meth:`hcl.Hierarchy.validate`, on a GPU a host sync).

    Shape:
        labels: (B, L) with L = ``hierarchy.num_levels``. Returns (B,) int64 on ``device``:
        the node id at level L-1, or -1 where the finest level is unknown.
    """
    labels = check_labels(labels, batch_size, device, num_levels=hierarchy.num_levels, values=values)
    if values:
        hierarchy.validate(labels)
    return labels[:, -1]
