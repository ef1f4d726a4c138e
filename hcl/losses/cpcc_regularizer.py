"""The CPCC regulariser of Zeng et al. (ICLR 2023), and the two losses it is added to.

Zeng, Tachet des Combes and Zhao, "Learning Structured Representations by Embedding Class
Hierarchy" (ICLR 2023) add ``-lambda * CPCC`` to a classification loss, where CPCC, the
cophenetic correlation coefficient, is the Pearson correlation, over the pairs of classes in
the batch, between their tree distance and the Euclidean distance between their class-mean
representations. Here the term is written ``lambda * (1 - CPCC)``: the same gradient, and 0 when
the class means are laid out exactly as the tree says.

Choices, following the paper: a class is a node of the finest level (samples unknown there are
ignored); a class mean is the plain mean of its samples' vectors over every view, as the model
gives them (not re-normalised); the embedding distance is the l2 distance between class means;
the tree distance is the number of edges of the path through the lowest common ancestor,
``2 (L - s)`` for two finest-level classes sharing a label prefix of length ``s`` (classes under
different roots meet at a virtual root). Pearson correlation is invariant to an affine change of
either distance, so the LCA height ``L - s`` would give the same value.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hcl.hierarchy import Hierarchy
from hcl.labels import shared_prefix_length
from hcl.losses._checks import (
    check_features,
    check_finest_labels,
    check_hierarchy,
    check_no_indices_tuple,
    check_real,
)
from hcl.losses._normalize import scaled_to_unit_max
from hcl.losses.supcon import SupConLoss

__all__ = ["CPCCCrossEntropy", "CPCCRegularizer", "CPCCSupCon", "batch_cpcc"]


def batch_cpcc(
    features: torch.Tensor, finest: torch.Tensor, class_rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The batch CPCC of the finest-level classes present, differentiable, never NaN.

    Args:
        features: the vectors whose class means are compared.
        finest: each sample's class, a node id at the finest level; -1 = unknown (ignored).
        class_rows: the label row of every finest-level class, ``hierarchy.node_labels(L - 1)``.

    Returns:
        None when fewer than three classes are present (one or no pair: no correlation);
        else ``(cpcc, defined)``, two 0-d tensors: ``defined`` is False when the tree distances
        or the class-mean distances are all equal, and ``cpcc`` is then 0 with zero gradient.
        A pair of classes with equal means has distance 0 and passes no gradient through it.

    Shape:
        features: (B, V, D); finest: (B,); class_rows: (K, L).
    """
    num_views, dim = features.shape[1], features.shape[2]
    # CPCC does not depend on the scale of the features; their squared distances would.
    flat = scaled_to_unit_max(features.reshape(-1, dim), per_row=False)
    finest = finest.repeat_interleave(num_views)
    known = finest >= 0
    classes, inverse = torch.unique(finest[known], return_inverse=True)
    num_classes = len(classes)
    if num_classes < 3:
        return None
    sums = flat.new_zeros(num_classes, dim).index_add(0, inverse, flat[known])
    counts = torch.bincount(inverse, minlength=num_classes).to(flat.dtype)
    means = sums / counts[:, None]
    first, second = torch.triu_indices(num_classes, num_classes, 1, device=flat.device)
    # The direct form: exact for close means, and a zero distance passes a zero gradient.
    distance = torch.cdist(means, means, compute_mode="donot_use_mm_for_euclid_dist")[first, second]
    rows = class_rows.to(flat.device)[classes]
    shared = shared_prefix_length(rows[first], rows[second])
    tree = (2 * (class_rows.shape[1] - shared)).to(flat.dtype)
    tree, distance = tree - tree.mean(), distance - distance.mean()
    tree_ss, distance_ss = tree.square().sum(), distance.square().sum()
    defined = (tree_ss > 0) & (distance_ss > 0)
    one = torch.ones_like(tree_ss)
    # Dividing by each root separately cannot underflow to 0 / 0, whatever the scale.
    cpcc = (tree * distance).sum() / torch.where(defined, tree_ss, one).sqrt()
    cpcc = cpcc / torch.where(defined, distance_ss, one).sqrt()
    return torch.where(defined, cpcc, torch.zeros_like(cpcc)), defined


