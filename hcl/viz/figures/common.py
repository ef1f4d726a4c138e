"""What every figure shares: levels by index or name, label paths, tree-aware colours, checked inputs."""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
from plotly.colors import hex_to_rgb, qualitative

from hcl.hierarchy import Hierarchy
from hcl.viz.projection import as_embedding_array

__all__ = [
    "LEVEL_DASHES",
    "RUN_PALETTE",
    "UNKNOWN_COLOR",
    "checked_coords",
    "label_paths",
    "level_colors",
    "resolve_level",
    "validated_labels",
]

UNKNOWN_COLOR = "#b0b0b0"
_ROOT_PALETTE = qualitative.D3 + qualitative.Dark24
RUN_PALETTE = qualitative.Plotly
LEVEL_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def resolve_level(hierarchy: Hierarchy, level: int | str) -> int:
    """A level given as an index (negative counts from the finest) or a level name, as 0..L-1."""
    if isinstance(level, str):
        if level not in hierarchy.level_names:
            raise ValueError(f"unknown level {level!r}; the levels are {hierarchy.level_names}")
        return hierarchy.level_names.index(level)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise TypeError(f"level must be an int or a level name, got {type(level).__name__}")
    if not -hierarchy.num_levels <= level < hierarchy.num_levels:
        raise ValueError(f"level {level} out of range for {hierarchy.num_levels} levels")
    return int(level) % hierarchy.num_levels


def validated_labels(labels: Any, hierarchy: Hierarchy, n: int | None = None) -> np.ndarray:
    """Label rows checked against ``hierarchy`` (and against ``n`` points when given), as NumPy."""
    array = hierarchy.validate(labels).cpu().numpy()
    if n is not None and len(array) != n:
        raise ValueError(f"got {len(array)} label rows for {n} points")
    return array


def checked_coords(coords: Any) -> np.ndarray:
    """2-D positions checked to be finite and of shape (N, 2)."""
    array = as_embedding_array(coords, name="coords")
    if array.shape[1] != 2:
        raise ValueError(f"coords must have shape (N, 2), got {array.shape}")
    return array


def label_paths(labels: Any, hierarchy: Hierarchy, sep: str = " / ") -> np.ndarray:
    """Each sample's full label path as one string, e.g. ``"clothes / tops / shirt"``.

    Shape:
        labels: (N, L). Returns (N,) object array of str.
    """
    array = validated_labels(labels, hierarchy)
    if len(array) == 0:
        return np.empty(0, dtype=object)
    unique, inverse = np.unique(array, axis=0, return_inverse=True)
    names = [sep.join(path) if path else "(unknown)" for path in hierarchy.decode(unique)]
    return np.asarray(names, dtype=object)[inverse.reshape(-1)]


def level_colors(hierarchy: Hierarchy, level: int | str) -> list[str]:
    """One colour per node of ``level`` that shows the tree: a subtree shares its root's hue.

    Level-0 nodes get distinct palette colours. A deeper node takes its level-0 ancestor's
    colour with the hue turned and the lightness changed according to its place, in tree order,
    among that ancestor's descendants at ``level``; the hue stays within 40% of the gap to the
    nearest other root's hue (at most +-0.12, about 43 degrees), so a subtree is recognisable.

    Returns:
        ``num_nodes(level)`` hex colours, indexed by node id.
    """
    level = resolve_level(hierarchy, level)
    roots = hierarchy.node_labels(level)[:, 0].numpy()
    root_rgb = [
        tuple(c / 255 for c in hex_to_rgb(_ROOT_PALETTE[r % len(_ROOT_PALETTE)])) for r in range(hierarchy.num_nodes(0))
    ]
    if level == 0:
        return [_hex(*root_rgb[r]) for r in roots]
    root_hue = np.array([colorsys.rgb_to_hls(*rgb)[0] for rgb in root_rgb])
    colors = []
    for node, root in enumerate(roots):
        gaps = np.abs(root_hue - root_hue[root])
        gaps = np.minimum(gaps, 1 - gaps)[np.arange(len(root_hue)) != root]
        band = min(0.12, 0.4 * float(gaps.min())) if len(gaps) else 0.12
        siblings = np.flatnonzero(roots == root)
        m = len(siblings)
        t = 0.0 if m == 1 else int(np.searchsorted(siblings, node)) / (m - 1) - 0.5
        h, lightness, s = colorsys.rgb_to_hls(*root_rgb[root])
        lightness = float(np.clip(lightness + 0.4 * t, 0.22, 0.72))
        colors.append(_hex(*colorsys.hls_to_rgb((h + 2 * band * t) % 1.0, lightness, s)))
    return colors


def _hex(r: float, g: float, b: float) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * min(max(c, 0.0), 1.0))) for c in (r, g, b)))
