"""Contrastive losses: flat SupCon and the hierarchical HiMulCon, HiConE and HiMulConE, the
paper's baselines and the hierarchy-aware baselines (CPCC regulariser, soft labels) as training
objectives, the table of losses that training can use, and a wrapper that replays a loss as a
CUDA graph.

Every loss is called as ``loss(features, labels, indices_tuple=None)``, pytorch-metric-learning's
signature, so code written for its losses runs after changing the import. hcl's losses use every
pair of the batch: a miner's ``indices_tuple`` is refused with a ValueError, and which samples
meet is chosen by the batches (:class:`hcl.data.HierarchicalBatchSampler`)."""

from hcl.losses.baselines import CrossEntropyFinest, SimCLRObjective, SupConFinest
from hcl.losses.cpcc_regularizer import CPCCCrossEntropy, CPCCRegularizer, CPCCSupCon
from hcl.losses.functional import default_level_weights
from hcl.losses.graphed import CUDAGraphLoss
from hcl.losses.hierarchical import HiConE, HiMulCon, HiMulConE
from hcl.losses.registry import LossSpec, get_loss, list_losses, loss_display_name, register_loss, spec_of
from hcl.losses.soft_labels import SoftLabelCrossEntropy
from hcl.losses.supcon import SupConLoss

__all__ = [
    "CPCCCrossEntropy",
    "CPCCRegularizer",
    "CPCCSupCon",
    "CUDAGraphLoss",
    "CrossEntropyFinest",
    "HiConE",
    "HiMulCon",
    "HiMulConE",
    "LossSpec",
    "SimCLRObjective",
    "SoftLabelCrossEntropy",
    "SupConFinest",
    "SupConLoss",
    "default_level_weights",
    "get_loss",
    "list_losses",
    "loss_display_name",
    "register_loss",
    "spec_of",
]
