"""Functional forms of the losses (paper mode); the classes in hcl.losses wrap these.

Paper mode, for features of N = B*V unit views and labels with L levels (column 0 coarsest):

* ``P_l(i)``: the other views whose label prefix 0..l equals anchor i's, both known; the other
  views of i's own sample are among them at every level where i's label is known.
* ``ell(i, p) = -log(exp(s_ip / t) / sum_{a != i} exp(s_ia / t))``, s the cosine similarity.
* level term ``T_l`` = mean over anchors with ``|P_l(i)| > 0`` of the mean over ``p in P_l(i)``
  of ``ell(i, p)`` or, with the hierarchy constraint, of ``max(ell(i, p), m_i)`` where ``m_i``
  is the largest ``ell(i, q)`` over ``q in P_{l+1}(i)`` (no bound at the finest level, or when
  ``P_{l+1}(i)`` is empty).
* loss = ``(1/L) * sum_l lambda_l * T_l``.

That constraint is the ``"pair"`` reading; :mod:`hcl.losses.constraints` defines the others
(``"pair_held"``, ``"level_max"``, ``"hinge"``), chosen with the ``constraint`` argument.

Degenerate cases: an anchor whose label is unknown (-1) at a level, or that has no positive
there, is skipped at that level (it still appears in every denominator); a level without anchors
contributes 0; with one view per sample, positives come from other samples only; a single
sample with V >= 2 views has its other views as positives at each known level; a batch without
any positive pair (one view of distinct classes, one sample with one view) returns
``features.sum() * 0``, a zero that keeps the autograd graph.

Everything is computed in float32 (float64 for float64 inputs) with autocast disabled, so
bf16/fp16 autocast cannot overflow the softmax. On CPUs the grouped kernel of
:mod:`hcl.losses._kernel` computes the loss; on GPUs the dense form of :mod:`hcl.losses.dense`,
while its (L, N, N) tensors stay small.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from hcl.losses._checks import (
    check_features,
    check_labels,
    check_level_weights,
    check_temperature,
    check_weight_count,
)
from hcl.losses._kernel import hierarchical_contrastive
from hcl.losses.constraints import (
    DEFAULT_CONSTRAINT_WEIGHT,
    check_constraint_weight,
    level_constraint_loss,
    resolve_constraint,
    running_max_terms,
)
from hcl.losses.dense import dense_fits, dense_paper_loss
from hcl.losses.groups import build_view_groups

__all__ = [
    "default_level_weights",
    "hierarchical_contrastive_loss",
    "hierarchical_contrastive_loss_with_terms",
    "supcon_loss",
]


def default_level_weights(num_levels: int) -> tuple[float, ...]:
    """The paper-mode default ``lambda_l = exp(1 / (L - l))`` for ``l = 0..L-1`` (coarse to fine).

    The finest level gets ``e``, as the reference training script's ``layer_penalty=torch.exp``
    gives its finest level.
    """
    return tuple(math.exp(1.0 / (num_levels - level)) for level in range(num_levels))


@contextlib.contextmanager
def full_precision(features: torch.Tensor) -> Iterator[torch.Tensor]:
    """Yield ``features`` in float32 (or float64) with autocast disabled on their device."""
    dtype = torch.promote_types(features.dtype, torch.float32)
    device_type = features.device.type
    if torch.amp.is_autocast_available(device_type):
        context: Any = torch.autocast(device_type=device_type, enabled=False)
    else:
        context = contextlib.nullcontext()
    with context:
        yield features.to(dtype)


def paper_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    level_weights: Sequence[float],
    constrained: bool,
    bound_gradient: bool = True,
    constraint_scale: float = 1.0,
    combine: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The paper-mode loss on validated inputs and its per-level terms ``lambda_l * T_l / L``
    (no gradient), or ``None`` when no anchor has a positive. ``constraint_scale`` and
    ``combine``: as for :func:`hcl.losses._kernel.hierarchical_contrastive`.

    Shape:
        features: (B, V, D) floating; labels: (B, L) int64; level_weights: L floats. Returns a
        scalar and an (L,) tensor.
    """
    num_samples, num_views, dim = features.shape
    num_levels = labels.shape[1]
    groups = build_view_groups(labels, num_views)
    # Every group of every level at once: a group of s >= 2 views holds s anchors with s - 1
    # positives each; level l's term averages over its |A_l| anchors.
    sizes, level_of = groups.group_size, groups.group_level
    anchors = torch.where(sizes >= 2, sizes, 0)
    counts = torch.zeros(num_levels, dtype=torch.int64, device=sizes.device).index_add_(0, level_of, anchors).tolist()
    scales = [w / (num_levels * c) if c else 0.0 for w, c in zip(level_weights, counts)]
    if not any(scales):
        return None
    scale = torch.tensor(scales, dtype=features.dtype, device=features.device)
    group_weight = scale[level_of] * (anchors > 0) / (sizes - 1).clamp(min=1)
    return hierarchical_contrastive(
        features.reshape(num_samples * num_views, dim),
        temperature,
        groups,
        group_weight,
        constrained,
        bound_gradient,
        constraint_scale,
        combine,
    )