class CPCCRegularizer(nn.Module):
    """``weight * (1 - CPCC)`` over the finest-level classes of a batch (Zeng et al., ICLR 2023).

    See the module docstring for the distances. Degenerate cases: fewer than three classes in
    the batch, or all their tree distances equal (e.g. a one-level hierarchy, or every class
    under a different root), or all their class-mean distances equal, leave CPCC undefined; the
    term is then a zero that keeps the graph (with zero gradient). It is never NaN.

    Args:
        hierarchy: the label tree the labels are encoded in.
        weight: lambda >= 0.
        check_inputs: check that the features are finite and the labels valid in the hierarchy
            (on a GPU a host sync).

    Shape:
        features: (B, V, D) or (B, D) floating; labels: (B, L) int64 in ``hierarchy``'s
        encoding. Output: scalar.
    """

    def __init__(self, hierarchy: Hierarchy, weight: float = 1.0, check_inputs: bool = True) -> None:
        super().__init__()
        self.hierarchy = check_hierarchy(hierarchy)
        self.weight = check_real(weight, "weight", positive=False)
        self.check_inputs = bool(check_inputs)
        self.register_buffer("class_rows", hierarchy.node_labels(hierarchy.num_levels - 1), persistent=False)

    def forward(self, features: torch.Tensor, labels: Any, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        features, finest = self.check(features, labels)
        return self.term(features, finest)

    def check(self, features: torch.Tensor, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate the inputs (fully when ``check_inputs``): features as (B, V, D), and the
        labels' finest column (B,)."""
        features = check_features(features, finite=self.check_inputs)
        finest = check_finest_labels(labels, features.shape[0], features.device, self.hierarchy, self.check_inputs)
        return features, finest

    def term(self, features: torch.Tensor, finest: torch.Tensor) -> torch.Tensor:
        """The regulariser on checked inputs: (B, V, D) features and the (B,) finest column."""
        result = batch_cpcc(features, finest, self.class_rows)
        if result is None:
            return features.sum() * 0
        cpcc, defined = result
        return self.weight * torch.where(defined, 1 - cpcc, torch.zeros_like(cpcc))

    @torch.no_grad()
    def cpcc(self, features: torch.Tensor, labels: Any) -> float:
        """The batch CPCC itself, for logging; NaN when it is undefined (see the class docstring)."""
        result = batch_cpcc(*self.check(features, labels), self.class_rows)
        if result is None or not bool(result[1]):
            return float("nan")
        return float(result[0])

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


class CPCCSupCon(nn.Module):
    """SupCon on the finest label plus the CPCC regulariser on the same embeddings.

    ``SupConLoss(temperature)(features, labels[:, -1]) + weight * (1 - CPCC)``: the SupCon base
    sees the finest-level node ids (global per level, so equal ids mean equal label prefixes;
    samples unknown there are anchors without positives, skipped), the regulariser the class
    means of the embeddings as given (the encoder's L2-normalised projections in training).
    With ``cpcc_weight=0`` it is exactly the SupCon baseline.

    Args:
        hierarchy: the label tree the labels are encoded in.
        temperature: SupCon's t > 0.
        cpcc_weight: lambda >= 0.
        check_inputs: as for :class:`CPCCRegularizer`.

    Shape:
        features: (B, V, D) or (B, D) floating; labels: (B, L). Output: scalar.
    """

    def __init__(
        self, hierarchy: Hierarchy, temperature: float = 0.1, cpcc_weight: float = 1.0, check_inputs: bool = True
    ) -> None:
        super().__init__()
        self.supcon = SupConLoss(temperature=temperature, check_inputs=check_inputs)
        self.regularizer = CPCCRegularizer(hierarchy, weight=cpcc_weight, check_inputs=check_inputs)

    def forward(self, features: torch.Tensor, labels: Any, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        features, finest = self.regularizer.check(features, labels)
        return self.supcon(features, finest[:, None]) + self.regularizer.term(features, finest)


class CPCCCrossEntropy(nn.Module):
    """Cross-entropy on the finest label plus the CPCC regulariser on the representation.

    The paper's setting: a linear classifier on the backbone representation, trained with
    cross-entropy, with CPCC computed on the class means of that representation. The loss takes
    both in one tensor, ``torch.cat([representation, logits], dim=-1)``, the layout of
    :class:`hcl.models.Encoder` built with ``num_classes=K, output_features=True``, so it has the
    training loop's ``loss(outputs, labels)`` form. K is the number of finest-level nodes of
    the hierarchy: the last K columns are the logits, the rest the representation.

    Cross-entropy is averaged over every view of the samples known at the finest level; a batch
    where none is known gives a zero that keeps the graph. With ``cpcc_weight=0`` it is plain
    cross-entropy on the logits.

    Args:
        hierarchy: the label tree the labels are encoded in.
        cpcc_weight: lambda >= 0.
        check_inputs: as for :class:`CPCCRegularizer`.

    Shape:
        outputs: (B, V, D + K) or (B, D + K) floating, D >= 1; labels: (B, L). Output: scalar.
    """

    def __init__(self, hierarchy: Hierarchy, cpcc_weight: float = 1.0, check_inputs: bool = True) -> None:
        super().__init__()
        self.regularizer = CPCCRegularizer(hierarchy, weight=cpcc_weight, check_inputs=check_inputs)
        self.num_classes = hierarchy.num_nodes(hierarchy.num_levels - 1)

    def forward(self, outputs: torch.Tensor, labels: Any, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        outputs, finest = self.regularizer.check(outputs, labels)
        if outputs.shape[2] <= self.num_classes:
            raise ValueError(
                f"outputs must hold the representation and {self.num_classes} logits (one per "
                f"finest-level class) in their last dimension, got shape {tuple(outputs.shape)}"
            )
        features, logits = outputs[..., : -self.num_classes], outputs[..., -self.num_classes :]
        target = finest.repeat_interleave(outputs.shape[1])
        known = target >= 0
        # A masked mean instead of ignore_index: no host sync, and no NaN when nothing is known.
        per_view = F.cross_entropy(logits.flatten(0, 1), target.clamp(min=0), reduction="none")
        cross_entropy = (per_view * known).sum() / known.sum().clamp(min=1)
        return cross_entropy + self.regularizer.term(features, finest)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"
