"""The paper's flat baselines as training objectives over hierarchical labels.

Each is called as ``objective(outputs, labels)`` with the (B, L) hierarchical labels the
training loop gives every loss, and uses what it needs of them: SupCon the finest label,
SimCLR none, cross-entropy the finest level's node ids. Like the modules the loss table builds
for training (:mod:`hcl.losses.registry`), they skip the input checks that would make the host
wait for the GPU; the training step checks the loss value itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hcl.labels import prefix_ids
from hcl.losses._checks import check_no_indices_tuple
from hcl.losses.supcon import SupConLoss

__all__ = ["CrossEntropyFinest", "SimCLRObjective", "SupConFinest"]


class SupConFinest(nn.Module):
    """The SupCon baseline: supervised contrastive loss on the finest label only.

    The finest label is taken as the full label prefix (:func:`hcl.labels.prefix_ids`), so raw
    ids repeated under different parents are not confused; samples whose finest level is unknown
    are anchors without positives (skipped).

    Args:
        temperature: t > 0.

    Shape:
        outputs: (B, V, D); labels: (B, L). Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        self.loss = SupConLoss(temperature=temperature, check_inputs=False)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        return self.loss(outputs, prefix_ids(labels)[:, -1:])


class SimCLRObjective(nn.Module):
    """The SimCLR baseline (NT-Xent): each sample is its own class; labels are ignored.

    Implemented as SupCon with every sample its own label, so the positives of a view are the
    other views of the same image. Needs V >= 2 views.

    Args:
        temperature: t > 0.

    Shape:
        outputs: (B, V, D), V >= 2; labels: (B, L), unused. Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        self.loss = SupConLoss(temperature=temperature, check_inputs=False)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        if outputs.dim() != 3 or outputs.shape[1] < 2:
            raise ValueError(f"SimCLR needs outputs of shape (B, V >= 2, D), got {tuple(outputs.shape)}")
        return self.loss(outputs, torch.arange(outputs.shape[0], device=outputs.device))


class CrossEntropyFinest(nn.Module):
    """The cross-entropy baseline: a classifier on the finest level's node ids.

    Labels' finest column holds the node id at level L-1 (ids are global per level, see
    :class:`hcl.Hierarchy`); samples unknown there are ignored. A batch where every sample is
    unknown returns a zero that keeps the graph.

    Shape:
        outputs: (B, V, K) logits; labels: (B, L). Returns a scalar.
    """

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        if outputs.dim() != 3:
            raise ValueError(f"cross-entropy needs logits of shape (B, V, K), got {tuple(outputs.shape)}")
        target = labels[:, -1].repeat_interleave(outputs.shape[1])
        if not bool((target >= 0).any()):
            return outputs.sum() * 0
        if int(target.max()) >= outputs.shape[2]:
            raise ValueError(f"finest label {int(target.max())} is out of range for {outputs.shape[2]} classes")
        return F.cross_entropy(outputs.flatten(0, 1).float(), target, ignore_index=-1)
