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
  inside the anchor's group: the views are sorted so that every group is a contiguous range,
  and a level's in-group pairs are visited either as one (N, largest group) gathered block
  (many small groups) or group by group as square slices of the logits (few large groups).

Gradient: with logits x = z z^T / t, z gets (G + G^T) z / t for G = d loss / d x. The LSE part
of G is ``u_i exp(x_ij - shift_i)``; with one shared shift it is symmetric up to the row factor,
so G + G^T is built in one pass and one (N, N) x (N, D) product suffices. The constraint part is
symmetrised inside each group's block.

Memory: one (N, N) matrix survives the forward pass (the exponentials of the logits, which a
plain SupCon keeps as well), one more is built in the backward pass, plus one bool per in-group
pair of each constrained level (which pairs exceed their bound).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from hcl.losses.groups import LevelGroups, ViewGroups

__all__ = ["pairwise_contrastive"]

# A shared shift of all logits keeps exp(logits - shift) symmetric. It is used while every row's
# largest entry stays far from underflow: row maxima within this many units of the global one.
_SHARED_SHIFT_SPREAD = {torch.float32: 60.0, torch.float64: 600.0}

# A level is visited group by group (square slices) when its largest group has at least this
# many views and it has at most max(8, N * _SLICE_GROUPS_PER_VIEW) groups with positives.
_SLICE_MIN_SIZE = 32
_SLICE_GROUPS_PER_VIEW = 1 / 128


