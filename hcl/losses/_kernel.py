"""The one autograd primitive behind every loss: shared log-sum-exp, group sums, in-group pairs.

With unit embeddings z, logits ``x_ij = z_i . z_j / t`` (diagonal excluded) and
``LSE_i = log sum_{a != i} exp(x_ia)``, the pair loss is ``ell(i, p) = LSE_i - x_ip``. A loss
that averages ``ell`` over positives is therefore a weighted sum of

* ``LSE_i``: one row log-sum-exp, shared by every level;
* ``sum_{p in P_l(i)} x_ip = z_i . (S_g - z_i) / t``, with S_g the sum of the embeddings of the
  anchor's level-l group g. Summed over anchors with weights w this is
  ``sum_g C_g . S_g - sum_i w_i |z_i|^2`` (C_g the w-weighted group sum): O(N D) per level;
* for the hierarchy constraint, ``max(ell(i,p), m_i) = LSE_i - min(x_ip, c_i)`` with
  ``c_i = min_{q in P_{l+1}(i)} x_iq``, and ``sum_p min(x_ip, c_i)`` is the plain sum minus
  ``R_i = sum_{p in P_l(i)} relu(x_ip - c_i)``. Both ``c_i`` and ``R_i`` only involve pairs
  inside the anchor's group, which :class:`hcl.losses.groups.LevelGroups` lays out
  contiguously, so only (N, largest group) blocks are gathered.

Memory: one (N, N) matrix survives the forward pass (the exponentials of the logits, turned into
the softmax gradient in the backward pass, as a plain SupCon keeps), plus, per constrained
level, one bool per in-group pair (which pairs exceed their bound) and, when they fit in the
size of one (N, N) float matrix, the in-group column indices.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from hcl.losses.groups import ViewGroups

__all__ = ["pairwise_contrastive"]


def _group_sums(values: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of ``values`` over each group. Shape: values (N, D), group (N,); returns (G, D)."""
    return values.new_zeros(num_groups, values.shape[1]).index_add_(0, group, values)


