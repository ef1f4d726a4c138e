"""Cross-entropy with hierarchy-aware soft labels (Bertinetto et al., CVPR 2020)."""

from __future__ import annotations

from typing import Any

import torch
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

__all__ = ["SoftLabelCrossEntropy"]


class SoftLabelCrossEntropy(nn.Module):
    """Cross-entropy against soft targets that spread mass over classes close in the tree.

    Bertinetto, Mueller, Tertikas, Samangooei and Lord, "Making Better Mistakes: Leveraging
    Class Hierarchies with Deep Networks" (CVPR 2020), the "soft labels" loss. For a sample of
    finest-level class t, the target over the K finest-level classes is

        y(c) = exp(-beta * d(c, t)) / sum_c' exp(-beta * d(c', t)),

    where d(c, t) is the height of the lowest common ancestor of c and t: ``L - s`` levels for a
    shared label prefix of length ``s`` (0 for c = t, 1 for a sibling, L under different roots),
    the height :func:`hcl.metrics.mistake_severity` reports. As in the authors' code, d is
    divided by its largest value over all pairs of finest-level classes, so beta does not depend
    on the depth of the tree; the paper reports beta from 4 to 30, and the default 10 lies in
    that range. As beta grows the targets become one-hot and the loss becomes plain
    cross-entropy on the finest label.

    The loss is ``-sum_c y(c) log softmax(z)_c`` averaged over every view of the samples known
    at the finest level; samples unknown there (-1) are ignored, and a batch where none is known
    gives a zero that keeps the graph.

    Args:
        hierarchy: the label tree the labels are encoded in; the logits cover its finest level.
        beta: the hardness beta > 0.
        check_inputs: check that the logits are finite and the labels valid in the hierarchy
            (on a GPU a host sync).

    Shape:
        logits: (B, V, K) or (B, K) floating, K = ``hierarchy.num_nodes(L - 1)``;
        labels: (B, L) int64 in ``hierarchy``'s encoding. Output: scalar.
    """

    def __init__(self, hierarchy: Hierarchy, beta: float = 10.0, check_inputs: bool = True) -> None:
        super().__init__()
        self.hierarchy = check_hierarchy(hierarchy)
        self.beta = check_real(beta, "beta", positive=True)
        self.check_inputs = bool(check_inputs)
        rows = hierarchy.node_labels(hierarchy.num_levels - 1)
        self.register_buffer("class_rows", rows, persistent=False)
        self.num_classes = len(rows)
        # Classes share their ancestors on the levels where every column is constant; the
        # largest LCA height is over the rest (0 for a single class: nothing to normalise).
        constant = (rows == rows[:1]).all(dim=0).to(torch.int64).cumprod(dim=0).sum() if len(rows) else 0
        self.max_height = max(int(hierarchy.num_levels - constant), 1)

    def soft_targets(self, finest: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The soft target of each class id; rows of unknown (-1) samples are meaningless.

        Shape:
            finest: (N,) finest-level node ids. Returns (N, K), rows summing to 1.
        """
        rows = self.class_rows.to(finest.device)
        shared = shared_prefix_length(rows[finest.clamp(min=0)][:, None, :], rows[None, :, :])
        height = (rows.shape[1] - shared).to(dtype) / self.max_height
        return torch.softmax(-self.beta * height, dim=1)

    def forward(self, logits: torch.Tensor, labels: Any, indices_tuple: Any = None) -> torch.Tensor:
        """The loss of the batch. ``indices_tuple`` is pytorch-metric-learning's hook for a miner's
        pairs; every pair of the batch counts here, so it must be None (else ValueError)."""
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        logits = check_features(logits, finite=self.check_inputs)
        if logits.shape[2] != self.num_classes:
            raise ValueError(
                f"logits must have one column per finest-level class ({self.num_classes}), "
                f"got shape {tuple(logits.shape)}"
            )
        finest = check_finest_labels(labels, logits.shape[0], logits.device, self.hierarchy, self.check_inputs)
        target = finest.repeat_interleave(logits.shape[1])
        known = target >= 0
        flat = logits.flatten(0, 1)
        per_view = -(self.soft_targets(target, flat.dtype) * torch.log_softmax(flat, dim=1)).sum(dim=1)
        # A masked mean: no host sync, and no NaN when nothing is known.
        return (per_view * known).sum() / known.sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, num_classes={self.num_classes}"
