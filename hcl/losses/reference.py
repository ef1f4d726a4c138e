"""Reference mode: the behaviour of the public reference code, to reproduce its released numbers.

The reference implementation (salesforce/hierarchicalContrastiveLearning, ``losses.py``: class
``HMLC`` on top of SupContrast's ``SupConLoss``, trained with ``layer_penalty=torch.exp``)
differs from the paper's equations. For labels with L columns it does, for ``k = 1..L-1``:

1. level k keeps the label prefix of length ``L - k`` (the full label path is never a level);
   positives are the other views whose prefix is equal, and the level loss is a SupCon over the
   samples still kept, averaged over all their views as anchors and multiplied by
   ``temperature / 0.07`` (SupContrast's ``base_temperature``);
2. ``hmc`` adds ``penalty(1/k) * layer``; ``hce`` replaces ``layer`` by
   ``max(running_max, layer)`` and adds it; ``hmce`` adds ``penalty(1/k) * max(running_max,
   layer)``. The constraint is thus a running max over batch-level scalars;
3. only the first occurrence of each prefix is kept for the coarser levels. As in the
   reference (``torch.unique`` with ``sorted=True``) the kept samples are then ordered by
   prefix, so at the next level "first" means the kept sample with the smallest finer prefix;
4. the sum is divided by L (not L - 1).

The reference's data sets carry a per-image instance id as the last label column, which is
thus never a level: with labels ``(level_0, ..., level_{L-1}, instance)`` the levels are the
real ones. Labels without that column (hcl's data sets, :class:`hcl.Hierarchy` labels) would
lose their finest real level; ``instance_column="absent"`` appends the column first, the row
index of each sample (unique per image in the batch; the V views of a row share it). Its values
never enter the loss (only prefixes of length up to L-1 are compared, and step 3 runs on them),
so the row index gives the same loss as the dataset index the reference uses, on one process
or on a batch gathered from several. The appended column counts in step 4, and the level
weights then have one entry per real level. ``instance_column="present"`` (the default) takes
the labels as they are, as the reference code does.

Unlike paper mode, the value depends on the order of the samples in the batch whenever a prefix
of length L-1 repeats, through which sample step 3 keeps.

Where the reference divides by zero (an anchor without positives, e.g. with one view) the
anchor is skipped, as in paper mode; a level without any positive pair adds nothing and leaves
the running max unchanged; L = 1 has no level and gives ``features.sum() * 0``. Unknown (-1)
labels have no meaning there and are rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from hcl.losses._checks import (
    check_features,
    check_labels,
    check_level_weights,
    check_temperature,
    check_weight_count,
)
from hcl.losses.functional import full_precision, paper_loss
from hcl.losses.groups import sort_by_prefix

__all__ = [
    "INSTANCE_COLUMNS",
    "REFERENCE_BASE_TEMPERATURE",
    "check_instance_column",
    "reference_hierarchical_loss",
    "reference_level_weights",
]

REFERENCE_BASE_TEMPERATURE = 0.07
LOSS_TYPES = ("hmc", "hce", "hmce")
INSTANCE_COLUMNS = ("present", "absent")


def check_instance_column(instance_column: Any, mode: str) -> str | None:
    """The ``instance_column`` setting of a loss in ``mode``: reference mode takes ``"present"``
    (the default, for None) or ``"absent"``; paper mode has no instance column and takes None."""
    if mode != "reference":
        if instance_column is not None:
            raise ValueError(f"instance_column={instance_column!r} applies to mode='reference', not mode={mode!r}")
        return None
    if instance_column is None:
        return "present"
    if instance_column not in INSTANCE_COLUMNS:
        raise ValueError(f"instance_column must be one of {INSTANCE_COLUMNS}, got {instance_column!r}")
    return instance_column


def reference_level_weights(
    level_weights: Sequence[float] | Callable[[torch.Tensor], Any] | None, num_levels: int
) -> tuple[float, ...]:
    """The reference's per-level penalties, indexed by the column of the deepest kept label.

    Entry ``j`` (``j = 0..L-2``) weights the level whose prefix has length ``j + 1``, i.e.
    ``k = L - 1 - j`` dropped columns. A callable is the reference's ``layer_penalty``, called
    with the float32 tensor ``1/k`` (default ``torch.exp``); a sequence must have ``L - 1``
    entries, coarse to fine.
    """
    if level_weights is None:
        level_weights = torch.exp
    if callable(level_weights):
        penalties = tuple(
            float(level_weights(torch.tensor(1.0 / (num_levels - 1 - column), dtype=torch.float32)))
            for column in range(num_levels - 1)
        )
        if penalties:
            check_level_weights(penalties, "paper")  # held to the limits of a sequence's values
        return penalties
    weights = tuple(level_weights)
    check_weight_count(weights, num_levels - 1, "reference mode: one per prefix length 1..L-1, coarse to fine")
    return weights


def reference_hierarchical_loss(
    features: torch.Tensor,
    labels: Any,
    *,
    temperature: float = 0.1,
    level_weights: Sequence[float] | Callable[[torch.Tensor], Any] | None = None,
    loss_type: str = "hmce",
    instance_column: str = "present",
) -> torch.Tensor:
    """The reference code's HMLC loss (``hmc``, ``hce`` or ``hmce``); see the module docstring.

    Args:
        features: embeddings, L2-normalised here (idempotent).
        labels: hierarchical labels without unknowns, column 0 coarsest.
        temperature: t > 0.
        level_weights: the layer penalty (callable on ``1/k``) or one float per level, coarse
            to fine (``L - 1`` with the instance column present, ``L`` when absent); ignored by
            ``hce``.
        loss_type: ``"hmc"`` (HiMulCon), ``"hce"`` (HiConE) or ``"hmce"`` (HiMulConE).
        instance_column: ``"present"``: the last label column is a per-image instance id, as in
            the reference's data; ``"absent"``: append one, so that the finest column is a level.

    Shape:
        features: (B, V, D) or (B, D); labels: (B, L). Returns a scalar.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    instance_column = check_instance_column(instance_column, "reference")
    temperature = check_temperature(temperature)
    level_weights = check_level_weights(level_weights, "reference")
    features = check_features(features)
    labels = check_labels(labels, features.shape[0], features.device)
    if bool((labels < 0).any()):
        row = int((labels < 0).any(dim=1).nonzero()[0])
        raise ValueError(
            "reference mode does not support unknown (-1) labels (use mode='paper'); "
            f"row {row} is {labels[row].tolist()}"
        )
    if instance_column == "absent":
        instances = torch.arange(labels.shape[0], device=labels.device)
        labels = torch.cat([labels, instances.unsqueeze(1)], dim=1)
    num_levels = labels.shape[1]
    weights = reference_level_weights(level_weights, num_levels) if num_levels > 1 else ()
    # Dense prefix ids in lexicographic order of the label prefixes (no -1 here).
    order, run, _ = sort_by_prefix(labels)
    ids = torch.empty_like(run)
    ids[order] = run
    scale = temperature / REFERENCE_BASE_TEMPERATURE
    with full_precision(features) as values:
        total = values.sum() * 0
        running_max = None
        kept = torch.arange(labels.shape[0], device=labels.device)
        for column in reversed(range(num_levels - 1)):
            group = ids[kept, column]
            result = paper_loss(values[kept], group.unsqueeze(1), temperature, (1.0,), constrained=False)
            if result is not None:
                layer = result[0] * scale
                if loss_type != "hmc" and running_max is not None:
                    layer = torch.maximum(running_max, layer)
                total = total + (1.0 if loss_type == "hce" else weights[column]) * layer
                running_max = layer if running_max is None else torch.maximum(running_max, layer)
            # First occurrence of each prefix among the kept samples, in prefix order.
            position = torch.arange(kept.shape[0], device=kept.device)
            first = torch.full((int(run[-1, column]) + 1,), kept.shape[0], device=kept.device)
            first.scatter_reduce_(0, group, position, reduce="amin")
            kept = kept[first[first < kept.shape[0]]]
        return total / num_levels
