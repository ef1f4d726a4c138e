"""Encoders: a backbone (torchvision by name, or a compact CNN) plus a projection head.

The encoder follows SupCon (Khosla et al., 2020) and "Use All The Labels" (Zhang et al., CVPR
2022): a backbone with its classifier removed gives the representation used by linear probes
and retrieval (:meth:`Encoder.features`), and an MLP projection head maps it to the
L2-normalised embedding the contrastive loss sees (:meth:`Encoder.forward`). The reference
uses 2048 -> 2048 -> 128 on a ResNet-50.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CompactCNN", "Encoder", "build_backbone", "build_encoder"]

_RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")
_CLASSIFIER_ATTRIBUTES = ("fc", "classifier", "heads", "head")


class CompactCNN(nn.Module):
    """A small VGG-style CNN for 28-32 px images, sized to train in minutes on a CPU.

    Three stages of 3x3 convolutions with batch norm and ReLU (two convolutions in the first two
    stages, one in the last), max-pooling between stages, then global average pooling. It is the
    backbone of ``make demo``; the ResNet configurations are for GPUs.

    Args:
        in_channels: image channels (1 for Fashion-MNIST).
        width: channels of the first stage; the stages use ``width``, ``2 * width`` and
            ``4 * width`` channels, so the feature dimension is ``4 * width``.

    Shape:
        x: (N, in_channels, H, W) with H, W >= 4. Returns (N, 4 * width).
    """

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.layers = nn.Sequential(
            *block(in_channels, width),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            *block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.out_features = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _last_linear(module: nn.Module) -> tuple[nn.Module, str, nn.Linear] | None:
    """The last ``nn.Linear`` inside ``module`` as (its parent, its attribute name, itself)."""
    found = None
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, name, child)
    return found


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return
                if child.groups != 1:
                    raise ValueError(f"cannot change the input channels of a grouped first convolution ({name})")
                setattr(
                    parent,
                    name,
                    nn.Conv2d(
                        in_channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        child.dilation,
                        bias=child.bias is not None,
                    ),
                )
                return
    raise ValueError("the backbone has no Conv2d layer whose input channels could be set")


def build_backbone(
    name: str,
    *,
    in_channels: int = 3,
    small_images: bool = False,
    width: int = 32,
) -> tuple[nn.Module, int]:
    """A backbone with its classifier removed, and the dimension of the feature it outputs.

    ``name`` is ``"compact_cnn"`` or any torchvision classification model name
    (``torchvision.models.list_models(torchvision.models)``), built with random weights; nothing
    is downloaded. Load weights from a local file with :func:`hcl.models.load_weights`.

    Args:
        name: the backbone name, e.g. ``"resnet18"``, ``"resnet50"``, ``"compact_cnn"``.
        in_channels: input channels; the first convolution is rebuilt when it differs from 3.
        small_images: the CIFAR-style stem for 28-32 px inputs (a 3x3 stride-1 first convolution
            and no max-pool). Supported for the ResNet family; the compact CNN is already sized
            for small images.
        width: first-stage channels of the compact CNN (ignored for torchvision models).

    Raises:
        ValueError: unknown name, or ``small_images`` for a non-ResNet torchvision model.
    """
    if name == "compact_cnn":
        cnn = CompactCNN(in_channels, width)
        return cnn, cnn.out_features

    import torchvision

    available = set(torchvision.models.list_models(torchvision.models))
    if name not in available:
        raise ValueError(
            f"unknown backbone {name!r}; use 'compact_cnn' or a torchvision classification model "
            f"such as 'resnet18' or 'resnet50' ({len(available)} available)"
        )
    if small_images and not name.startswith(_RESNET_PREFIXES):
        raise ValueError(f"small_images is supported for ResNet-family backbones only, not {name!r}")
    model = torchvision.models.get_model(name, weights=None)
    feature_dim = None
    for attribute in _CLASSIFIER_ATTRIBUTES:
        classifier = getattr(model, attribute, None)
        if not isinstance(classifier, nn.Module):
            continue
        if isinstance(classifier, nn.Linear):
            feature_dim = classifier.in_features
            setattr(model, attribute, nn.Identity())
            break
        last = _last_linear(classifier)
        if last is not None:
            parent, child_name, linear = last
            feature_dim = linear.in_features
            setattr(parent, child_name, nn.Identity())
            break
        convs = [m for m in classifier.modules() if isinstance(m, nn.Conv2d)]
        if convs:  # a 1x1-convolution classifier (SqueezeNet): pool the features it would read
            feature_dim = convs[0].in_channels
            setattr(model, attribute, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)))
            break
    if feature_dim is None:
        raise ValueError(f"cannot find the classifier of torchvision model {name!r} to remove")

    if small_images:
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model, feature_dim


class Encoder(nn.Module):
    """Backbone plus projection head (contrastive losses) or linear classifier (cross-entropy).

    Args:
        backbone: maps images to (N, feature_dim) features (or anything that flattens to that).
        feature_dim: the backbone's output dimension.
        head_hidden_dim: hidden width of the MLP head (default: ``feature_dim``, as the reference).
        embedding_dim: output dimension of the projection head.
        num_classes: when given, the model is a cross-entropy baseline: ``forward`` returns
            logits of a linear classifier on the features and there is no projection head.
        output_features: a classifier's ``forward`` returns the features too, as
            ``torch.cat([features, logits], dim=1)``, for losses that also shape the
            representation (:class:`hcl.losses.CPCCCrossEntropy`). Needs ``num_classes``.
        head_norm: batch norm after both head layers (the output one without affine
            parameters), as in SimSiam and MoCo v3. The embedding is then standardised over the
            batch before the L2 normalisation, so it cannot collapse to one point; paper-mode
            HiConE/HiMulConE, whose hierarchy constraint acts like hardest-positive mining, was
            seen to collapse to that point with the plain head (see ``configs/``).

    Shape:
        x: (N, C, H, W). ``features(x)``: (N, feature_dim). ``forward(x)``: (N, embedding_dim),
        unit L2 norm, or (N, num_classes) logits for a classifier, or
        (N, feature_dim + num_classes) with ``output_features``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        head_hidden_dim: int | None = None,
        embedding_dim: int = 128,
        num_classes: int | None = None,
        head_norm: bool = False,
        output_features: bool = False,
    ) -> None:
        super().__init__()
        if feature_dim < 1 or embedding_dim < 1:
            raise ValueError(f"feature_dim and embedding_dim must be >= 1, got {feature_dim} and {embedding_dim}")
        if output_features and num_classes is None:
            raise ValueError("output_features=True needs num_classes (it returns the features next to the logits)")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.output_features = bool(output_features)
        if num_classes is not None:
            if num_classes < 2:
                raise ValueError(f"num_classes must be >= 2, got {num_classes}")
            self.head = None
            self.classifier: nn.Linear | None = nn.Linear(feature_dim, num_classes)
            self.output_dim = num_classes + (feature_dim if output_features else 0)
        else:
            hidden = head_hidden_dim or feature_dim
            if head_norm:
                self.head = nn.Sequential(
                    nn.Linear(feature_dim, hidden, bias=False),
                    nn.BatchNorm1d(hidden),
                    nn.ReLU(inplace=True),
                    nn.Linear(hidden, embedding_dim, bias=False),
                    nn.BatchNorm1d(embedding_dim, affine=False),
                )
            else:
                self.head = nn.Sequential(
                    nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embedding_dim)
                )
            self.classifier = None
            self.output_dim = embedding_dim

    @property
    def is_classifier(self) -> bool:
        """True for the cross-entropy baseline (``forward`` returns logits)."""
        return self.classifier is not None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone representation (unnormalised), used by linear probes and retrieval."""
        return self.backbone(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        if self.classifier is not None:
            logits = self.classifier(feats)
            return torch.cat([feats, logits], dim=1) if self.output_features else logits
        return F.normalize(self.head(feats), dim=1)

    def embed(self, x: torch.Tensor, which: str = "features") -> torch.Tensor:
        """L2-normalised embedding for evaluation: the backbone ``"features"`` or ``"projection"``.

        The cross-entropy baseline has no projection head, so it only offers ``"features"``.
        """
        if which == "features":
            return F.normalize(self.features(x).float(), dim=1)
        if which == "projection":
            if self.head is None:
                raise ValueError("a cross-entropy model has no projection head; embed with which='features'")
            return F.normalize(self.head(self.features(x)).float(), dim=1)
        raise ValueError(f"which must be 'features' or 'projection', got {which!r}")


def build_encoder(
    backbone: str = "resnet18",
    *,
    in_channels: int = 3,
    small_images: bool = False,
    width: int = 32,
    head_hidden_dim: int | None = None,
    embedding_dim: int = 128,
    num_classes: int | None = None,
    head_norm: bool = False,
    output_features: bool = False,
) -> Encoder:
    """Build an :class:`Encoder` from a backbone name; see :func:`build_backbone` for the options.

    Example:
        >>> model = build_encoder("resnet18", small_images=True)
        >>> model(torch.randn(4, 3, 32, 32)).shape
        torch.Size([4, 128])
    """
    net, feature_dim = build_backbone(backbone, in_channels=in_channels, small_images=small_images, width=width)
    return Encoder(
        net,
        feature_dim,
        head_hidden_dim=head_hidden_dim,
        embedding_dim=embedding_dim,
        num_classes=num_classes,
        head_norm=head_norm,
        output_features=output_features,
    )
