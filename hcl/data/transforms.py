"""Image transforms: the SimCLR/SupCon augmentation, a deterministic evaluation transform, V views.

Contrastive training sees each image through ``num_views`` independent augmentations
(:class:`MultiViewTransform`), so a data set returns x of shape (V, C, H, W). Build the transforms
from a data set's own constants: ``supcon_augmentation(ds.image_size, ds.channels, ds.mean, ds.std)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from hcl._compat import deprecated_attribute, renamed_kwargs

__all__ = ["MultiViewTransform", "ToChannels", "ToNormalizedTensor", "eval_transform", "supcon_augmentation"]


class MultiViewTransform:
    """Apply a random transform ``num_views`` times to one image and stack the results.

    Args:
        transform: maps a PIL image to a (C, H, W) tensor (e.g. :func:`supcon_augmentation`).
        num_views: how many independent views, V >= 1 (the old name ``n_views`` still works,
            with a ``DeprecationWarning``, as argument and attribute).

    Shape:
        Returns (V, C, H, W).
    """

    n_views = deprecated_attribute("n_views", "num_views")

    @renamed_kwargs(n_views="num_views")
    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], num_views: int = 2) -> None:
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be an int >= 1, got {num_views!r}")
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.num_views = num_views

    def __call__(self, image: Image.Image) -> torch.Tensor:
        views = [self.transform(image) for _ in range(self.num_views)]
        for view in views:
            if not isinstance(view, torch.Tensor):
                raise TypeError(f"the wrapped transform must return tensors, got {type(view).__name__}")
        return torch.stack(views)

    def __repr__(self) -> str:
        return f"MultiViewTransform(num_views={self.num_views}, transform={self.transform!r})"


class ToChannels:
    """Convert a PIL image to 1 (mode ``"L"``) or 3 (mode ``"RGB"``) channels."""

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.channels = channels

    def __call__(self, image: Image.Image) -> Image.Image:
        mode = "L" if self.channels == 1 else "RGB"
        return image if image.mode == mode else image.convert(mode)

    def __repr__(self) -> str:
        return f"ToChannels({self.channels})"


class ToNormalizedTensor:
    """torchvision's ``ToTensor`` then ``Normalize(mean, std)`` in one step, with the same arithmetic.

    The pixels are scaled to [0, 1] by a float32 division by 255, then the float32 mean is
    subtracted and the float32 std divides, as the two torchvision transforms do, so the result
    is bit for bit theirs; it saves their per-image conversions and constant tensors.

    Args:
        mean: per-channel mean (``None`` with ``std`` ``None``: scale to [0, 1] only).
        std: per-channel standard deviation.

    Shape:
        A PIL image of mode ``"L"`` or ``"RGB"`` -> (C, H, W) float32.

    Raises:
        ValueError: an image of another mode (convert it with :class:`ToChannels` first).
    """

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.mean = None if mean is None else torch.tensor(tuple(mean), dtype=torch.float32).reshape(-1, 1, 1)
        self.std = None if std is None else torch.tensor(tuple(std), dtype=torch.float32).reshape(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"ToNormalizedTensor takes 'L' or 'RGB' images, got mode {image.mode!r}")
        channels = 1 if image.mode == "L" else 3
        array = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)
        x = torch.from_numpy(array.transpose(2, 0, 1).copy()).float().div_(255)
        if self.mean is not None:
            x.sub_(self.mean).div_(self.std)
        return x

    def __repr__(self) -> str:
        if self.mean is None:
            return "ToNormalizedTensor()"
        return f"ToNormalizedTensor(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def supcon_augmentation(
    image_size: int,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """The SimCLR / SupCon augmentation (Chen et al. 2020; Khosla et al. 2020) for one view.

    Random resized crop to ``image_size`` (scale 0.2-1), horizontal flip, and for RGB images colour
    jitter (0.4, 0.4, 0.4, 0.1; p = 0.8) and random greyscale (p = 0.2). Images of 64 pixels or more
    also get SimCLR's Gaussian blur (kernel ~10% of the side, p = 0.5); small images (28-32 px, as
    in the SupCon CIFAR recipe) do not. Grey images get no colour jitter.

    Args:
        image_size: output side length.
        channels: 1 or 3; the input is converted to this many channels first.
        mean: per-channel normalisation mean (``None``: no normalisation).
        std: per-channel normalisation standard deviation (``None``: no normalisation).

    Shape:
        Returns a transform: PIL image -> (channels, image_size, image_size) float tensor.
    """
    from torchvision import transforms as T  # imported on use: torchvision is slow to import

    size = _check_size(image_size)
    steps: list[Any] = [
        ToChannels(channels),
        T.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
    ]
    if channels == 3:
        steps += [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
    if size >= 64:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    steps.append(_to_normalized_tensor(channels, mean, std))
    return T.Compose(steps)


def eval_transform(
    image_size: int,
    channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic transform for evaluation: resize the short side, centre crop, normalise.

    Args:
        image_size: output side length.
        channels: 1 or 3; the input is converted to this many channels first.
        mean: per-channel normalisation mean (``None``: no normalisation).
        std: per-channel normalisation standard deviation (``None``: no normalisation).

    Shape:
        Returns a transform: PIL image -> (channels, image_size, image_size) float tensor.
    """
    from torchvision import transforms as T

    size = _check_size(image_size)
    steps: list[Any] = [ToChannels(channels), T.Resize(size, antialias=True), T.CenterCrop(size)]
    steps.append(_to_normalized_tensor(channels, mean, std))
    return T.Compose(steps)


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    return image_size


def _to_normalized_tensor(
    channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> ToNormalizedTensor:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if mean is None and std is None:
        return ToNormalizedTensor(None, None)
    if mean is None or std is None:
        raise ValueError("give both mean and std, or neither")
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values each, got {tuple(mean)} and {tuple(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    return ToNormalizedTensor(tuple(float(m) for m in mean), tuple(float(s) for s in std))
