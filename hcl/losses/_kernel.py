"""The one autograd primitive behind every paper-mode loss: shared log-sum-exp, group sums, in-group pairs.

With unit embeddings z, logits ``x_ij = z_i . z_j / t`` (diagonal excluded) and
``LSE_i = log sum_{a != i} exp(x_ia)``, the pair loss is ``ell(i, p) = LSE_i - x_ip``. A loss
that averages ``ell`` over positives is therefore a weighted sum of

* ``LSE_i``: one row log-sum-exp, shared by every level;
* ``sum_{p in P_l(i)} x_ip = z_i . (S_g - z_i) / t``, with S_g the sum of the embeddings of the
  anchor's level-l group g. The weight of an anchor's positives depends only on its group
  (``w_g``), so summed over anchors this is ``sum_g w_g |S_g|^2 - sum_i W_i |z_i|^2`` with
  ``W_i = sum_l w_{g_l(i)}``: O(N D) for all levels, since the groups nest and a level's sums are
  the sums of the finer level's;
* for the hierarchy constraint, ``max(ell(i,p), m_i) = LSE_i - min(x_ip, c_i)`` with
  ``c_i = min_{q in P_{l+1}(i)} x_iq``, and ``sum_p min(x_ip, c_i)`` is the plain sum minus
  ``R_i = sum_{p in P_l(i)} relu(x_ip - c_i)``. Both ``c_i`` and ``R_i`` only involve pairs
  inside the anchor's group: the views are sorted so that every group is a contiguous range of
  columns. On CPUs two compiled loops over rows (:mod:`hcl.losses._compiled`) visit those
  ranges; on GPUs (and without numba) array ops visit a level's in-group pairs either as one
  (N, largest group) gathered block (many small groups) or group by group as square slices of
  the logits (few large groups).

The L2 normalisation and the sort into group order happen inside, so the backward pass returns
the gradient of the raw features directly.

Gradient: with logits x = z z^T / t, z gets (G + G^T) z / t for G = d loss / d x. The LSE part
of G is ``u_i exp(x_ij - shift)``; with one shared shift (1/t, the largest possible logit) it is
symmetric up to the row factor, so G + G^T is built in one pass and one (N, N) x (N, D) product
suffices. The constraint part is symmetrised inside each group's block.

Memory: one (N, N) matrix survives the forward pass (the exponentials of the logits, which a
plain SupCon keeps as well); the backward pass scales it in place unless the graph is kept. The
constraint keeps one float per pair inside the coarsest constrained level's groups (compiled:
their logits; array ops: 1.0 where a pair exceeds its bound, per level).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

from hcl.losses.groups import LevelGroups, ViewGroups

__all__ = ["hierarchical_contrastive"]

# Logits lie in [-1/t, 1/t]. Shifting all of them by 1/t keeps exp(logits - shift) symmetric and
# free of overflow; it is used while the smallest exponent, -2/t, stays clear of underflow.
_SHARED_SHIFT_RANGE = {torch.float32: 80.0, torch.float64: 700.0}

# A level is visited group by group (square slices) when its largest group has at least this
# many views and it has at most max(8, N * _SLICE_GROUPS_PER_VIEW) groups with positives.
_SLICE_MIN_SIZE = 32
_SLICE_GROUPS_PER_VIEW = 1 / 128

# In-place symmetric scaling in row blocks of about this many elements (1 MiB in float32).
_ROW_BLOCK_ELEMENTS = 1 << 18

# As torch.nn.functional.normalize: x / max(|x|, eps).
_NORM_EPS = 1e-12


def _by_group(level: LevelGroups, n: int) -> list[tuple[int, int]] | None:
    """The level's group spans when few large groups make square slices cheaper than a gathered
    (N, max_size) block (each slice costs a few Python-level ops), else None. Only on CPUs: on
    accelerators the ops per slice cost more than the gather (kernel launches, and reading the
    spans syncs)."""
    if level.max_size < _SLICE_MIN_SIZE or level.group.device.type != "cpu":
        return None
    spans = level.spans()
    return spans if len(spans) <= max(8, n * _SLICE_GROUPS_PER_VIEW) else None


class _InGroupPairs:
    """One level's in-group logits, as square slices or one gathered (N, max_size) block.

    ``columns`` (gathered blocks only) holds each entry's column in the logits, ``padding``
    which entries pad a group and ``start`` where each row's group starts; the anchor itself and
    the padding are -inf, inert in every term.
    """

    def __init__(self, logits: torch.Tensor, level: LevelGroups) -> None:
        n = logits.shape[0]
        self.spans = _by_group(level, n)
        if self.spans is None:
            self.columns = level.block_index()
            self.padding = level.block_padding()
            self.start = level.start
            self.blocks = [logits.gather(1, self.columns).masked_fill_(self.padding, float("-inf"))]
            self.ranges = [(0, n)]
        else:
            self.columns = self.padding = self.start = None
            self.blocks = [logits[start:stop, start:stop] for start, stop in self.spans]
            self.ranges = self.spans

    def smallest(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the smallest in-group logit (+inf without a positive) and its column.

        Shape:
            Returns two (N,) tensors, float and int64.
        """
        if self.columns is not None:
            value, position = self._smallest(self.blocks[0])
            return value, self.columns.gather(1, position.unsqueeze(1)).squeeze(1)
        value = self.blocks[0].new_full((n,), float("inf"))
        column = torch.zeros(n, dtype=torch.int64, device=value.device)
        for (start, stop), block in zip(self.ranges, self.blocks):
            value[start:stop], position = self._smallest(block)
            column[start:stop] = position + start
        return value, column

    @staticmethod
    def _smallest(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # -inf (self, padding) counts as +inf here. (argmin: min(dim) is slow on small CPU inputs.)
        finite = block.nan_to_num(neginf=float("inf"))
        position = finite.argmin(dim=1, keepdim=True)
        return finite.gather(1, position).squeeze(1), position.squeeze(1)

    def excess(self, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``R_i = sum_p relu(x_ip - bound_i)`` over i's group, the number of pairs above the
        bound and, per block, which pairs those are (1.0, else 0.0: the backward pass multiplies
        with it).

        Shape:
            bound: (N,). Returns two (N,) tensors and one tensor per block.
        """
        if self.columns is not None:
            clipped = (self.blocks[0] - bound.unsqueeze(1)).clamp_(min=0)
            above = clipped.sign()
            return clipped.sum(dim=1), above.sum(dim=1), [above]
        excess = bound.new_zeros(bound.shape)
        count = bound.new_zeros(bound.shape)
        blocks_above = []
        for (start, stop), block in zip(self.ranges, self.blocks):
            clipped = (block - bound[start:stop].unsqueeze(1)).clamp_(min=0)
            excess[start:stop] = clipped.sum(dim=1)
            blocks_above.append(clipped.sign())
            count[start:stop] = blocks_above[-1].sum(dim=1)
        return excess, count, blocks_above


def _add_in_group(
    grad_logits: torch.Tensor, pairs: _InGroupPairs, above: list[torch.Tensor], coefficient: torch.Tensor
) -> None:
    """Add ``B + B^T`` to ``grad_logits``, B the in-group gradient ``coefficient_i * above_ip``."""
    spans = pairs.spans
    if spans is None:
        block = above[0] * coefficient.unsqueeze(1)
        # The views of a group share its columns in order, so pair (i, start_i + r)'s transpose
        # sits in row start_i + r at position i - start_i: gathered, both go in one row-wise
        # scatter (a scatter into the transpose would write across rows, several times slower).
        rows = torch.arange(block.shape[0], device=block.device)
        partner = (pairs.columns * block.shape[1]).add_((rows - pairs.start).unsqueeze(1))
        transposed = block.view(-1).index_select(0, partner.view(-1)).view_as(block).masked_fill_(pairs.padding, 0)
        grad_logits.scatter_add_(1, pairs.columns, transposed.add_(block))
        return
    for (start, stop), mask in zip(spans, above):
        square = grad_logits[start:stop, start:stop]
        square.addcmul_(mask, coefficient[start:stop].unsqueeze(1))
        square.addcmul_(mask.t(), coefficient[start:stop].unsqueeze(0))


class _GroupedConstraint:
    """The constraint terms with array ops over each level's in-group pairs (GPUs, and CPUs
    without numba): level l+1's groups give the bounds of every bounded level l."""

    def __init__(
        self, logits: torch.Tensor, levels: tuple[LevelGroups, ...], coefficient: torch.Tensor, bounded: list[int]
    ) -> None:
        n = logits.shape[0]
        involved = sorted(set(bounded) | {index + 1 for index in bounded})
        pairs = {index: _InGroupPairs(logits, levels[index]) for index in involved}
        self.value = logits.new_zeros(())
        self.kept: list[tuple[_InGroupPairs, list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for index in bounded:
            bound, bound_column = pairs[index + 1].smallest(n)
            excess, count, above = pairs[index].excess(bound)
            self.value = self.value + torch.dot(coefficient[index], excess)
            self.kept.append((pairs[index], above, coefficient[index], count, bound_column))
        for level_pairs in pairs.values():
            level_pairs.blocks = []  # not needed by the backward pass

    def held_weight(self) -> torch.Tensor:
        """``sum_l w_li n_li``, n the number of pairs above i's bound. Shape: (N,)."""
        return sum(coefficient * count for _, _, coefficient, count, _ in self.kept)

    def add_gradient(self, grad_logits: torch.Tensor, grad_output: torch.Tensor, bound_gradient: bool) -> None:
        """Add the constraint's part of d loss / d logits to ``grad_logits`` (see
        :func:`_add_bound_pairs` for the parts)."""
        rows = torch.arange(grad_logits.shape[0], device=grad_logits.device)
        for pairs, above, coefficient, count, bound_column in self.kept:
            coefficient = grad_output * coefficient
            _add_in_group(grad_logits, pairs, above, coefficient)
            if bound_gradient:
                _add_bound_pairs(grad_logits, rows, bound_column, coefficient * count)


class _CompiledConstraint:
    """The constraint terms from the compiled row loops of :mod:`hcl.losses._compiled` (CPUs)."""

    def __init__(
        self,
        compiled: ModuleType,
        logits: torch.Tensor,
        groups: ViewGroups,
        coefficient: torch.Tensor,
        bounded: list[int],
    ) -> None:
        self.compiled = compiled
        self.groups = groups
        self.bounded = bounded
        self.coefficient = coefficient
        self.bound, self.bound_column, excess, self.count, self.offsets, self.inner = compiled.constraint_forward(
            logits, groups.start, groups.size, bounded
        )
        self.value = torch.dot(coefficient.view(-1), excess.view(-1))

    def held_weight(self) -> torch.Tensor:
        """``sum_l w_li n_li``, n the number of pairs above i's bound. Shape: (N,)."""
        return (self.coefficient * self.count).sum(dim=0)

    def add_gradient(self, grad_logits: torch.Tensor, grad_output: torch.Tensor, bound_gradient: bool) -> None:
        """Add the constraint's part of d loss / d logits to ``grad_logits``: the parts of
        :func:`_add_bound_pairs`, the bound pairs' included, all inside the backward loop."""
        weight = self.coefficient * grad_output
        at_bound = weight * self.count if bound_gradient else torch.zeros_like(weight)
        self.compiled.constraint_backward(
            grad_logits,
            self.groups.start,
            self.groups.size,
            self.bounded,
            self.offsets,
            self.inner,
            self.bound,
            self.bound_column,
            weight,
            at_bound,
        )


def _add_bound_pairs(
    grad_logits: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, weight: torch.Tensor
) -> None:
    """Subtract ``weight`` at the bound pairs ``(rows, columns)`` and their transposes.

    The constraint's part of d loss / d logits is +w_i on the in-group pairs above i's bound
    (which cancels their -w_i from the positive sums) and -w_i times their number on the bound's
    own pair (unless the bound is held constant), both symmetrised; this is the second part.

    Shape:
        grad_logits: (N, N); rows, columns, weight: (K,).
    """
    both = (torch.cat([rows, columns]), torch.cat([columns, rows]))
    grad_logits.index_put_(both, -weight.repeat(2), accumulate=True)


def _constraint(
    logits: torch.Tensor, groups: ViewGroups, coefficient: torch.Tensor
) -> _GroupedConstraint | _CompiledConstraint | None:
    """The hierarchy constraint's terms, compiled on CPUs when numba is there; None when no
    level is bounded (level l is bounded when it and level l+1 both have pairs).

    Shape:
        logits: (N, N), the -inf diagonal set; coefficient: (L, N), ``w_li``.
    """
    has_pairs = [level.max_size >= 2 for level in groups.levels]
    bounded = [index for index in range(len(has_pairs) - 1) if has_pairs[index] and has_pairs[index + 1]]
    if not bounded:
        return None
    compiled = _compiled_for(logits)
    if compiled is None:
        return _GroupedConstraint(logits, groups.levels, coefficient, bounded)
    return _CompiledConstraint(compiled, logits, groups, coefficient, bounded)


def _compiled_for(tensor: torch.Tensor) -> ModuleType | None:
    """The compiled loops for a tensor on the CPU (they work on its NumPy view), else None: CUDA,
    MPS and other devices take the array ops."""
    return _compiled_module() if tensor.device.type == "cpu" else None


@functools.cache
def _compiled_module() -> ModuleType | None:
    """:mod:`hcl.losses._compiled`, imported on first use (numba takes a while to import), or
    None without numba or without a writable place for its cache (numba then raises
    RuntimeError)."""
    try:
        from hcl.losses import _compiled
    except (ImportError, RuntimeError):
        return None
    return _compiled


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
    compiled = _compiled_for(exponentials) if in_place else None
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
    ) -> torch.Tensor:
        levels = groups.levels
        norm = torch.linalg.vector_norm(features, dim=1).clamp_(min=_NORM_EPS).index_select(0, groups.rows)
        z = features.index_select(0, groups.rows).div_(norm.unsqueeze(1))
        n = z.shape[0]
        logits = torch.mm(z * inv_temperature, z.t())
        logits.diagonal().fill_(float("-inf"))

        # Per view: W_i = sum_l w_{g_l(i)} and the LSE weight sum_l w_{g_l(i)} (|g_l(i)| - 1).
        per_group = torch.stack([group_weight, group_weight * (groups.group_size - 1).clamp(min=0)], dim=1)
        own_weight, lse_weight = per_group[groups.global_group].sum(dim=0).unbind(1)

        # Positive sums: sum_g w_g |S_g|^2 - sum_i W_i |z_i|^2, group sums from the finest level up.
        sums = [z.new_zeros(levels[-1].num_groups, z.shape[1]).index_add_(0, levels[-1].group, z)]
        for level in reversed(range(1, len(levels))):
            sums.insert(0, z.new_zeros(levels[level - 1].num_groups, z.shape[1]).index_add_(0, levels[level].parent, sums[0]))
        all_sums = torch.cat(sums)
        positive_total = torch.dot(group_weight, (all_sums * all_sums).sum(dim=1)) - torch.dot(
            own_weight, (z * z).sum(dim=1)
        )
        loss = -inv_temperature * positive_total

        constraint = None
        if constrained:
            coefficient = group_weight.index_select(0, groups.global_group.view(-1)).view(len(levels), n)
            constraint = _constraint(logits, groups, coefficient)
            if constraint is not None:
                loss = loss + constraint.value

        # One log-sum-exp per row, shared by all levels; the exponentials are kept for backward.
        shared_shift = 2 * inv_temperature <= _SHARED_SHIFT_RANGE.get(z.dtype, 80.0)
        if shared_shift:
            shift = logits.new_tensor(inv_temperature)
            exponentials = logits.sub_(inv_temperature).exp_()
        else:
            shift = logits.amax(dim=1)
            exponentials = logits.sub_(shift.unsqueeze(1)).exp_()
        row_sum = exponentials.sum(dim=1)
        loss = loss + torch.dot(lse_weight, shift + row_sum.log())

        ctx.inv_temperature = inv_temperature
        ctx.groups = groups
        ctx.shared_shift = shared_shift
        ctx.bound_gradient = bound_gradient
        ctx.constraint = constraint  # holds tensors for the backward pass, none an input or output
        ctx.save_for_backward(z, norm, exponentials, row_sum, lse_weight, own_weight, group_weight, *sums)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        z, norm, exponentials, row_sum, lse_weight, own_weight, group_weight, *sums = ctx.saved_tensors
        levels = ctx.groups.levels

        # The LSE part of d loss / d logits is u_i E_ij; with a shared shift E is symmetric and
        # G + G^T = u_i E_ij + u_j E_ij, otherwise G^T z is a second product.
        if ctx.constraint is not None and not ctx.bound_gradient:
            # A pair held up by a constant bound contributes a constant: not even its LSE moves.
            lse_weight = lse_weight - ctx.constraint.held_weight()
        scale = grad_output * lse_weight / row_sum
        grad_z = None
        if ctx.shared_shift:
            grad_logits = _symmetric_scaling(exponentials, scale, in_place=not _graph_is_kept())
        else:
            grad_logits = exponentials * scale.unsqueeze(1)
            grad_z = torch.mm(grad_logits.t(), z)

        if ctx.constraint is not None:
            ctx.constraint.add_gradient(grad_logits, grad_output, ctx.bound_gradient)

        product = torch.mm(grad_logits, z)
        grad_z = product if grad_z is None else grad_z.add_(product)

        # Positive sums: d/dz_j is 2 sum_l w_{g_l(j)} S_{g_l(j)} - 2 W_j z_j; the group terms are
        # pushed down the nested groups from the coarsest level.
        weights = (group_weight * (2 * grad_output)).split([level.num_groups for level in levels])
        pushed = sums[0] * weights[0].unsqueeze(1)
        for level, level_sums, weight in zip(levels[1:], sums[1:], weights[1:]):
            pushed = torch.addcmul(pushed.index_select(0, level.parent), level_sums, weight.unsqueeze(1))
        positive_grad = pushed.index_select(0, levels[-1].group)
        positive_grad.addcmul_(z, (own_weight * (2 * grad_output)).unsqueeze(1), value=-1)
        grad_z.sub_(positive_grad).mul_(ctx.inv_temperature)

        # Through the normalisation z = x / |x| and back to the caller's row order.
        grad_z.addcmul_(z, (z * grad_z).sum(dim=1, keepdim=True), value=-1).div_(norm.unsqueeze(1))
        grad_features = torch.empty_like(grad_z).index_copy_(0, ctx.groups.rows, grad_z)
        return grad_features, None, None, None, None, None


def hierarchical_contrastive(
    features: torch.Tensor,
    temperature: float,
    groups: ViewGroups,
    group_weight: torch.Tensor,
    constrained: bool,
    bound_gradient: bool = True,
) -> torch.Tensor:
    """Weighted sum of per-anchor contrastive terms over all levels, with a hand-written backward.

    Computes ``sum_i lse_i LSE_i - sum_l sum_i w_{g_l(i)} sum_{p in P_l(i)} y_lip`` on the
    L2-normalised features, with ``y = x_ip``, or ``min(x_ip, c_li)`` when ``constrained`` (c as
    in the module docstring) and ``lse_i = sum_l w_{g_l(i)} |P_l(i)|``. Callers choose the
    weights: ``w_g = lambda_l / (L |A_l| (|g| - 1))`` for groups with positives give the paper's
    HiMulCon.

    Args:
        features: raw embeddings, sample-major views (normalised here).
        temperature: t > 0.
        groups: the groups of every level (see :func:`hcl.losses.groups.build_view_groups`).
        group_weight: the weight of every group of every level, level 0's first (0: skipped).
        constrained: apply the hierarchy constraint against the next finer level.
        bound_gradient: differentiate the constraint as written; False holds the bound
            ``m_i = LSE_i - c_i`` constant, so a pair held up by it gets no gradient at all.

    Shape:
        features: (N, D) with N >= 2; group_weight: (sum_l num_groups_l,). Returns a scalar.
    """
    return _HierarchicalContrastive.apply(features, 1.0 / temperature, groups, group_weight, constrained, bound_gradient)
