"""Transforms: V-view stacking, the SupCon recipe per resolution and channel count, evaluation transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hcl.data import MultiViewTransform, eval_transform, supcon_augmentation
from hcl.data.transforms import ToChannels, ToNormalizedTensor


def rgb_image(size: int = 40) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_multi_view_stacks_independent_views() -> None:
    torch.manual_seed(0)
    views = MultiViewTransform(supcon_augmentation(32), num_views=4)(rgb_image())
    assert views.shape == (4, 3, 32, 32)
    assert not torch.equal(views[0], views[1])  # independent random augmentations
    one = MultiViewTransform(eval_transform(32, 3, None, None), num_views=1)(rgb_image())
    assert one.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="num_views"):
        MultiViewTransform(eval_transform(32, 3, None, None), num_views=0)
    with pytest.raises(TypeError, match="tensors"):
        MultiViewTransform(lambda image: image)(rgb_image())


def test_n_views_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'n_views' is deprecated, use 'num_views'"):
        transform = MultiViewTransform(eval_transform(32, 3, None, None), n_views=3)
    assert transform.num_views == 3
    assert transform(rgb_image()).shape == (3, 3, 32, 32)
    with pytest.warns(DeprecationWarning, match="'n_views' is deprecated"):
        assert transform.n_views == 3
    with pytest.raises(TypeError, match="both 'num_views' and its deprecated name 'n_views'"):
        MultiViewTransform(eval_transform(32, 3, None, None), n_views=2, num_views=2)


def test_supcon_recipe_depends_on_channels_and_size() -> None:
    grey = supcon_augmentation(28, channels=1, mean=(0.5,), std=(0.5,))
    rgb_small = supcon_augmentation(32, channels=3)
    rgb_large = supcon_augmentation(96, channels=3)
    assert "ColorJitter" not in repr(grey) and "Grayscale" not in repr(grey)
    assert "ColorJitter" in repr(rgb_small) and "RandomGrayscale" in repr(rgb_small)
    assert "GaussianBlur" not in repr(rgb_small) and "GaussianBlur" in repr(rgb_large)
    assert "RandomResizedCrop" in repr(grey) and "HorizontalFlip" in repr(grey)
    out = grey(rgb_image())  # an RGB input is converted to the requested channels
    assert out.shape == (1, 28, 28) and out.min() >= -1.0 and out.max() <= 1.0
    assert rgb_large(rgb_image(120)).shape == (3, 96, 96)


def test_eval_transform_is_deterministic_and_normalises() -> None:
    image = Image.new("RGB", (50, 40), (255, 0, 128))
    transform = eval_transform(20, 3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    out = transform(image)
    assert out.shape == (3, 20, 20)
    assert torch.allclose(out[:, 5, 5], torch.tensor([1.0, -2.0, 128 / 255 - 0.5]), atol=1e-5)
    assert torch.equal(transform(image), out)
    grey = eval_transform(28, 1, (0.2860,), (0.3530,))(Image.new("L", (28, 28), 0))
    assert torch.allclose(grey, torch.full((1, 28, 28), -0.2860 / 0.3530))


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="channels"):
        eval_transform(32, 2, None, None)
    with pytest.raises(ValueError, match="3 values"):
        eval_transform(32, 3, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="both"):
        supcon_augmentation(32, 3, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        eval_transform(32, 1, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="image_size"):
        supcon_augmentation(0)
    assert ToChannels(3)(Image.new("L", (4, 4))).mode == "RGB"
    assert ToChannels(1)(Image.new("RGBA", (4, 4))).mode == "L"


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_to_normalized_tensor_is_torchvision_to_tensor_then_normalize_bit_for_bit(mode: str) -> None:
    from torchvision import transforms as T

    rng = np.random.default_rng(1)
    channels = 1 if mode == "L" else 3
    pixels = rng.integers(0, 256, (17, 23, channels), dtype=np.uint8)  # every byte value is likely hit
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    mean, std = tuple(rng.uniform(0.1, 0.6, channels)), tuple(rng.uniform(0.1, 0.6, channels))
    plain = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(image)
    fused = ToNormalizedTensor(mean, std)(image)
    assert fused.dtype == plain.dtype == torch.float32 and fused.shape == (channels, 17, 23)
    assert torch.equal(fused, plain)
    assert torch.equal(ToNormalizedTensor(None, None)(image), T.ToTensor()(image))
    with pytest.raises(ValueError, match="'RGBA'"):
        ToNormalizedTensor(None, None)(Image.new("RGBA", (4, 4)))
