"""Readings of the hierarchy constraint (HiConE, HiMulConE, paper mode): their definitions, their
argument checks, and the two forms of the ``"level_max"`` reading.

Notation as in :mod:`hcl.losses.functional`: ``ell(i, p)`` the pair loss, ``P_l(i)`` anchor i's
positives at level l (column 0 coarsest), ``T_l`` the level term (the mean over anchors with
``|P_l(i)| > 0`` of the mean over ``p in P_l(i)`` of a pair term), ``lambda_l`` the level
weights, loss = ``(1/L) * sum_l lambda_l * T'_l``. ``m_i`` (per level l < L-1) is the largest
``ell(i, q)`` over ``q in P_{l+1}(i)``; where ``P_{l+1}(i)`` is empty, and at the finest level,
there is no bound. The readings, by the name of the ``constraint`` argument:

* ``"pair"`` (HiConE's default; the paper as written): pair term ``max(ell(i, p), m_i)``, differentiated
  through ``m_i`` too, so each pair held up by the bound pulls the anchor's hardest finer
  positive closer. ``T'_l = T_l``.
* ``"pair_held"`` (``bound_gradient=False``): the same value with ``m_i`` held constant; a pair
  held up by the bound (``ell(i, p) < m_i``) then gets no gradient at all.
* ``"level_max"``: the pair term is ``ell(i, p)`` (no per-pair bound) and the constraint acts on
  the level terms: ``T'_{L-1} = T_{L-1}`` and ``T'_l = max(T_l, T'_{l+1})`` going coarse-wards, so
  a coarse level's term never falls below a finer one's; a level whose own term is the larger
  keeps its full gradient, one that is held up passes its weight on to the finer level it copies.
  This is the running maximum of the reference code's ``hmce`` (``hce`` with all weights 1; see
  :mod:`hcl.losses.reference`) applied to the paper-mode level terms. The reference's level
  losses differ from ``T_l`` in three ways: they never use the last label column (an instance
  id in the reference's data; ``instance_column="absent"`` appends one), they keep only the
  first sample of each finer prefix at every coarser level, and they are scaled by
  ``temperature / 0.07``; the sum is divided by the number of label columns, L + 1 with the
  instance id. Precisely: with L levels plus an instance column, no two samples sharing a label
  prefix of length 2 (so that no sample is dropped) and the default weights (the reference's
  ``exp(1/k)`` are the paper's ``lambda_l``), reference ``hmce`` = ``(t / 0.07) * L / (L + 1)``
  times HiMulConE with ``"level_max"``, and ``hce`` the same of HiConE. Here every level sees
  every view, as in the paper.
* ``"hinge"`` (HiMulConE's default, chosen by the studies of docs/study.md): the pair loss is kept in full and the bound adds a hinge penalty:
  ``ell(i, p) + beta * relu(m_i - ell(i, p))`` with ``m_i`` held constant and ``beta`` the
  ``constraint_weight`` in [0, 1]. Its gradient with respect to ``ell(i, p)`` is 1 above the
  bound and ``1 - beta`` below it: a coarse pair closer than the anchor's worst finer positive
  still attracts, at strength ``1 - beta``, instead of being silenced. ``beta = 0`` is HiMulCon
  (no constraint); ``beta = 1`` gives ``max(ell(i, p), m_i)`` with the bound held, i.e.
  ``"pair_held"``, value and gradient; values in between interpolate. Since ``P_{l+1}(i)`` is
  inside ``P_l(i)``, the pair that attains ``m_i`` is never penalised.

All readings equal HiMulCon (SupCon with L = 1) where no bound exists, and share the degenerate
cases of :mod:`hcl.losses.functional`: unknown (-1) labels and anchors without positives are
skipped at that level; a level without anchors has ``T_l = 0`` (for ``"level_max"`` every finer
level is then empty too, since ``P_{l+1}(i)`` is a subset of ``P_l(i)``, so the running maximum
stays 0); a batch without any positive pair gives 0 with a zero gradient that keeps the graph.

``"level_max"`` has two forms. Where the dense form fits (GPUs), :func:`level_constraint_loss`
computes it level by level with a few (N, N) tensors (N = B*V views) and no host sync (so a CUDA
graph can capture it). Elsewhere the grouped kernel computes the plain level terms in one pass
and :func:`running_max_terms` combines them; the backward pass weights each level by its
derivative, so it costs what HiMulCon does. ``"pair"``, ``"pair_held"`` and ``"hinge"`` go through the grouped kernel
and the dense form of :mod:`hcl.losses.functional`: the hinge's penalty is ``beta`` times the held
bound's part of ``"pair_held"`` (value and gradient), so the kernel computes it at the cost of
``"pair_held"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from hcl.losses._normalize import unit_rows

__all__ = [
    "CONSTRAINTS",
    "DEFAULT_CONSTRAINT_WEIGHT",
    "check_constraint_weight",
    "level_constraint_loss",
    "resolve_constraint",
]

CONSTRAINTS = ("pair", "pair_held", "level_max", "hinge")
DEFAULT_CONSTRAINT_WEIGHT = 0.5


def resolve_constraint(constraint: Any, bound_gradient: Any, default: str = "pair") -> str:
    """The constraint reading named by ``constraint`` and the older ``bound_gradient`` flag.

    ``constraint=None`` means ``default`` (the loss's own: ``"pair"`` for HiConE and the
    functional form, ``"hinge"`` for HiMulConE) with ``bound_gradient=True`` and ``"pair_held"``
    with ``bound_gradient=False``; a named reading other than ``"pair_held"`` with
    ``bound_gradient=False`` is a contradiction and raises, naming both.
    """
    if not isinstance(bound_gradient, bool):
        raise TypeError(f"bound_gradient must be True or False, got {bound_gradient!r}")
    if constraint is None:
        return default if bound_gradient else "pair_held"
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")
    if not bound_gradient and constraint != "pair_held":
        raise ValueError(
            f"bound_gradient=False means constraint='pair_held' and contradicts constraint={constraint!r}; "
            "drop bound_gradient (it is kept for old callers) or set constraint='pair_held'"
        )
    return constraint


def check_constraint_weight(constraint_weight: Any) -> float:
    """Return the hinge weight ``beta`` as a float, or raise if it is not a number in [0, 1]."""
    if isinstance(constraint_weight, bool) or not isinstance(constraint_weight, numbers.Real):
        raise TypeError(
            f"constraint_weight must be a real number in [0, 1], got {constraint_weight!r} "
            f"of type {type(constraint_weight).__name__}"
        )
    value = float(constraint_weight)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"constraint_weight must be in [0, 1], got {constraint_weight!r}")
    return value


def running_max_terms(level_terms: torch.Tensor, level_weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"level_max"`` combination of plain level terms, and its derivative.

    Computed on the host in Python floats (one read-back of L numbers): the grouped kernel that
    calls it reads values back anyway, and a few dozen tensor ops on L numbers would cost more
    than the rest of a small batch's loss.

    Args:
        level_terms: ``T_l / L`` for l = 0..L-1 (coarse to fine), detached.
        level_weights: ``lambda_l``.

    Returns:
        ``lambda_l * T'_l / L`` with ``T'_{L-1} = T_{L-1}`` and ``T'_l = max(T_l, T'_{l+1})``, and
        the multipliers ``d (sum_l lambda_l T'_l) / d T_l``, with :func:`torch.maximum`'s rule at
        ties (the gradient is split in half), so that the grouped kernel's gradient equals the
        dense reading's (:func:`level_constraint_loss`).

    Shape:
        level_terms: (L,). Returns two (L,) tensors.
    """
    terms = level_terms.tolist()
    num_levels = len(terms)
    running = list(terms)
    kept = [1.0] * num_levels  # the share of d/dT'_l that reaches T_l (the rest goes finer)
    for level in reversed(range(num_levels - 1)):
        finer = running[level + 1]
        running[level] = max(terms[level], finer)
        kept[level] = 1.0 if terms[level] > finer else 0.5 if terms[level] == finer else 0.0
    multipliers = []
    arriving = 0.0
    for level, weight in enumerate(level_weights):
        arriving += weight
        multipliers.append(arriving * kept[level])
        arriving *= 1.0 - kept[level]
    weighted = [weight * term for weight, term in zip(level_weights, running, strict=True)]
    return level_terms.new_tensor(weighted), level_terms.new_tensor(multipliers)