def _group_sums(values: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of ``values`` over each group. Shape: values (N, D), group (N,); returns (G, D)."""
    return values.new_zeros(num_groups, values.shape[1]).index_add_(0, group, values)


def _by_group(level: LevelGroups, n: int) -> list[tuple[int, int]] | None:
    """The level's group spans when few large groups make square slices cheaper than a gathered
    (N, max_size) block (each slice costs a few Python-level ops), else None."""
    if level.max_size < _SLICE_MIN_SIZE:
        return None
    spans = level.spans()
    return spans if len(spans) <= max(8, n * _SLICE_GROUPS_PER_VIEW) else None


def _constraint_forward(
    logits: torch.Tensor,
    level: LevelGroups,
    bound: torch.Tensor | None,
    need_bound: bool,
    spans: list[tuple[int, int]] | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """One level's in-group pass: the excess ``R_i`` over ``bound`` and the next level's bound.

    Returns ``(excess, count, above, next_bound, next_column)``: ``excess`` (N,) is
    ``sum_p relu(x_ip - bound_i)`` over i's group and ``count`` (N,) the number of pairs
    above the bound (both None without a bound); ``above`` the bool blocks of those pairs;
    ``next_bound`` (N,) the minimum logit over i's group, excluding i (+inf without a
    positive) and ``next_column`` its column, when ``need_bound``.
    """
    n = logits.shape[0]
    excess = count = next_bound = next_column = None
    above: list[torch.Tensor] = []
    if spans is None:
        columns = level.block_index()
        # The anchor itself (diagonal) and the padding are -inf: inert in every term.
        blocks = [logits.gather(1, columns).masked_fill_(level.block_padding(), float("-inf"))]
        ranges = [(0, n)]
    else:
        blocks = [logits[start:stop, start:stop] for start, stop in spans]
        ranges = spans
    if need_bound:
        next_bound = logits.new_full((n,), float("inf"))
        next_column = torch.zeros(n, dtype=torch.int64, device=logits.device)
    if bound is not None:
        excess = logits.new_zeros(n)
        count = logits.new_zeros(n)
    for (start, stop), block in zip(ranges, blocks):
        if need_bound:
            # -inf (self, padding) counts as +inf for the minimum. (argmin: min(dim) is
            # pathologically slow on small CPU inputs.)
            finite = block.nan_to_num(neginf=float("inf"))
            position = finite.argmin(dim=1, keepdim=True)
            next_bound[start:stop] = finite.gather(1, position).squeeze(1)
            next_column[start:stop] = (
                columns.gather(1, position).squeeze(1) if spans is None else position.squeeze(1) + start
            )
        if bound is not None:
            clipped = (block - bound[start:stop].unsqueeze(1)).clamp_(min=0)
            excess[start:stop] = clipped.sum(dim=1)
            above.append(clipped > 0)
            count[start:stop] = above[-1].sum(dim=1)
    return excess, count, above, next_bound, next_column


def _constraint_backward(
    grad_logits: torch.Tensor,
    level: LevelGroups,
    above: list[torch.Tensor],
    coefficient: torch.Tensor,
    spans: list[tuple[int, int]] | None,
) -> None:
    """Add ``B + B^T`` to ``grad_logits``, B the in-group gradient ``coefficient_i * above_ip``."""
    if spans is not None:
        for (start, stop), pairs in zip(spans, above):
            block = pairs * coefficient[start:stop].unsqueeze(1)
            square = grad_logits[start:stop, start:stop]
            square += block
            square += block.t()
        return
    n = grad_logits.shape[0]
    block = above[0] * coefficient.unsqueeze(1)
    columns = level.block_index()
    # Views of a group share one block row: entry (i, r) is pair (i, start_i + r), whose
    # transpose sits in row start_i + r at position i - start_i.
    rows = torch.arange(n, device=grad_logits.device)
    partner = (columns * level.max_size).add_((rows - level.start).unsqueeze(1))
    transposed = block.view(-1).index_select(0, partner.view(-1)).view_as(block)
    transposed.masked_fill_(level.block_padding(), 0)
    grad_logits.scatter_add_(1, columns, transposed.add_(block))


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

        # Constraint terms, finest level first: level l+1's groups give the bounds of level l.
        constrained_levels, spans_kept, above_kept, counts, bound_columns = [], [], [], [], []
        if constrained:
            bound = bound_column = None
            for index in reversed(range(len(groups.levels))):
                level = groups.levels[index]
                if level.max_size < 2 or (index == 0 and bound is None):
                    # No positive at this level: no term here and no bound for the level above.
                    bound = bound_column = None
                    continue
                spans = _by_group(level, n)
                excess, count, above, next_bound, next_column = _constraint_forward(
                    logits, level, bound, index > 0, spans
                )
                if excess is not None:
                    loss = loss + torch.dot(positive_weight[index], excess)
                    constrained_levels.append(index)
                    spans_kept.append(spans)
                    above_kept.append(above)
                    counts.append(count)
                    bound_columns.append(bound_column)
                bound, bound_column = next_bound, next_column

        # One log-sum-exp per row, shared by all levels; the exponentials are kept for backward.
        row_max = logits.amax(dim=1)
        top = row_max.max()
        shared_shift = bool(top - row_max.min() <= _SHARED_SHIFT_SPREAD.get(z.dtype, 60.0))
        shift = top if shared_shift else row_max
        exponentials = logits.sub_(shift if shared_shift else shift.unsqueeze(1)).exp_()
        row_sum = exponentials.sum(dim=1)
        loss = loss + torch.dot(lse_weight, shift + row_sum.log())

        ctx.inv_temperature = inv_temperature
        ctx.groups = groups
        ctx.constrained_levels = constrained_levels
        ctx.spans = spans_kept
        ctx.num_above = [len(above) for above in above_kept]
        ctx.shared_shift = shared_shift
        ctx.save_for_backward(
            z,
            exponentials,
            row_sum,
            lse_weight,
            positive_weight,
            *sums,
            *weighted_sums,
            *counts,
            *bound_columns,
            *[pairs for above in above_kept for pairs in above],
        )
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        z, exponentials, row_sum, lse_weight, positive_weight, *rest = ctx.saved_tensors
        groups = ctx.groups
        num_levels, num_constrained = len(groups.levels), len(ctx.constrained_levels)
        sums, rest = rest[:num_levels], rest[num_levels:]
        weighted_sums, rest = rest[:num_levels], rest[num_levels:]
        counts, rest = rest[:num_constrained], rest[num_constrained:]
        bound_columns, rest = rest[:num_constrained], rest[num_constrained:]
        above_kept = []
        for count in ctx.num_above:
            above_kept.append(rest[:count])
            rest = rest[count:]
        n = z.shape[0]
        rows = torch.arange(n, device=z.device)

        # The LSE part of d loss / d logits is u_i E_ij; with a shared shift E is symmetric and
        # G + G^T = u_i E_ij + u_j E_ij, otherwise G^T z is a second product.
        scale = grad_output * lse_weight / row_sum
        grad_logits = exponentials * scale.unsqueeze(1)
        grad_z = None
        if ctx.shared_shift:
            grad_logits.addcmul_(exponentials, scale.unsqueeze(0))
        else:
            grad_z = torch.mm(grad_logits.t(), z)

        # Constraint part: +w_i on the in-group pairs above i's bound, -w_i times their number on
        # the bound's own pair, both symmetrised.
        for index, spans, above, count, bound_column in zip(
            ctx.constrained_levels, ctx.spans, above_kept, counts, bound_columns
        ):
            coefficient = grad_output * positive_weight[index]
            _constraint_backward(grad_logits, groups.levels[index], above, coefficient, spans)
            at_bound = -coefficient * count
            grad_logits.index_put_((rows, bound_column), at_bound, accumulate=True)
            grad_logits.index_put_((bound_column, rows), at_bound, accumulate=True)

        product = torch.mm(grad_logits, z)
        grad_z = product if grad_z is None else grad_z.add_(product)

        # Positive sums: d/dz_j of w_li z_i . (S_g - z_i) summed is w_lj S_g + C_g - 2 w_lj z_j.
        positive_grad = positive_weight.sum(dim=0).unsqueeze(1) * z * -2
        for level, weight, level_sums, level_weighted in zip(groups.levels, positive_weight, sums, weighted_sums):
            positive_grad += weight.unsqueeze(1) * level_sums.index_select(0, level.group)
            positive_grad += level_weighted.index_select(0, level.group)
        grad_z -= grad_output * positive_grad
        return grad_z.mul_(ctx.inv_temperature), None, None, None, None, None


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