def _dispatch(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    level_weights: Sequence[float],
    constrained: bool,
    bound_gradient: bool,
    constraint_scale: float = 1.0,
    combine: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper-mode loss on validated inputs and its per-level terms, in full precision: the
    dense form where it fits (GPUs; not with ``combine``), else the grouped kernel; a batch
    without positives gives a zero that keeps the graph, and zero terms."""
    with full_precision(features) as values:
        if combine is None and dense_fits(values.shape[0] * values.shape[1], labels.shape[1], values.device):
            return dense_paper_loss(
                values, labels, temperature, level_weights, constrained, bound_gradient, constraint_scale
            )
        result = paper_loss(
            values, labels, temperature, level_weights, constrained, bound_gradient, constraint_scale, combine
        )
    return (features.sum() * 0, values.new_zeros(labels.shape[1])) if result is None else result


def hierarchical_contrastive_loss(
    features: torch.Tensor,
    labels: Any,
    *,
    temperature: float = 0.1,
    level_weights: Sequence[float] | None = None,
    constrained: bool = False,
    bound_gradient: bool = True,
    check_inputs: bool = True,
    constraint: str | None = None,
    constraint_weight: float = DEFAULT_CONSTRAINT_WEIGHT,
) -> torch.Tensor:
    """Paper-mode HiMulCon (``constrained=False``) or HiMulConE (``constrained=True``).

    HiConE is ``constrained=True`` with all level weights 1. See the module docstring for the
    definitions and the degenerate cases.

    Args:
        features: embeddings, L2-normalised here (idempotent).
        labels: hierarchical labels, column 0 coarsest, -1 unknown at that level and below.
        temperature: t > 0.
        level_weights: L non-negative floats, coarse to fine; default
            :func:`default_level_weights`.
        constrained: apply the hierarchy constraint.
        bound_gradient: kept for old callers: False is ``constraint="pair_held"``.
        check_inputs: check that the features are finite and the label values valid. On a GPU
            these checks wait for all queued work; a training loop that checks the loss value
            itself can skip them (bad values then give a NaN loss or a wrong one, not an error).
        constraint: how the constraint reads, one of :data:`hcl.losses.constraints.CONSTRAINTS`
            (defined in :mod:`hcl.losses.constraints`): ``"pair"`` (the paper as written, the
            default), ``"pair_held"``, ``"level_max"`` or ``"hinge"``; None is ``"pair"``, or
            ``"pair_held"`` with ``bound_gradient=False``. Needs ``constrained=True``.
        constraint_weight: the hinge weight ``beta`` in [0, 1] of ``"hinge"`` (unused otherwise).

    Shape:
        features: (B, V, D) or (B, D); labels: (B, L) or (B,). Returns a scalar.
    """
    loss, _ = hierarchical_contrastive_loss_with_terms(
        features,
        labels,
        temperature=temperature,
        level_weights=level_weights,
        constrained=constrained,
        bound_gradient=bound_gradient,
        check_inputs=check_inputs,
        constraint=constraint,
        constraint_weight=constraint_weight,
    )
    return loss


def hierarchical_contrastive_loss_with_terms(
    features: torch.Tensor,
    labels: Any,
    *,
    temperature: float = 0.1,
    level_weights: Sequence[float] | None = None,
    constrained: bool = False,
    bound_gradient: bool = True,
    check_inputs: bool = True,
    constraint: str | None = None,
    constraint_weight: float = DEFAULT_CONSTRAINT_WEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hierarchical_contrastive_loss` and, from the same computation, each level's term.

    ``level_terms[l] = lambda_l * T_l / L``, detached; they add up to the loss (up to rounding).
    A level without anchors, and every level of a batch without positive pairs, has term 0. The
    terms cost O(L N) on top of the loss and no host sync. The arguments are those of
    :func:`hierarchical_contrastive_loss`.

    Shape:
        features: (B, V, D) or (B, D); labels: (B, L) or (B,). Returns a scalar and an (L,)
        tensor (float32, or float64 for float64 features).
    """
    reading = resolve_constraint(constraint, bound_gradient)
    if constraint is not None and not constrained:
        raise ValueError(f"constraint={constraint!r} needs constrained=True (HiConE, HiMulConE)")
    constraint_weight = check_constraint_weight(constraint_weight)
    temperature = check_temperature(temperature)
    features = check_features(features, finite=check_inputs)
    labels = check_labels(labels, features.shape[0], features.device, values=check_inputs)
    num_levels = labels.shape[1]
    weights = check_level_weights(level_weights, "paper")
    if weights is None:
        weights = default_level_weights(num_levels)
    check_weight_count(weights, num_levels, "one per label level, coarse to fine")
    if constrained and reading == "level_max":
        num_views_total = features.shape[0] * (features.shape[1] if features.dim() == 3 else 1)
        if dense_fits(num_views_total, num_levels, features.device):
            with full_precision(features) as values:
                return level_constraint_loss(values, labels, temperature, weights)
        # The grouped kernel's plain level terms (weights 1), combined by the running maximum.
        combine = functools.partial(running_max_terms, level_weights=weights)
        return _dispatch(features, labels, temperature, (1.0,) * num_levels, False, True, combine=combine)
    if constrained and reading == "hinge":
        # The hinge is the held bound's part scaled by beta: the kernel's pair_held, scaled.
        return _dispatch(features, labels, temperature, weights, True, False, constraint_weight)
    return _dispatch(features, labels, temperature, weights, constrained, reading == "pair")


def supcon_loss(
    features: torch.Tensor, labels: Any, *, temperature: float = 0.1, check_inputs: bool = True
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "L_out" form) over all views.

    Every view is an anchor; its positives are the other views with the same label; the loss is
    the mean over anchors with at least one positive of the mean ``ell(i, p)``. Unknown (-1)
    labels make an anchor that is skipped (it still appears in the others' denominators).

    ``check_inputs``: as for :func:`hierarchical_contrastive_loss`.

    Shape:
        features: (B, V, D) or (B, D); labels: (B,) or (B, 1). Returns a scalar.
    """
    temperature = check_temperature(temperature)
    features = check_features(features, finite=check_inputs)
    labels = check_labels(labels, features.shape[0], features.device, values=check_inputs)
    if labels.shape[1] != 1:
        raise ValueError(
            f"SupCon takes one label per sample, (B,) or (B, 1), got {labels.shape[1]} levels (B, L); pass the "
            "finest level, labels[:, -1], or use HiMulCon to learn from every level"
        )
    loss, _ = _dispatch(features, labels, temperature, (1.0,), constrained=False, bound_gradient=True)
    return loss
