"""Contrastive losses: flat SupCon and the hierarchical HiMulCon, HiConE and HiMulConE."""

from hcl.losses.hierarchical import HiConE, HiMulCon, HiMulConE
from hcl.losses.supcon import SupConLoss

__all__ = ["HiConE", "HiMulCon", "HiMulConE", "SupConLoss"]
