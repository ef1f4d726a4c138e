"""HiMulCon, HiConE and HiMulConE (Zhang et al., "Use All The Labels", CVPR 2022, arXiv 2204.13207).

Two modes. ``mode="paper"`` (default) follows the paper's equations, defined precisely in
:mod:`hcl.losses.functional`: for every level l = 0..L-1 (column 0 coarsest) the positives of a
view are the other views whose label prefix 0..l equals its own, both known; every one of the
N = B*V views is an anchor with all N-1 others in its denominator; the level term is averaged
over anchors that have positives, and the loss is ``(1/L) * sum_l lambda_l * T_l``.
``mode="reference"`` reproduces the public reference code, defined in
:mod:`hcl.losses.reference`, so that the paper's released numbers can be reproduced.

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
from hcl.losses._checks import check_level_weights, check_mode, check_temperature
from hcl.losses.functional import hierarchical_contrastive_loss_with_terms
from hcl.losses.reference import reference_hierarchical_loss

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

    def __init__(
        self,
        temperature: float = 0.1,
        level_weights: LevelWeights = None,
        mode: str = "paper",
        bound_gradient: bool = True,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.mode = check_mode(mode)
        self.level_weights = check_level_weights(level_weights, self.mode)
        if not isinstance(bound_gradient, bool):
            raise TypeError(f"bound_gradient must be True or False, got {bound_gradient!r}")
        if not bound_gradient and (not self.constrained or self.mode != "paper"):
            raise ValueError(
                f"bound_gradient=False applies to HiConE and HiMulConE in paper mode, not {type(self).__name__} "
                f"in mode {self.mode!r}"
            )
        self.bound_gradient = bound_gradient
        self.check_inputs = bool(check_inputs)
        self.last_level_terms: torch.Tensor | None = None

    def forward(self, features: torch.Tensor, labels: Any) -> torch.Tensor:
        if self.mode == "reference":
            self.last_level_terms = None
            return reference_hierarchical_loss(
                features,
                labels,
                temperature=self.temperature,
                level_weights=self.level_weights,
                loss_type=self.reference_type,
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
            bound_gradient=self.bound_gradient,
            check_inputs=self.check_inputs,
        )
        return loss

    def extra_repr(self) -> str:
        text = f"temperature={self.temperature}, mode={self.mode!r}"
        if self.weighted and self.level_weights is not None:
            text += f", level_weights={self.level_weights!r}"
        if not self.bound_gradient:
            text += ", bound_gradient=False"
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
            (default ``torch.exp``), or L-1 floats for prefix lengths 1..L-1, coarse to fine.
        mode: ``"paper"`` or ``"reference"``.
        check_inputs: as for :class:`HiMulConE`.

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
    apart in the tree never gets a smaller loss than the worst closer pair. Only pairs inside
    each level's groups are visited for the constraint. Reference mode: the reference code's
    ``hmce`` loss (a running max of level losses). Degenerate cases: see
    :mod:`hcl.losses.hierarchical`.

    Args:
        temperature: t > 0.
        level_weights: as for :class:`HiMulCon`.
        mode: ``"paper"`` or ``"reference"``.
        bound_gradient: paper mode: True (default) differentiates ``max(ell(i,p), m_i)`` as
            written, so every pair held up by the bound pulls the anchor's hardest finer positive
            closer; False holds ``m_i`` constant (such pairs get no gradient), which keeps a plain
            MLP head from collapsing onto the hardest positives.
        check_inputs: check that the features are finite and the labels valid (paper mode; on a
            GPU a host sync, see :func:`hcl.losses.functional.hierarchical_contrastive_loss`).

    Shape:
        features: (B, V, D) or (B, D) floating, L2-normalised inside (idempotent).
        labels: (B, L) integers, column 0 coarsest, -1 = unknown at that level and below.
        Output: scalar.
    """

    constrained = True
    weighted = True
    reference_type = "hmce"


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

    Shape:
        features: (B, V, D) or (B, D) floating, L2-normalised inside (idempotent).
        labels: (B, L) integers, column 0 coarsest, -1 = unknown at that level and below.
        Output: scalar.
    """

    constrained = True
    weighted = False
    reference_type = "hce"

    def __init__(
        self, temperature: float = 0.1, mode: str = "paper", bound_gradient: bool = True, check_inputs: bool = True
    ) -> None:
        super().__init__(
            temperature=temperature,
            level_weights=None,
            mode=mode,
            bound_gradient=bound_gradient,
            check_inputs=check_inputs,
        )
