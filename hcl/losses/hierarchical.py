"""HiMulCon, HiConE and HiMulConE (Zhang et al., "Use All The Labels", CVPR 2022, arXiv 2204.13207).

Two modes. ``mode="paper"`` (default) follows the paper's equations, defined precisely in
:mod:`hcl.losses.functional`: for every level l = 0..L-1 (column 0 coarsest) the positives of a
view are the other views whose label prefix 0..l equals its own, both known; every one of the
N = B*V views is an anchor with all N-1 others in its denominator; the level term is averaged
over anchors that have positives, and the loss is ``(1/L) * sum_l lambda_l * T_l``; HiConE and
HiMulConE read the hierarchy constraint as chosen by ``constraint`` (:mod:`hcl.losses.constraints`).
``mode="reference"`` reproduces the public reference code, defined in
:mod:`hcl.losses.reference`, so that the paper's released numbers can be reproduced; its
``instance_column`` says whether the labels end with a per-image instance id, as the reference's do.

Degenerate cases (both modes): an anchor without positives at a level is skipped there, never
NaN; a batch without any positive pair returns ``features.sum() * 0``, which keeps the graph;
one view per sample works (positives come from other samples only); a single sample with V >= 2
views has its other views as positives at every known level. Paper mode skips an anchor at the
levels where its label is unknown (-1); reference mode rejects -1 labels with a ValueError.

Per-level terms: after each paper-mode call, ``last_level_terms`` holds the (L,) detached terms
``lambda_l * T_l / L`` of that call, computed in the same pass as the loss (they add up to it);
reference mode has no such decomposition and sets it to None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from hcl.labels import as_label_tensor
from hcl.losses._checks import check_level_weights, check_mode, check_no_indices_tuple, check_temperature
from hcl.losses.constraints import DEFAULT_CONSTRAINT_WEIGHT, check_constraint_weight, resolve_constraint
from hcl.losses.functional import hierarchical_contrastive_loss_with_terms
from hcl.losses.reference import check_instance_column, reference_hierarchical_loss

__all__ = ["HiConE", "HiMulCon", "HiMulConE"]

LevelWeights = Sequence[float] | Callable[[torch.Tensor], Any] | None


class _HierarchicalLoss(nn.Module):
    """Holds the hyper-parameters and dispatches to the paper or the reference formulation.

    Attributes:
        last_level_terms: the last call's per-level terms (see :mod:`hcl.losses.hierarchical`),
            None before the first call and in reference mode.
    """

    constrained: ClassVar[bool]
    weighted: ClassVar[bool]
    reference_type: ClassVar[str]
    default_constraint: ClassVar[str] = "pair"

    def __init__(
        self,
        temperature: float = 0.1,
        level_weights: LevelWeights = None,
        mode: str = "paper",
        bound_gradient: bool = True,
        check_inputs: bool = True,
        constraint: str | None = None,
        constraint_weight: float = DEFAULT_CONSTRAINT_WEIGHT,
        instance_column: str | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.mode = check_mode(mode)
        self.level_weights = check_level_weights(level_weights, self.mode)
        if not isinstance(bound_gradient, bool):
            raise TypeError(f"bound_gradient must be True or False, got {bound_gradient!r}")
        where = f"not {type(self).__name__} in mode {self.mode!r}"
        constrained_paper = self.constrained and self.mode == "paper"
        if not bound_gradient and not constrained_paper:
            raise ValueError(f"bound_gradient=False applies to HiConE and HiMulConE in paper mode, {where}")
        if constraint is not None and not constrained_paper:
            raise ValueError(f"constraint={constraint!r} applies to HiConE and HiMulConE in paper mode, {where}")
        self.constraint = (
            resolve_constraint(constraint, bound_gradient, self.default_constraint) if constrained_paper else None
        )
        self.constraint_weight = check_constraint_weight(constraint_weight)
        self.bound_gradient = self.constraint != "pair_held"
        self.instance_column = check_instance_column(instance_column, self.mode)
        self.check_inputs = bool(check_inputs)
        self.last_level_terms: torch.Tensor | None = None

    def forward(self, features: torch.Tensor, labels: Any, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        if self.mode == "reference":
            self.last_level_terms = None
            return reference_hierarchical_loss(
                features,
                labels,
                temperature=self.temperature,
                level_weights=self.level_weights,
                loss_type=self.reference_type,
                instance_column=self.instance_column,
            )
        weights = self.level_weights
        if not self.weighted:
            labels = as_label_tensor(labels, check_values=self.check_inputs)
            weights = (1.0,) * labels.shape[1]
        loss, self.last_level_terms = hierarchical_contrastive_loss_with_terms(
            features,
            labels,
            temperature=self.temperature,
            level_weights=weights,
            constrained=self.constrained,
            check_inputs=self.check_inputs,
            constraint=self.constraint,
            constraint_weight=self.constraint_weight,
        )
        return loss

    def extra_repr(self) -> str:
        text = f"temperature={self.temperature}, mode={self.mode!r}"
        if self.weighted and self.level_weights is not None:
            text += f", level_weights={self.level_weights!r}"
        if self.constraint is not None:
            text += f", constraint={self.constraint!r}"
        if self.constraint == "hinge":
            text += f", constraint_weight={self.constraint_weight}"
        if self.mode == "reference":
            text += f", instance_column={self.instance_column!r}"
        return text


class HiMulCon(_HierarchicalLoss):
    """Hierarchical multi-label contrastive loss: one SupCon term per level, weighted.

    Paper mode: ``(1/L) * sum_l lambda_l * T_l`` where ``T_l`` is the mean, over anchors with
    positives at level l, of the mean over those positives of
    ``ell(i,p) = -log(exp(s_ip/t) / sum_{a != i} exp(s_ia/t))``. With L = 1 and
    ``level_weights=[1]`` it equals :class:`hcl.losses.SupConLoss`. Reference mode: the reference
    code's ``hmc`` loss. Degenerate cases: see :mod:`hcl.losses.hierarchical`.

    Args:
        temperature: t > 0.
        level_weights: paper mode: L non-negative floats ``lambda_l``, coarse to fine; default
            ``exp(1/(L-l))`` for l = 0..L-1, so the finest level gets e as in the reference
            training script (``layer_penalty=torch.exp``). Reference mode: the layer penalty, a
            callable applied to the float32 tensor ``1/k`` for the level that drops k columns
            (default ``torch.exp``), or one float per level, coarse to fine (L-1 for prefix
            lengths 1..L-1; L with ``instance_column="absent"``).
        mode: ``"paper"`` or ``"reference"``.
        check_inputs: as for :class:`HiMulConE`.
        instance_column: as for :class:`HiMulConE`.

    Shape:
        features: (B, V, D) or (B, D) floating, L2-normalised inside (idempotent).
        labels: (B, L) integers, column 0 coarsest, -1 = unknown at that level and below.
        Output: scalar.
    """

    constrained = False
    weighted = True
    reference_type = "hmc"


class HiMulConE(_HierarchicalLoss):
    """HiMulCon with the hierarchy constraint: the paper's combined loss.

    Paper mode: as :class:`HiMulCon` with ``ell(i,p)`` replaced by ``max(ell(i,p), m_i)``, where
    ``m_i`` is the largest ``ell(i,q)`` over the anchor's positives q at the next finer level l+1
    (no bound at the finest level, or when the anchor has no positive at l+1): a pair farther
    apart in the tree never gets a smaller loss than the worst closer pair. That is the paper's
    reading, ``constraint="pair"``. The default is ``"hinge"`` (weight 0.5): the pair loss kept
    in full plus half the bound's excess as a penalty, the reading the studies chose
    (docs/study.md: as written, the bound mines the hardest positive and hurts; held, the coarse
    levels stop acting). The readings are defined in :mod:`hcl.losses.constraints`. Reference
    mode: the reference code's ``hmce`` loss (a running max of level losses). Degenerate cases:
    see :mod:`hcl.losses.hierarchical`.

    Args:
        temperature: t > 0.
        level_weights: as for :class:`HiMulCon`.
        mode: ``"paper"`` or ``"reference"``.
        bound_gradient: paper mode, kept for old callers: False is ``constraint="pair_held"``
            (and contradicts any other named constraint).
        check_inputs: check that the features are finite and the labels valid (paper mode; on a
            GPU a host sync, see :func:`hcl.losses.functional.hierarchical_contrastive_loss`).
        constraint: paper mode: ``"hinge"`` (``ell(i,p) + beta * relu(m_i - ell(i,p))``,
            ``m_i`` held), ``"pair"`` (the paper as written: ``m_i`` is differentiated, so every
            pair held up by the bound pulls the anchor's hardest finer positive closer),
            ``"pair_held"`` (``m_i`` held constant: such pairs get no gradient) or
            ``"level_max"`` (the reference's running max over level terms); None means
            ``"hinge"`` (``"pair_held"`` with ``bound_gradient=False``); HiConE's None means
            ``"pair"``.
        constraint_weight: the hinge's ``beta`` in [0, 1] (default 0.5): pairs below the bound
            keep a fraction ``1 - beta`` of their gradient. Used by ``"hinge"`` only.
        instance_column: reference mode: ``"present"`` (default; the last label column is a
            per-image instance id and no level, as in the reference's data) or ``"absent"``
            (the labels are levels only, e.g. from :class:`hcl.Hierarchy`: an instance column is
            appended, so that the finest label is a level). Paper mode takes None.

    Shape:
        features: (B, V, D) or (B, D) floating, L2-normalised inside (idempotent).
        labels: (B, L) integers, column 0 coarsest, -1 = unknown at that level and below.
        Output: scalar.
    """

    constrained = True
    weighted = True
    reference_type = "hmce"
    default_constraint = "hinge"


class HiConE(_HierarchicalLoss):
    """The hierarchy-constrained loss with every level weighted 1 (it takes no level weights).

    Paper mode: ``(1/L) * sum_l T_l`` with the pair term ``max(ell(i,p), m_i)`` of
    :class:`HiMulConE`. Reference mode: the reference code's ``hce`` loss. Degenerate cases: see
    :mod:`hcl.losses.hierarchical`.

    Args:
        temperature: t > 0.
        mode: ``"paper"`` or ``"reference"``.
        bound_gradient: as for :class:`HiMulConE`.
        check_inputs: as for :class:`HiMulConE`.
        constraint: as for :class:`HiMulConE`.
        constraint_weight: as for :class:`HiMulConE`.
        instance_column: as for :class:`HiMulConE`.

    Shape:
        features: (B, V, D) or (B, D) floating, L2-normalised inside (idempotent).
        labels: (B, L) integers, column 0 coarsest, -1 = unknown at that level and below.
        Output: scalar.
    """

    constrained = True
    weighted = False
    reference_type = "hce"

    def __init__(
        self,
        temperature: float = 0.1,
        mode: str = "paper",
        bound_gradient: bool = True,
        check_inputs: bool = True,
        constraint: str | None = None,
        constraint_weight: float = DEFAULT_CONSTRAINT_WEIGHT,
        instance_column: str | None = None,
    ) -> None:
        super().__init__(
            temperature=temperature,
            level_weights=None,
            mode=mode,
            bound_gradient=bound_gradient,
            check_inputs=check_inputs,
            constraint=constraint,
            constraint_weight=constraint_weight,
            instance_column=instance_column,
        )
