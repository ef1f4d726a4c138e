"""Training objectives with one calling convention: ``objective(outputs, labels) -> scalar``.

``outputs`` is the model's output per view, (B, V, D) embeddings (or (B, V, K) logits for the
cross-entropy baseline); ``labels`` the (B, L) hierarchical labels. The hierarchical losses use
every level; the baselines of the paper use the finest label (SupCon, cross-entropy) or no label
at all (SimCLR). Under DistributedDataParallel the training loop gathers outputs and labels of
all ranks first, so an objective always sees the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hcl.labels import prefix_ids
from hcl.train.config import LOSSES

__all__ = ["CrossEntropyFinest", "HierarchicalObjective", "SimCLRObjective", "SupConFinest", "build_objective"]


class HierarchicalObjective(nn.Module):
    """HiMulCon, HiConE or HiMulConE over every level of the labels.

    Args:
        name: ``"himulcon"``, ``"hicone"`` or ``"himulcone"``.
        temperature: the softmax temperature t.
        level_weights: lambda_l, coarse to fine (not for HiConE); None = the loss default.
        mode: ``"paper"`` (default) or ``"reference"``; reference mode appends an instance-id
            column to the labels (hcl's data sets have none), so the finest label is a level.
        bound_gradient: HiConE/HiMulConE: False holds the constraint's bound constant.
        cuda_graphs: on GPUs, replay the loss as a CUDA graph (:class:`hcl.losses.graphed.CUDAGraphLoss`).

    The training step checks the loss value itself (a NaN stops the run), so the loss skips its
    input checks, which would make the host wait for the GPU mid-step.

    Shape:
        outputs: (B, V, D); labels: (B, L). Returns a scalar.
    """

    def __init__(
        self,
        name: str,
        *,
        temperature: float = 0.1,
        level_weights: Sequence[float] | None = None,
        mode: str = "paper",
        bound_gradient: bool = True,
        cuda_graphs: bool = True,
    ) -> None:
        super().__init__()
        from hcl.losses import HiConE, HiMulCon, HiMulConE
        from hcl.losses.graphed import CUDAGraphLoss

        instance_column = "absent" if mode == "reference" else None
        if name == "hicone":
            if level_weights is not None:
                raise ValueError("HiConE takes no level weights (all ones); set level_weights to None")
            self.loss = HiConE(
                temperature=temperature,
                mode=mode,
                bound_gradient=bound_gradient,
                check_inputs=False,
                instance_column=instance_column,
            )
        elif name in ("himulcon", "himulcone"):
            cls = HiMulCon if name == "himulcon" else HiMulConE
            self.loss = cls(
                temperature=temperature,
                level_weights=level_weights,
                mode=mode,
                bound_gradient=bound_gradient,
                check_inputs=False,
                instance_column=instance_column,
            )
        else:
            raise ValueError(f"not a hierarchical loss: {name!r}; use himulcon, hicone or himulcone")
        if cuda_graphs:
            self.loss = CUDAGraphLoss(self.loss)
        self.name = name
        self.temperature = temperature
        self.level_weights = None if level_weights is None else [float(w) for w in level_weights]
        self.mode = mode

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, labels)

    @torch.no_grad()
    def level_terms(self, outputs: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """Each level's weighted term ``lambda_l * T_l / L``; they sum to the loss (paper mode).

        Used for logging only. Reference mode has no per-level decomposition and returns [].
        """
        if self.mode != "paper":
            return []
        from hcl.losses.functional import default_level_weights, hierarchical_contrastive_loss

        num_levels = labels.shape[1]
        if self.name == "hicone":
            weights = [1.0] * num_levels
        else:
            weights = self.level_weights or list(default_level_weights(num_levels))
        terms = []
        for level in range(num_levels):
            only = [weights[level] if j == level else 0.0 for j in range(num_levels)]
            value = hierarchical_contrastive_loss(
                outputs,
                labels,
                temperature=self.temperature,
                level_weights=only,
                constrained=self.name != "himulcon",
                check_inputs=False,
            )
            terms.append(float(value))
        return terms


class SupConFinest(nn.Module):
    """The SupCon baseline: supervised contrastive loss on the finest label only.

    The finest label is taken as the full label prefix (:func:`hcl.labels.prefix_ids`), so raw
    ids repeated under different parents are not confused; samples whose finest level is unknown
    are anchors without positives (skipped).

    Shape:
        outputs: (B, V, D); labels: (B, L). Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        from hcl.losses import SupConLoss

        self.loss = SupConLoss(temperature=temperature, check_inputs=False)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, prefix_ids(labels)[:, -1:])


class SimCLRObjective(nn.Module):
    """The SimCLR baseline (NT-Xent): each sample is its own class; labels are ignored.

    Implemented as SupCon with every sample its own label, so the positives of a view are the
    other views of the same image. Needs V >= 2 views.

    Shape:
        outputs: (B, V, D), V >= 2; labels: (B, L), unused. Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        from hcl.losses import SupConLoss

        self.loss = SupConLoss(temperature=temperature, check_inputs=False)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
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

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if outputs.dim() != 3:
            raise ValueError(f"cross-entropy needs logits of shape (B, V, K), got {tuple(outputs.shape)}")
        target = labels[:, -1].repeat_interleave(outputs.shape[1])
        if not bool((target >= 0).any()):
            return outputs.sum() * 0
        if int(target.max()) >= outputs.shape[2]:
            raise ValueError(f"finest label {int(target.max())} is out of range for {outputs.shape[2]} classes")
        return F.cross_entropy(outputs.flatten(0, 1).float(), target, ignore_index=-1)


def build_objective(
    name: str,
    *,
    temperature: float = 0.1,
    level_weights: Sequence[float] | None = None,
    mode: str = "paper",
    bound_gradient: bool = True,
    cuda_graphs: bool = True,
) -> nn.Module:
    """The objective for a :class:`TrainConfig` loss name (see :data:`hcl.train.config.LOSSES`)."""
    if name in ("himulcon", "hicone", "himulcone"):
        return HierarchicalObjective(
            name,
            temperature=temperature,
            level_weights=level_weights,
            mode=mode,
            bound_gradient=bound_gradient,
            cuda_graphs=cuda_graphs,
        )
    if level_weights is not None:
        raise ValueError(f"level_weights do not apply to loss {name!r}")
    if name == "supcon":
        return SupConFinest(temperature=temperature)
    if name == "simclr":
        return SimCLRObjective(temperature=temperature)
    if name == "cross_entropy":
        return CrossEntropyFinest()
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
