"""Contrastive losses: flat SupCon and the hierarchical HiMulCon, HiConE and HiMulConE, and a
wrapper that replays them as a CUDA graph."""

from hcl.losses.cpcc_regularizer import CPCCCrossEntropy, CPCCRegularizer, CPCCSupCon
from hcl.losses.graphed import CUDAGraphLoss
from hcl.losses.hierarchical import HiConE, HiMulCon, HiMulConE
from hcl.losses.soft_labels import SoftLabelCrossEntropy
from hcl.losses.supcon import SupConLoss

__all__ = ["CUDAGraphLoss", "HiConE", "HiMulCon", "HiMulConE", "SupConLoss"]
__all__ += ["CPCCCrossEntropy", "CPCCRegularizer", "CPCCSupCon", "SoftLabelCrossEntropy"]
