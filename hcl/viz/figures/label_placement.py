"""Text labels next to their points without overlapping each other (a greedy placement).

Plotly draws annotations where it is told, so labels of nearby clusters pile up on each other.
:func:`place_labels` works in pixels: each label is tried at its anchor, then at growing
distances around it, and takes the first spot inside the plot that no earlier label covers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["label_size", "place_labels"]

# An average glyph of a sans-serif font is about 0.6 of the font size wide; plus a little padding.
_GLYPH_WIDTH = 0.6
_RINGS = 8
_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1))


def label_size(text: str, font_size: float) -> tuple[float, float]:
    """The estimated (width, height) in pixels of ``text`` in a box with a small border."""
    return len(text) * _GLYPH_WIDTH * font_size + 6.0, 1.4 * font_size + 2.0


def place_labels(anchors: np.ndarray, sizes: np.ndarray, area: tuple[float, float]) -> np.ndarray:
    """Offsets from each anchor to its label's centre so that no two labels overlap.

    Labels are placed in the given order (put the important ones first): each at its anchor if
    that spot is free, else at the first free spot on rings of growing distance around it (up
    and down first, then sideways, then diagonally). A spot must keep the label inside ``area``.
    When no spot is free, the label takes the one that overlaps the others least.

    Args:
        anchors: each label's point, pixels from the plot's lower-left corner (y up).
        sizes: each label's (width, height) in pixels, e.g. from :func:`label_size`.
        area: the plot's (width, height) in pixels.

    Shape:
        anchors: (K, 2); sizes: (K, 2). Returns (K, 2) offsets in pixels (y up).
    """
    anchors = np.asarray(anchors, dtype=float).reshape(-1, 2)
    sizes = np.asarray(sizes, dtype=float).reshape(-1, 2)
    if len(anchors) != len(sizes):
        raise ValueError(f"got {len(anchors)} anchors but {len(sizes)} label sizes")
    placed = np.empty((0, 4))  # left, bottom, right, top of the labels placed so far
    offsets = np.zeros_like(anchors)
    for i, (anchor, (width, height)) in enumerate(zip(anchors, sizes)):
        steps = np.array([[dx * (width / 2 + 8), dy * (height + 2)] for dx, dy in _DIRECTIONS])
        candidates = np.vstack([np.zeros((1, 2))] + [ring * steps for ring in range(1, _RINGS + 1)])
        centres = anchor + candidates
        boxes = np.column_stack([centres - (width / 2, height / 2), centres + (width / 2, height / 2)])
        inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= area[0]) & (boxes[:, 3] <= area[1])
        covered = _overlap(boxes, placed).sum(axis=1)
        free = np.flatnonzero(inside & (covered == 0))
        if len(free):
            best = free[0]
        else:  # no free spot: the least covered one, inside the plot if any is
            best = int(np.argmin(covered + np.where(inside, 0.0, np.inf if inside.any() else 0.0)))
        offsets[i] = candidates[best]
        placed = np.vstack([placed, boxes[best]])
    return offsets


def _overlap(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Overlapping area of every box in ``boxes`` with every box in ``others`` (left, bottom, right, top).

    Shape:
        boxes: (A, 4); others: (B, 4). Returns (A, B).
    """
    width = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    height = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)
