"""A deterministic synthetic data set whose visual factors nest like a taxonomy.

Each level of the label tree controls its own visual factor, from coarse to fine, so that a small
CNN can learn every level and coarse levels are the easiest:

* family (level 0): the base shape (disk, square, triangle, ring, cross, diamond) and a hue region,
* class (level 1): the shape's aspect ratio and orientation, and a hue shift inside the region,
* variant (level 2): the stripe texture's orientation and frequency,
* instance (level 3): a white marker's position on the shape and the shape's size,
* deeper levels (if ``depth > 4``): one smaller dark marker each.

Views of an instance differ by position, size, rotation, brightness, background and pixel
noise, all scaled by ``noise``. Images are rendered with vectorised numpy (10,000 32x32 images
take a few seconds on a CPU) and cached under ``data/cache/`` keyed by every parameter.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hcl.data.base import HierarchicalDataset
from hcl.data.files import atomic_write, check_split, default_cache_dir
from hcl.hierarchy import Hierarchy

__all__ = ["SyntheticHierarchy", "render_synthetic"]

_VERSION = 1  # bump when the renderer changes, so stale caches are not reused
_DEFAULT_BRANCHING = (5, 4, 4, 5)
_LEVEL_NAMES = ("family", "class", "variant", "instance")
_NODE_PREFIX = ("f", "c", "v", "i")
_NUM_SHAPES = 6
_SPLIT_STREAM = {"train": 1, "test": 2}


class SyntheticHierarchy(HierarchicalDataset):
    """Synthetic RGB images labelled family > class > variant > instance (or any depth).

    With the defaults: 5 families x 4 classes x 4 variants x 5 instances = 400 instances, and
    25 views each in the training split (10,000 images) and 5 in the test split (2,000), the test
    views being new draws of the same instances.

    Args:
        root: cache directory (default ``$HCL_CACHE_DIR``, the repository's ``data/cache``, or
            ``~/.cache/hcl`` for an installed package).
        split: ``"train"`` or ``"test"``.
        transform: applied to each PIL image (see :class:`hcl.data.base.HierarchicalDataset`).
        target_transform: applied to each label row.
        download: accepted for torchvision's sake and ignored: the images are rendered here.
        depth: number of levels L >= 1.
        branching: children per node at each level (an int for all levels); the default is
            (5, 4, 4, 5), continued with 3 below level 3.
        samples_per_leaf: views per finest-level node (default 25 for train, 5 for test).
        noise: strength of the per-view nuisance variation (0 = every view identical).
        image_size: side length in pixels (>= 16).
        seed: seed of the whole generator (node appearance and views).
        cache: read and write the rendered images in the cache directory.
        subset: keep a seeded, class-stratified subset of this size.
        unseen_classes: node names held out of the training split (e.g. ``["f0.c1"]``).
        levels: keep only the first k levels.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        download: bool = False,
        depth: int = 4,
        branching: int | Sequence[int] | None = None,
        samples_per_leaf: int | None = None,
        noise: float = 1.0,
        image_size: int = 32,
        seed: int = 0,
        cache: bool = True,
        subset: int | None = None,
        unseen_classes: Sequence[str] | None = None,
        levels: int | None = None,
    ) -> None:
        check_split(split, tuple(_SPLIT_STREAM), "the synthetic data set")
        branching = _branching(depth, branching)
        if samples_per_leaf is None:
            samples_per_leaf = 25 if split == "train" else 5
        _check_int("samples_per_leaf", samples_per_leaf, 1)
        _check_int("image_size", image_size, 16)
        _check_int("seed", seed, 0)
        if not np.isfinite(noise) or noise < 0:
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        self.params = {
            "version": _VERSION,
            "branching": list(branching),
            "samples_per_leaf": int(samples_per_leaf),
            "noise": float(noise),
            "image_size": int(image_size),
            "seed": int(seed),
            "split": split,
        }
        cache_dir = Path(root) if root is not None else default_cache_dir()
        key = hashlib.sha1(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]
        self.cache_path = cache_dir / f"synthetic-{key}.npz" if cache else None
        images, leaf = self._load_or_render()
        self._images = images
        hierarchy = _synthetic_hierarchy(branching)
        raw_labels = torch.from_numpy(_leaf_label_rows(branching)[leaf])
        mean = images.reshape(-1, 3).mean(axis=0) / 255.0
        std = images.reshape(-1, 3).std(axis=0) / 255.0
        super().__init__(
            transform=transform,
            target_transform=target_transform,
            channels=3,
            image_size=image_size,
            mean=tuple(np.round(mean, 4)),
            std=tuple(np.maximum(np.round(std, 4), 1e-3)),
        )
        self._select(
            hierarchy,
            raw_labels,
            split=split,
            source="the synthetic generator",
            subset=subset,
            unseen_classes=unseen_classes,
            levels=levels,
        )

    def _load_or_render(self) -> tuple[np.ndarray, np.ndarray]:
        if self.cache_path is not None and self.cache_path.is_file():
            try:
                with np.load(self.cache_path) as stored:
                    images, leaf = stored["images"], stored["leaf"]
                if images.dtype == np.uint8 and len(images) == len(leaf):
                    return images, leaf
            except (OSError, ValueError, KeyError):
                pass  # an unreadable cache entry is simply rendered again and replaced
        p = self.params
        images, leaf = render_synthetic(
            p["branching"],
            p["samples_per_leaf"],
            noise=p["noise"],
            image_size=p["image_size"],
            seed=p["seed"],
            stream=_SPLIT_STREAM[p["split"]],
        )
        if self.cache_path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, images=images, leaf=leaf)
            atomic_write(self.cache_path, buffer.getvalue())
        return images, leaf

    def _load_image(self, row: int, index: int) -> Image.Image:
        return Image.fromarray(self._images[row])


