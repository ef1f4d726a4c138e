"""Training objectives with one calling convention: ``objective(outputs, labels) -> scalar``.

``outputs`` is the model's output per view, (B, V, D) embeddings (or (B, V, K) logits for the
cross-entropy baseline); ``labels`` the (B, L) hierarchical labels. Objectives are built from
the table of losses (:mod:`hcl.losses.registry`), which says what each loss takes and can do;
the baselines' modules live in :mod:`hcl.losses.baselines`. Under DistributedDataParallel the
training loop gathers outputs and labels of all ranks first, so an objective always sees the
global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from hcl.hierarchy import Hierarchy
from hcl.losses.baselines import CrossEntropyFinest, SimCLRObjective, SupConFinest
from hcl.losses.graphed import CUDAGraphLoss
from hcl.losses.registry import LOSS_OPTIONS, OPTION_UNSET, get_loss, list_losses

__all__ = ["CrossEntropyFinest", "HierarchicalObjective", "SimCLRObjective", "SupConFinest", "build_objective"]


def build_objective(
    name: str,
    *,
    temperature: float = 0.1,
    level_weights: Sequence[float] | None = None,
    mode: str = "paper",
    bound_gradient: bool = True,
    cuda_graphs: bool = True,
    hierarchy: Hierarchy | None = None,
    **options: Any,
) -> nn.Module:
    """The objective for a loss of the table (a :class:`TrainConfig` loss name, or any name
    :func:`hcl.losses.get_loss` accepts), called as ``objective(outputs, labels)``.

    The options a loss takes (:attr:`hcl.losses.LossSpec.options`) go to its ``build``, those
    left unset (:data:`hcl.losses.registry.OPTION_UNSET`) excepted, so that the loss's own
    default holds. Setting an option the loss does not take is an error, since it would change
    what the loss computes; ``temperature`` and ``mode`` are shared settings that a loss without
    them ignores. The objective skips the loss's input checks, which would make the host wait
    for the GPU mid-step: the training step checks the loss value itself (a NaN stops the run).
    Its ``last_level_terms``, where the loss has them, are the per-level terms of the last call.

    Args:
        name: the loss.
        temperature: the softmax temperature t.
        level_weights: lambda_l, coarse to fine, for losses that take them; None = the default.
        mode: ``"paper"`` (default) or ``"reference"``, for losses that have both.
        bound_gradient: HiConE/HiMulConE: False holds the constraint's bound constant.
        cuda_graphs: on GPUs, replay a loss the table marks capturable as a CUDA graph
            (:class:`hcl.losses.CUDAGraphLoss`).
        hierarchy: the label hierarchy, for losses whose build uses it; None when unknown.
        options: the table's other options (``constraint``, ``constraint_weight``,
            ``cpcc_weight``, ``soft_label_beta``), by name.

    Raises:
        ValueError: an unknown loss (the choices listed), an unknown option, or an option the
            loss does not take.
    """
    spec = get_loss(name)
    unknown = sorted(set(options) - set(OPTION_UNSET))
    if unknown:
        raise ValueError(f"unknown loss options {unknown}; the options are {list(LOSS_OPTIONS)}")
    given = {"level_weights": level_weights, "bound_gradient": bound_gradient, **options}
    for key, value in given.items():
        if value != OPTION_UNSET[key] and key not in spec.options:
            raise ValueError(f"{key}={value!r} does not apply to loss {spec.name!r}")
    chosen = {key: value for key, value in given.items() if key in spec.options and value != OPTION_UNSET[key]}
    chosen.update({key: value for key, value in (("temperature", temperature), ("mode", mode)) if key in spec.options})
    module = spec.build(hierarchy=hierarchy, **chosen)
    return CUDAGraphLoss(module) if cuda_graphs and spec.graph_capturable else module


def HierarchicalObjective(name: str, **options: Any) -> nn.Module:
    """:func:`build_objective` for a loss that uses every level (HiMulCon, HiConE, HiMulConE).

    Raises:
        ValueError: ``name`` is not such a loss.
    """
    if not get_loss(name).hierarchical:
        choices = [loss for loss in list_losses() if get_loss(loss).hierarchical]
        raise ValueError(f"not a hierarchical loss: {name!r}; use one of {choices}")
    return build_objective(name, **options)