def level_constraint_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    level_weights: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper-mode loss with the ``"level_max"`` reading, on validated inputs in full
    precision, and its per-level terms ``lambda_l * T'_l / L`` (detached); 0 (with a zero
    gradient) when nothing has a positive.

    Shape:
        features: (B, V, D) floating; labels: (B, L) int64; level_weights: L floats. Returns a
        scalar and an (L,) tensor.
    """
    num_samples, num_views, dim = features.shape
    num_levels = labels.shape[1]
    n = num_samples * num_views
    z = unit_rows(features.reshape(n, dim))
    rows = labels.repeat_interleave(num_views, dim=0)  # (N, L), views sample-major
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    logits = z @ z.t() / temperature
    lse = torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1)
    pair_loss = lse.unsqueeze(1) - logits  # ell(i, p), (N, N)

    level_terms = []
    positive = not_self
    for level in range(num_levels):
        # P_l(i): the known prefix 0..l is equal (-1 stops a path).
        column = rows[:, level]
        positive = positive & (column.unsqueeze(1) == column.unsqueeze(0)) & (column >= 0).unsqueeze(1)
        count = positive.sum(dim=1).to(z.dtype)
        anchor_sum = torch.where(positive, pair_loss, 0).sum(dim=1)
        anchors = count > 0
        per_anchor = torch.where(anchors, anchor_sum / count.clamp(min=1), 0)
        level_terms.append(per_anchor.sum() / anchors.sum().clamp(min=1))

    for level in reversed(range(num_levels - 1)):
        level_terms[level] = torch.maximum(level_terms[level], level_terms[level + 1])
    # The weights as Python numbers: a host-to-device copy could not be captured in a CUDA graph.
    weighted = [weight * term / num_levels for weight, term in zip(level_weights, level_terms, strict=True)]
    return sum(weighted), torch.stack(weighted).detach()