def render_synthetic(
    branching: Sequence[int],
    samples_per_leaf: int,
    *,
    noise: float = 1.0,
    image_size: int = 32,
    seed: int = 0,
    stream: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``samples_per_leaf`` views of every finest-level node of a full tree.

    Node appearance depends only on ``seed``; the views depend on ``(seed, stream)``, so two
    streams are independent views of the same instances.

    Returns:
        ``(images, leaf)``: uint8 images and each image's finest node (row-major over the tree).

    Shape:
        Returns images (n, S, S, 3) and leaf (n,) with n = prod(branching) * samples_per_leaf.
    """
    branching = [int(b) for b in branching]
    num_leaves = int(np.prod(branching))
    leaf = np.repeat(np.arange(num_leaves), samples_per_leaf)
    digits = _leaf_digits(branching)[leaf]  # (n, L): the child index taken at each level
    node_rng = np.random.default_rng([seed, 0])
    view_rng = np.random.default_rng([seed, stream])
    factors = _node_factors(branching, digits, node_rng)
    n = len(leaf)
    views = {
        "shift": view_rng.uniform(-1.0, 1.0, (n, 2)) * 0.07 * image_size * noise,
        "scale": 1.0 + view_rng.uniform(-1.0, 1.0, n) * 0.06 * noise,
        "turn": view_rng.uniform(-1.0, 1.0, n) * 0.15 * noise,
        "bright": 1.0 + view_rng.uniform(-1.0, 1.0, n) * 0.12 * noise,
        "background": 0.12 + view_rng.uniform(-1.0, 1.0, n) * 0.08 * min(noise, 1.0),
    }
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    chunk = 2048
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        pixels = _draw({k: v[part] for k, v in factors.items()}, {k: v[part] for k, v in views.items()}, image_size)
        pixels += view_rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(0.03 * noise)
        images[part] = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return images, leaf


def _node_factors(branching: list[int], digits: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image appearance parameters, each a function of the image's path in the tree."""
    depth = len(branching)
    b0 = branching[0]
    shape_of_family = rng.permutation(max(b0, _NUM_SHAPES))[:b0] % _NUM_SHAPES
    hue_of_family = (rng.permutation(b0) + rng.uniform(0.3, 0.7)) / b0
    fam = digits[:, 0]
    out = {"shape": shape_of_family[fam], "hue": hue_of_family[fam]}
    n = len(digits)
    out["aspect"] = np.ones(n)
    out["angle"] = np.zeros(n)
    out["stripe_angle"] = np.zeros(n)
    out["stripe_freq"] = np.zeros(n)
    out["size"] = np.ones(n)
    out["marker_angle"] = np.full(n, np.nan)
    if depth > 1:
        k, b = digits[:, 1], branching[1]
        out["aspect"] = 1.0 - 0.45 * k / max(b - 1, 1)
        out["angle"] = np.pi * k / (2 * b)
        out["hue"] = out["hue"] + (k / max(b - 1, 1) - 0.5) * 0.45 / b0
    if depth > 2:
        k, b = digits[:, 2], branching[2]
        out["stripe_angle"] = np.pi * k / b + rng.uniform(0, np.pi)
        out["stripe_freq"] = 1.1 + 0.7 * (k % 2)
    if depth > 3:
        k, b = digits[:, 3], branching[3]
        out["marker_angle"] = 2 * np.pi * k / b + rng.uniform(0, 2 * np.pi)
        out["size"] = 0.88 + 0.2 * k / max(b - 1, 1)
    out["extra_markers"] = (
        np.stack([2 * np.pi * digits[:, lv] / branching[lv] + lv for lv in range(4, depth)], axis=1)
        if depth > 4
        else np.zeros((n, 0))
    )
    return out


def _draw(f: dict[str, np.ndarray], v: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Rasterise one chunk of images in float32 RGB in [0, 1]. Shape: returns (n, S, S, 3)."""
    f = {k: a.astype(np.float32) if a.dtype.kind == "f" else a for k, a in f.items()}
    v = {k: a.astype(np.float32) for k, a in v.items()}
    coords = np.arange(size, dtype=np.float32) + np.float32(0.5 - size / 2)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    x = x[None] - v["shift"][:, 0, None, None]
    y = y[None] - v["shift"][:, 1, None, None]
    theta = (f["angle"] + v["turn"])[:, None, None]
    radius = (np.float32(0.3 * size) * f["size"] * v["scale"])[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    w = (-x * sin + y * cos) / radius
    u = (x * cos + y * sin) / (radius * f["aspect"][:, None, None])
    mask = np.zeros(u.shape, dtype=bool)
    for index in range(_NUM_SHAPES):
        sel = np.flatnonzero(f["shape"] == index)
        if len(sel):
            mask[sel] = _shape_mask(index, u[sel], w[sel])
    stripe_angle = f["stripe_angle"][:, None, None]
    along = u * np.cos(stripe_angle) + w * np.sin(stripe_angle)
    stripes = np.sin(np.float32(2 * np.pi) * f["stripe_freq"][:, None, None] * along)
    shade = np.where(stripes < 0, np.float32(0.55), np.float32(1.0)) * v["bright"][:, None, None]
    rgb = np.array([colorsys.hsv_to_rgb(h % 1.0, 0.75, 0.95) for h in f["hue"]], dtype=np.float32)
    image = np.where(mask[..., None], rgb[:, None, None, :] * shade[..., None], v["background"][:, None, None, None])
    has_marker = ~np.isnan(f["marker_angle"])
    if has_marker.any():
        angle = np.where(has_marker, f["marker_angle"], 0.0)[:, None, None]
        near = (u - 0.5 * np.cos(angle)) ** 2 + (w - 0.5 * np.sin(angle)) ** 2 <= 0.3**2
        image[near & has_marker[:, None, None]] = 1.0
    for extra in range(f["extra_markers"].shape[1]):
        angle = f["extra_markers"][:, extra][:, None, None]
        near = (u - 0.25 * np.cos(angle)) ** 2 + (w - 0.25 * np.sin(angle)) ** 2 <= 0.18**2
        image[near] = 0.0
    return image.astype(np.float32, copy=False)


def _shape_mask(index: int, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Inside-test of base shape ``index`` in shape coordinates (unit radius)."""
    au, aw = np.abs(u), np.abs(w)
    if index == 0:  # disk
        return u * u + w * w <= 1.0
    if index == 1:  # square
        return np.maximum(au, aw) <= 0.82
    if index == 2:  # triangle
        return (w >= -0.55) & (w <= 1.0 - 1.9 * au)
    if index == 3:  # ring
        r2 = u * u + w * w
        return (r2 >= 0.55**2) & (r2 <= 1.0)
    if index == 4:  # cross
        return ((au <= 0.35) & (aw <= 1.0)) | ((aw <= 0.35) & (au <= 1.0))
    return au + aw <= 1.1  # diamond


def _branching(depth: int, branching: int | Sequence[int] | None) -> list[int]:
    _check_int("depth", depth, 1)
    if branching is None:
        out = list(_DEFAULT_BRANCHING[:depth]) + [3] * max(0, depth - len(_DEFAULT_BRANCHING))
    elif isinstance(branching, (int, np.integer)) and not isinstance(branching, bool):
        out = [int(branching)] * depth
    else:
        out = [int(b) for b in branching]
        if len(out) != depth:
            raise ValueError(f"branching needs one entry per level ({depth}), got {list(branching)}")
    for b in out:
        _check_int("branching", b, 1)
    if int(np.prod(out)) > 10**6:
        raise ValueError(f"branching {out} gives {int(np.prod(out))} leaves; at most 1,000,000 are supported")
    return out


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _leaf_digits(branching: list[int]) -> np.ndarray:
    """Child index at each level for every leaf, leaves in row-major order. Shape (leaves, L)."""
    grids = np.meshgrid(*[np.arange(b) for b in branching], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1)


def _node_name(digits: Sequence[int]) -> str:
    return ".".join(f"{_NODE_PREFIX[lv] if lv < len(_NODE_PREFIX) else f'l{lv}_'}{d}" for lv, d in enumerate(digits))


def _synthetic_hierarchy(branching: list[int]) -> Hierarchy:
    digits = _leaf_digits(branching).tolist()
    paths = [tuple(_node_name(row[: lv + 1]) for lv in range(len(row))) for row in digits]
    names = list(_LEVEL_NAMES[: len(branching)]) + [f"level{lv}" for lv in range(4, len(branching))]
    return Hierarchy.from_paths(paths, level_names=names)


def _leaf_label_rows(branching: list[int]) -> np.ndarray:
    """Label row of every leaf (row-major order) in :func:`_synthetic_hierarchy`'s encoding."""
    hierarchy = _synthetic_hierarchy(branching)
    names = [_node_name(row) for row in _leaf_digits(branching).tolist()]
    return hierarchy.encode_leaf(names).numpy()
