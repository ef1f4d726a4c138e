"""Flat supervised contrastive loss, the one-level special case of the hierarchical losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hcl.losses._checks import check_no_indices_tuple, check_temperature
from hcl.losses.functional import supcon_loss

__all__ = ["SupConLoss"]


class SupConLoss(nn.Module):
    """Supervised contrastive loss over all views (Khosla et al., NeurIPS 2020, arXiv 2004.11362).

    Every one of the B*V views is an anchor; its positives are the other views with the same
    label (the other views of its own sample included) and its denominator runs over all other
    B*V - 1 views. The loss is the mean, over anchors with at least one positive, of the mean of
    ``-log(exp(s_ip/t) / sum_{a != i} exp(s_ia/t))`` over the anchor's positives, with s the
    cosine similarity. It equals ``HiMulCon(level_weights=[1])`` on one-level labels, and
    pytorch-metric-learning's ``SupConLoss(temperature)`` on the flattened views.

    Degenerate cases: an anchor labelled -1 (unknown) or without positives is skipped; a batch
    without any positive pair (one view per sample and distinct labels, a single sample with a
    single view) returns ``features.sum() * 0``, a zero that keeps the graph.

    Args:
        temperature: t > 0.
        check_inputs: check that the features are finite and the labels valid (on a GPU a host
            sync; see :func:`hcl.losses.functional.hierarchical_contrastive_loss`).

    Shape:
        features: (B, V, D) or (B, D) floating, L2-normalised inside (idempotent).
        labels: (B,) or (B, 1) integers, -1 for unknown.
        Output: scalar.
    """

    def __init__(self, temperature: float = 0.1, check_inputs: bool = True) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.check_inputs = bool(check_inputs)

    def forward(self, features: torch.Tensor, labels: Any, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        return supcon_loss(features, labels, temperature=self.temperature, check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
