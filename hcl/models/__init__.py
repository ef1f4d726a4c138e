"""Encoders for contrastive training: torchvision backbones or a compact CNN, plus heads."""

from hcl.models.encoder import CompactCNN, Encoder, build_backbone, build_encoder
from hcl.models.weights import LoadReport, load_weights

__all__ = ["CompactCNN", "Encoder", "LoadReport", "build_backbone", "build_encoder", "load_weights"]