class _PairwiseContrastive(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        inv_temperature: float,
        lse_weight: torch.Tensor,
        positive_weight: torch.Tensor,
        groups: ViewGroups,
        constrained: bool,
    ) -> torch.Tensor:
        n = z.shape[0]
        logits = torch.mm(z * inv_temperature, z.t())
        logits.diagonal().fill_(float("-inf"))

        # Positive sums, per level: sum_g C_g . S_g - sum_i w_i |z_i|^2.
        squared_norm = (z * z).sum(dim=1)
        sums, weighted_sums = [], []
        positive_total = -torch.dot(positive_weight.sum(dim=0), squared_norm)
        for level, weight in zip(groups.levels, positive_weight):
            sums.append(_group_sums(z, level.group, level.num_groups))
            weighted_sums.append(_group_sums(z * weight.unsqueeze(1), level.group, level.num_groups))
            positive_total = positive_total + (sums[-1] * weighted_sums[-1]).sum()
        loss = -inv_temperature * positive_total

        # Constraint terms, finest level first: level l+1's blocks give the bounds of level l.
        constrained_levels, columns_kept, above_kept, bound_columns = [], [], [], []
        if constrained:
            index_budget = n * n // 2  # int64 indices kept for backward: at most one float32 (N, N)
            bound = bound_column = None
            for index in reversed(range(len(groups.levels))):
                level = groups.levels[index]
                if level.max_size < 2 or (index == 0 and bound is None):
                    # No positive at this level: no term here and no bound for the level above.
                    bound = bound_column = None
                    continue
                columns = level.block_index()
                block = logits.gather(1, columns)
                next_bound = next_column = None
                if index > 0:
                    # The anchor itself and the padding are -inf: excluded from the minimum.
                    # (argmin, not min(dim): the latter is pathologically slow on small CPU inputs.)
                    finite = torch.where(block == float("-inf"), float("inf"), block)
                    position = finite.argmin(dim=1, keepdim=True)
                    next_bound = finite.gather(1, position).squeeze(1)
                    next_column = columns.gather(1, position).squeeze(1)
                if bound is not None:
                    excess = block.sub_(bound.unsqueeze(1)).clamp_(min=0)
                    loss = loss + torch.dot(positive_weight[index], excess.sum(dim=1))
                    constrained_levels.append(index)
                    above_kept.append(excess > 0)
                    bound_columns.append(bound_column)
                    keep = columns.numel() <= index_budget
                    index_budget -= columns.numel() if keep else 0
                    columns_kept.append(columns if keep else None)
                bound, bound_column = next_bound, next_column

        # One log-sum-exp per row, shared by all levels; the exponentials are kept for backward.
        row_max = logits.amax(dim=1, keepdim=True)
        exponentials = logits.sub_(row_max).exp_()
        row_sum = exponentials.sum(dim=1)
        lse = row_max.squeeze(1) + row_sum.log()
        loss = loss + torch.dot(lse_weight, lse)

        ctx.inv_temperature = inv_temperature
        ctx.groups = groups
        ctx.constrained_levels = constrained_levels
        ctx.columns = columns_kept
        ctx.save_for_backward(
            z, exponentials, row_sum, lse_weight, positive_weight, *sums, *weighted_sums, *above_kept, *bound_columns
        )
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        z, exponentials, row_sum, lse_weight, positive_weight, *rest = ctx.saved_tensors
        groups = ctx.groups
        num_levels = len(groups.levels)
        num_constrained = len(ctx.constrained_levels)
        sums, weighted_sums = rest[:num_levels], rest[num_levels : 2 * num_levels]
        above_kept = rest[2 * num_levels : 2 * num_levels + num_constrained]
        bound_columns = rest[2 * num_levels + num_constrained :]
        inv_t = ctx.inv_temperature
        n = z.shape[0]

        # d loss / d logits: every row's softmax, weighted by its LSE coefficient ...
        grad_logits = exponentials * (grad_output * lse_weight / row_sum).unsqueeze(1)
        # ... plus, per constrained level, +w on the in-group pairs above the anchor's bound and
        # -w times their number on the bound's own pair.
        for index, columns, above, bound_column in zip(ctx.constrained_levels, ctx.columns, above_kept, bound_columns):
            if columns is None:
                columns = groups.levels[index].block_index()
            coefficient = grad_output * positive_weight[index]
            grad_logits.scatter_add_(1, columns, above.to(z.dtype).mul_(coefficient.unsqueeze(1)))
            flat = torch.arange(n, device=z.device) * n + bound_column
            grad_logits.view(-1).index_add_(0, flat, -coefficient * above.sum(dim=1))
        # logits = z z^T / t: both factors get a gradient; BLAS reads the transpose in place.
        grad_z = torch.mm(grad_logits, z).addmm_(grad_logits.t(), z)

        # Positive sums: d/dz_j of w_li z_i . (S_g - z_i) summed is w_lj S_g + C_g - 2 w_lj z_j.
        positive_grad = positive_weight.sum(dim=0).unsqueeze(1) * z * -2
        for level, weight, level_sums, level_weighted in zip(groups.levels, positive_weight, sums, weighted_sums):
            positive_grad += weight.unsqueeze(1) * level_sums.index_select(0, level.group)
            positive_grad += level_weighted.index_select(0, level.group)
        grad_z -= grad_output * positive_grad
        return grad_z.mul_(inv_t), None, None, None, None, None


def pairwise_contrastive(
    z: torch.Tensor,
    temperature: float,
    lse_weight: torch.Tensor,
    positive_weight: torch.Tensor,
    groups: ViewGroups,
    constrained: bool,
) -> torch.Tensor:
    """Weighted sum of per-anchor contrastive terms over all levels, with a hand-written backward.

    Computes ``sum_i lse_weight_i LSE_i - sum_l sum_i w_li sum_{p in P_l(i)} y_lip`` with
    ``y = x_ip``, or ``min(x_ip, c_li)`` when ``constrained`` (c as in the module docstring).
    Callers choose the weights: ``w_li = lambda_l / (L |A_l| |P_l(i)|)`` on anchors with
    positives and ``lse_weight_i = sum_l |P_l(i)| w_li`` give the paper's HiMulCon.

    Args:
        z: unit embeddings in prefix-sorted order (``groups.rows``).
        temperature: t > 0.
        lse_weight: coefficient of each anchor's log-sum-exp.
        positive_weight: per level, the coefficient of each anchor's positive sum (0: skipped).
        groups: the groups of every level (see :func:`hcl.losses.groups.build_view_groups`).
        constrained: apply the hierarchy constraint against the next finer level.

    Shape:
        z: (N, D) with N >= 2; lse_weight: (N,); positive_weight: (L, N). Returns a scalar.
    """
    return _PairwiseContrastive.apply(z, 1.0 / temperature, lse_weight, positive_weight, groups, constrained)
