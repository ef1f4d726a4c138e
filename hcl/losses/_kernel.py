"""The one autograd primitive behind every paper-mode loss: shared log-sum-exp, group sums, in-group pairs.

With unit embeddings z, logits ``x_ij = z_i . z_j / t`` (diagonal excluded) and
``LSE_i = log sum_{a != i} exp(x_ia)``, the pair loss is ``ell(i, p) = LSE_i - x_ip``. A loss
that averages ``ell`` over positives is therefore a weighted sum of

* ``LSE_i``: one row log-sum-exp, shared by every level;
* ``sum_{p in P_l(i)} x_ip = z_i . (S_g - z_i) / t``, with S_g the sum of the embeddings of the
  anchor's level-l group g. The weight of an anchor's positives depends only on its group
  (``w_g``), so summed over anchors this is ``sum_g w_g |S_g|^2 - sum_i W_i |z_i|^2`` with
  ``W_i = sum_l w_{g_l(i)}``: O(L N D) for all levels, one compiled pass on CPUs each way,
  else one scatter-add per level (and one gather back per level in the backward pass);
* for the hierarchy constraint, ``max(ell(i,p), m_i) = LSE_i - min(x_ip, c_i)``: the plain sum
  less a term over the pairs inside each anchor's group (:mod:`hcl.losses._constraint`).

The L2 normalisation and the sort into group order happen inside, so the backward pass returns
the gradient of the raw features directly.

Gradient: with logits x = z z^T / t, z gets (G + G^T) z / t for G = d loss / d x. The LSE part
of G is ``u_i exp(x_ij - shift)``; with one shared shift (1/t, the largest possible logit) it is
symmetric up to the row factor, so G + G^T is built in one pass and one (N, N) x (N, D) product
suffices. The constraint part is symmetrised inside each group's block.

Memory: one (N, N) matrix survives the forward pass (the exponentials of the logits, which a
plain SupCon keeps as well); the backward pass scales it in place unless the graph is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from hcl.losses._constraint import build_constraint, compiled_for
from hcl.losses._normalize import unit_rows_and_norms
from hcl.losses.groups import ViewGroups

__all__ = ["hierarchical_contrastive"]

# Logits lie in [-1/t, 1/t]. Shifting all of them by 1/t keeps exp(logits - shift) symmetric and
# free of overflow; it is used while the smallest exponent, -2/t, stays clear of underflow.
_SHARED_SHIFT_RANGE = {torch.float32: 80.0, torch.float64: 700.0}

# In-place symmetric scaling in row blocks of about this many elements (1 MiB in float32).
_ROW_BLOCK_ELEMENTS = 1 << 18


def _graph_is_kept() -> bool:
    """Whether the running backward pass keeps the graph (``retain_graph=True``); True when the
    private PyTorch query is missing, the safe answer."""
    query = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if query is None else bool(query())


def _symmetric_scaling(exponentials: torch.Tensor, scale: torch.Tensor, in_place: bool) -> torch.Tensor:
    """``E_ij (scale_i + scale_j)``, for a symmetric E: on CPUs in place by a compiled loop, else
    in row blocks with small temporaries.

    In place (E is not needed again) no new (N, N) matrix is allocated: a fresh one costs more
    in page faults than the arithmetic.

    Shape:
        exponentials: (N, N); scale: (N,). Returns (N, N).
    """
    compiled = compiled_for(exponentials) if in_place else None
    if compiled is not None:
        return compiled.scale_symmetric_(exponentials, scale)
    out = exponentials if in_place else torch.empty_like(exponentials)
    step = max(1, _ROW_BLOCK_ELEMENTS // max(1, exponentials.shape[1]))
    for start in range(0, exponentials.shape[0], step):
        block = slice(start, start + step)
        torch.mul(exponentials[block], scale[block].unsqueeze(1) + scale.unsqueeze(0), out=out[block])
    return out


class _HierarchicalContrastive(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        features: torch.Tensor,
        inv_temperature: float,
        groups: ViewGroups,
        group_weight: torch.Tensor,
        constrained: bool,
        bound_gradient: bool,
        constraint_scale: float,
        combine: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        num_levels = len(groups.num_groups)
        unit, norm = unit_rows_and_norms(features)
        z, norm = unit.index_select(0, groups.rows), norm.index_select(0, groups.rows)
        logits = torch.mm(z * inv_temperature, z.t())
        logits.diagonal().fill_(float("-inf"))

        # Per view: W_i = sum_l w_{g_l(i)} and the LSE weight sum_l w_{g_l(i)} (|g_l(i)| - 1).
        per_group = torch.stack([group_weight, group_weight * (groups.group_size - 1).clamp(min=0)], dim=1)
        per_level = per_group[groups.global_group]  # (L, N, 2): each level's part of both
        own_weight, lse_weight = per_level.sum(dim=0).unbind(1)

        # Positive sums: sum_g w_g |S_g|^2 - sum_i W_i |z_i|^2, every level's group sums at once.
        compiled = compiled_for(z)
        if compiled is not None:
            sums = compiled.group_sums(z, groups.global_group, groups.group_size.shape[0])
        else:
            sums = z.new_zeros(groups.group_size.shape[0], z.shape[1])
            for level_group in groups.global_group:  # level by level: no (L N, D) copy of z
                sums.index_add_(0, level_group, z)
        squared_sums, squared_norms = (sums * sums).sum(dim=1), (z * z).sum(dim=1)
        weighted_squares = group_weight * squared_sums
        loss = -inv_temperature * (weighted_squares.sum() - torch.dot(own_weight, squared_norms))
        level_positive = z.new_zeros(num_levels).index_add_(0, groups.group_level, weighted_squares)
        level_terms = -inv_temperature * (level_positive - per_level[..., 0] @ squared_norms)

        constraint = None
        if constrained:
            constraint = build_constraint(logits, groups, group_weight, constraint_scale, bound_gradient)
            if constraint is not None:
                loss = loss + constraint.value
                level_terms = level_terms + constraint.level_values

        # One log-sum-exp per row, shared by all levels; the exponentials are kept for backward.
        shared_shift = 2 * inv_temperature <= _SHARED_SHIFT_RANGE.get(z.dtype, 80.0)
        if shared_shift:
            shift = logits.new_tensor(inv_temperature)
            exponentials = logits.sub_(inv_temperature).exp_()
        else:
            shift = logits.amax(dim=1)
            exponentials = logits.sub_(shift.unsqueeze(1)).exp_()
        row_sum = exponentials.sum(dim=1)
        log_partition = shift + row_sum.log()
        loss = loss + torch.dot(lse_weight, log_partition)
        level_terms = level_terms + per_level[..., 1] @ log_partition
        if combine is not None:
            # The loss is a combination of the level terms with weights known only now: the
            # backward pass then takes each level's weights times its multiplier.
            level_terms, multipliers = combine(level_terms)
            loss = level_terms.sum()
            group_weight = group_weight * multipliers.index_select(0, groups.group_level)
            own_weight, lse_weight = (per_level * multipliers.view(-1, 1, 1)).sum(dim=0).unbind(1)

        ctx.inv_temperature = inv_temperature
        ctx.groups = groups
        ctx.shared_shift = shared_shift
        ctx.bound_gradient = bound_gradient
        ctx.constraint = constraint  # holds tensors for the backward pass, none an input or output
        ctx.save_for_backward(z, norm, exponentials, row_sum, lse_weight, own_weight, group_weight, sums)
        ctx.mark_non_differentiable(level_terms)
        return loss, level_terms

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor, _grad_level_terms: torch.Tensor
    ) -> tuple:
        z, norm, exponentials, row_sum, lse_weight, own_weight, group_weight, sums = ctx.saved_tensors
        groups = ctx.groups

        # The LSE part of d loss / d logits is u_i E_ij; with a shared shift E is symmetric and
        # G + G^T = u_i E_ij + u_j E_ij, otherwise G^T z is a second product.
        if ctx.constraint is not None and not ctx.bound_gradient:
            # A pair held up by a constant bound contributes a constant: not even its LSE moves.
            lse_weight = lse_weight - ctx.constraint.held_weight()
        scale = grad_output * lse_weight / row_sum
        grad_z = None
        in_place = not _graph_is_kept()
        if ctx.shared_shift and in_place and ctx.constraint is not None and ctx.constraint.scales_rows:
            # The compiled constraint scales each row in place just before adding to it.
            grad_logits = exponentials
            ctx.constraint.add_gradient(grad_logits, grad_output, ctx.bound_gradient, scale=scale)
        else:
            if ctx.shared_shift:
                grad_logits = _symmetric_scaling(exponentials, scale, in_place=in_place)
            else:
                grad_logits = exponentials * scale.unsqueeze(1)
                grad_z = torch.mm(grad_logits.t(), z)
            if ctx.constraint is not None:
                ctx.constraint.add_gradient(grad_logits, grad_output, ctx.bound_gradient)

        product = torch.mm(grad_logits, z)
        grad_z = product if grad_z is None else grad_z.add_(product)

        # Positive sums: d/dz_j is 2 sum_l w_{g_l(j)} S_{g_l(j)} - 2 W_j z_j.
        compiled = compiled_for(z)
        if compiled is not None:
            compiled.subtract_positive_part_(
                grad_z, z, sums, group_weight, own_weight, groups.global_group, 2 * float(grad_output)
            )
        else:
            weighted_sums = sums * (group_weight * (2 * grad_output)).unsqueeze(1)
            positive_grad = torch.mul(z, (own_weight * (-2 * grad_output)).unsqueeze(1))
            for level_group in groups.global_group:
                positive_grad.add_(weighted_sums.index_select(0, level_group))
            grad_z.sub_(positive_grad)
        grad_z.mul_(ctx.inv_temperature)

        # Through the normalisation z = x / |x| and back to the caller's row order.
        grad_z.addcmul_(z, (z * grad_z).sum(dim=1, keepdim=True), value=-1).div_(norm.unsqueeze(1))
        grad_features = torch.empty_like(grad_z).index_copy_(0, groups.rows, grad_z)
        return grad_features, None, None, None, None, None, None, None


def hierarchical_contrastive(
    features: torch.Tensor,
    temperature: float,
    groups: ViewGroups,
    group_weight: torch.Tensor,
    constrained: bool,
    bound_gradient: bool = True,
    constraint_scale: float = 1.0,
    combine: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum of per-anchor contrastive terms over all levels, with a hand-written backward.

    Computes ``sum_i lse_i LSE_i - sum_l sum_i w_{g_l(i)} sum_{p in P_l(i)} y_lip`` on the
    L2-normalised features, with ``y = x_ip``, or ``min(x_ip, c_li)`` when ``constrained`` (c as
    in the module docstring) and ``lse_i = sum_l w_{g_l(i)} |P_l(i)|``. Callers choose the
    weights: ``w_g = lambda_l / (L |A_l| (|g| - 1))`` for groups with positives give the paper's
    HiMulCon.

    The same pass splits the sum by level: the part of the groups of level l, with the LSE
    weights of that level, comes out as ``level_terms[l]`` (no gradient). The parts add up to
    the loss up to rounding; the loss itself is summed as a whole.

    Args:
        features: raw embeddings, sample-major views (normalised here).
        temperature: t > 0.
        groups: the groups of every level (see :func:`hcl.losses.groups.build_view_groups`).
        group_weight: the weight of every group of every level, level 0's first (0: skipped).
        constrained: apply the hierarchy constraint against the next finer level.
        bound_gradient: differentiate the constraint as written; False holds the bound
            ``m_i = LSE_i - c_i`` constant, so a pair held up by it gets no gradient at all.
        constraint_scale: ``beta``, the constraint's part (value and gradient) scaled by it: with
            the bound held, ``ell(i,p) + beta * relu(m_i - ell(i,p))``, the ``"hinge"`` reading
            of :mod:`hcl.losses.constraints` (1: ``"pair_held"``; 0: no constraint).
        combine: unconstrained only: maps the (L,) level terms to the terms the loss sums and
            (L,) multipliers, the derivative of that sum with respect to each level term (as
            for ``"level_max"``'s running maximum); the gradient is then each level's part times
            its multiplier.

    Shape:
        features: (N, D) with N >= 2; group_weight: (sum_l num_groups_l,). Returns the loss, a
        scalar, and ``level_terms``, (L,).
    """
    if combine is not None and constrained:
        raise ValueError("combine re-weights the level terms of an unconstrained loss; constrained must be False")
    return _HierarchicalContrastive.apply(
        features, 1.0 / temperature, groups, group_weight, constrained, bound_gradient, constraint_scale, combine
    )
