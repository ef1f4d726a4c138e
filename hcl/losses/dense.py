"""The paper-mode losses as a few dense (L, N, N) operations, for GPUs.

On a GPU the grouped kernel (:mod:`hcl.losses._kernel`) is bound by its many small kernel
launches and the host syncs that size its blocks, not by arithmetic. Here every level's positive
mask is one (L, N, N) comparison, and the loss is built from about thirty whole-tensor operations
with no host sync or host-to-device copy, differentiated by autograd, so that it can also be
captured as a CUDA graph (:class:`hcl.losses.graphed.CUDAGraphLoss`). The memory is a few (L, N, N) tensors, which
:func:`dense_fits` bounds. The definitions are those of :mod:`hcl.losses.functional`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hcl.losses._normalize import unit_rows

__all__ = ["DENSE_MAX_ELEMENTS", "dense_fits", "dense_paper_loss"]

# The largest L * N * N the dense form takes on (about 0.5 GiB per float32 (L, N, N) tensor).
DENSE_MAX_ELEMENTS = 1 << 27


def dense_fits(num_views: int, num_levels: int, device: torch.device) -> bool:
    """Whether :func:`dense_paper_loss` is the better choice: on CUDA, while (L, N, N) is small."""
    return device.type == "cuda" and num_levels * num_views * num_views <= DENSE_MAX_ELEMENTS


def dense_paper_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    level_weights: Sequence[float],
    constrained: bool,
    bound_gradient: bool = True,
    constraint_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper-mode loss on validated inputs, 0 (with a zero gradient) when nothing has a
    positive, and its per-level terms ``lambda_l * T_l / L`` (detached). ``constraint_scale``:
    as for :func:`hcl.losses._kernel.hierarchical_contrastive`.

    Shape:
        features: (B, V, D) floating; labels: (B, L) int64; level_weights: L floats. Returns a
        scalar and an (L,) tensor.
    """
    num_samples, num_views, dim = features.shape
    num_levels = labels.shape[1]
    n = num_samples * num_views
    z = unit_rows(features.reshape(n, dim))
    rows = labels.repeat_interleave(num_views, dim=0).t()  # (L, N), views sample-major
    # Same known prefix 0..l: equal at every level up to l, and known (-1 stops a path).
    same = (rows.unsqueeze(2) == rows.unsqueeze(1)).cumprod(dim=0, dtype=torch.uint8).bool()
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    positive = same & (rows >= 0).unsqueeze(2) & not_self  # (L, N, N)

    cosine_logits = z @ z.t() / temperature
    lse = torch.logsumexp(cosine_logits.masked_fill(~not_self, float("-inf")), dim=1)  # (N,)
    count = positive.sum(dim=2).to(z.dtype)  # |P_l(i)|, (L, N)
    positive_sum = torch.where(positive, cosine_logits, 0).sum(dim=2)  # (L, N)
    # Per anchor and level: sum over p of ell(i, p) = |P| LSE_i - sum_p x_ip.
    terms = count * lse - positive_sum

    if constrained and num_levels > 1:
        # c_i: the smallest logit over the next finer level's positives (+inf: no bound there).
        bound = torch.where(positive[1:], cosine_logits, float("inf")).amin(dim=2)  # (L-1, N)
        coarse = positive[:-1]
        gap = cosine_logits - bound.unsqueeze(2)
        if bound_gradient:
            # max(ell(i,p), m_i) = ell(i,p) + relu(x_ip - c_i).
            excess = torch.where(coarse, gap.clamp(min=0), 0).sum(dim=2)
        else:
            # Pairs above the bound take the constant m_i = LSE_i - c_i instead of ell(i, p).
            held = coarse & (gap > 0)
            num_held = held.sum(dim=2).to(z.dtype)
            held_sum = torch.where(held, cosine_logits, 0).sum(dim=2)
            bound_loss = torch.where(num_held > 0, lse - bound, 0).detach()
            excess = num_held * bound_loss - (num_held * lse - held_sum)
        terms = torch.cat([terms[:-1] + constraint_scale * excess, terms[-1:]])

    anchors = count > 0
    num_anchors = anchors.sum(dim=1).clamp(min=1)
    per_level = torch.where(anchors, terms / count.clamp(min=1), 0).sum(dim=1) / num_anchors  # T_l, (L,)
    # The weights as Python numbers: a host-to-device copy could not be captured in a CUDA graph.
    weighted = [weight * per_level[level] for level, weight in enumerate(level_weights)]
    return sum(weighted) / num_levels, torch.stack(weighted).detach() / num_levels
