"""Encoders: torchvision backbones by name, the small-image stem, channels, heads, the compact CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hcl.models import CompactCNN, Encoder, build_backbone, build_encoder


@pytest.mark.parametrize(
    ("name", "feature_dim"),
    [("resnet18", 512), ("mobilenet_v3_small", 1024), ("squeezenet1_0", 512)],
)
def test_torchvision_backbone_has_no_classifier(name: str, feature_dim: int) -> None:
    backbone, dim = build_backbone(name)
    assert dim == feature_dim
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 48, 48))
    assert out.flatten(1).shape == (2, feature_dim)


def test_small_image_stem_keeps_resolution() -> None:
    small, _ = build_backbone("resnet18", small_images=True)
    large, _ = build_backbone("resnet18")
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity) and not isinstance(large.maxpool, nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # The small stem keeps 32x32 at layer1; the ImageNet stem has already shrunk it to 8x8.
        assert small.layer1(small.relu(small.bn1(small.conv1(x)))).shape[-1] == 32
        assert large.layer1(large.maxpool(large.relu(large.bn1(large.conv1(x))))).shape[-1] == 8


@pytest.mark.parametrize("small_images", [False, True])
def test_in_channels(small_images: bool) -> None:
    model = build_encoder("resnet18", in_channels=1, small_images=small_images)
    assert model.backbone.conv1.in_channels == 1
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 128)


def test_forward_is_unit_norm_and_features_are_the_backbone_output() -> None:
    model = build_encoder("resnet18", small_images=True, embedding_dim=64).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        z = model(x)
        f = model.features(x)
        projected = model.embed(x, "projection")
    assert z.shape == (4, 64)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(projected, z)
    assert f.shape == (4, 512)
    torch.testing.assert_close(model.embed(x, "features"), nn.functional.normalize(f, dim=1))


def test_reference_head_for_resnet50() -> None:
    # The reference's head on ResNet-50 features: 2048 -> 2048 -> 128.
    model = build_encoder("resnet50")
    assert [(m.in_features, m.out_features) for m in model.head if isinstance(m, nn.Linear)] == [
        (2048, 2048),
        (2048, 128),
    ]


def test_classifier_variant_returns_logits_without_head() -> None:
    model = build_encoder("compact_cnn", in_channels=1, width=8, num_classes=10)
    assert model.is_classifier and model.head is None
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="no projection head"):
        model.embed(torch.randn(2, 1, 28, 28), "projection")


def test_classifier_with_features_returns_features_then_logits() -> None:
    model = build_encoder("compact_cnn", in_channels=1, width=8, num_classes=10, output_features=True).eval()
    images = torch.randn(3, 1, 28, 28)
    out = model(images)
    features = model.features(images)
    assert out.shape == (3, features.shape[1] + 10) == (3, model.output_dim)
    torch.testing.assert_close(out[:, :-10], features)
    torch.testing.assert_close(out[:, -10:], model.classifier(features))
    with pytest.raises(ValueError, match="output_features=True needs num_classes"):
        build_encoder("compact_cnn", in_channels=1, width=8, output_features=True)


def test_compact_cnn_shapes_and_grad() -> None:
    cnn = CompactCNN(in_channels=1, width=8)
    model = Encoder(cnn, cnn.out_features, embedding_dim=16)
    out = model(torch.randn(5, 1, 28, 28))
    out.sum().backward()
    assert out.shape == (5, 16)
    assert all(p.grad is not None for p in model.parameters())


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'"):
        build_backbone("resnet7")
    with pytest.raises(ValueError, match="small_images .* not 'vgg11'"):
        build_backbone("vgg11", small_images=True)
    with pytest.raises(ValueError, match="which must be"):
        build_encoder("compact_cnn", width=4).embed(torch.randn(1, 3, 8, 8), "logits")
    with pytest.raises(ValueError, match="width must be >= 1"):
        CompactCNN(width=0)


def test_head_norm_standardises_the_projection_over_the_batch() -> None:
    torch.manual_seed(0)
    model = build_encoder("compact_cnn", in_channels=1, width=4, embedding_dim=8, head_norm=True)
    assert isinstance(model.head[-1], nn.BatchNorm1d) and not model.head[-1].affine
    features = torch.randn(64, 16) * 0.01 + 5.0  # nearly identical features
    projected = model.head(features)
    torch.testing.assert_close(projected.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(projected.std(0, unbiased=False), torch.ones(8), atol=1e-2, rtol=0)
    z = model(torch.randn(16, 1, 28, 28))
    # Unit vectors that do not all point the same way: the mean cosine similarity stays far from 1.
    assert float((z @ z.T).mean().detach()) < 0.5
