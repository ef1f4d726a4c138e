"""place_labels: labels keep clear of each other and of the plot's edges."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from hcl.viz.figures.label_placement import label_size, place_labels


def _boxes(anchors: np.ndarray, sizes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    centres = anchors + offsets
    return np.column_stack([centres - sizes / 2, centres + sizes / 2])


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


@pytest.mark.parametrize("seed", range(5))
def test_crowded_labels_do_not_overlap_and_stay_inside(seed: int) -> None:
    rng = np.random.default_rng(seed)
    anchors = rng.normal([200, 200], 25, size=(12, 2))  # twelve clusters on a few dozen pixels
    sizes = np.array([label_size(f"f{i}.c{i % 3}.v{i % 2}", 11) for i in range(12)])
    offsets = place_labels(anchors, sizes, (400, 400))
    boxes = _boxes(anchors, sizes, offsets)
    for i, j in combinations(range(12), 2):
        assert not _overlaps(boxes[i], boxes[j]), (i, j)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 400).all() and (boxes[:, 3] <= 400).all()


def test_labels_that_fit_stay_on_their_anchor_and_the_first_has_priority() -> None:
    anchors = np.array([[100.0, 100.0], [300.0, 300.0], [100.0, 100.0]])
    sizes = np.array([label_size("same", 11)] * 3)
    offsets = place_labels(anchors, sizes, (400, 400))
    np.testing.assert_array_equal(offsets[:2], 0.0)
    assert np.abs(offsets[2]).sum() > 0  # the third shares the first's anchor: it moves, the first stays


def test_labels_on_one_point_all_get_their_own_place() -> None:
    anchors = np.full((9, 2), 150.0)
    sizes = np.array([label_size("label", 11)] * 9)
    boxes = _boxes(anchors, sizes, place_labels(anchors, sizes, (300, 300)))
    assert not any(_overlaps(boxes[i], boxes[j]) for i, j in combinations(range(9), 2))


def test_a_crowded_plot_still_places_every_label_inside() -> None:
    anchors = np.tile([150.0, 50.0], (60, 1))
    sizes = np.array([label_size("long label name", 11)] * 60)
    offsets = place_labels(anchors, sizes, (300, 100))  # no room for sixty: they overlap, but stay inside
    boxes = _boxes(anchors, sizes, offsets)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 300).all() and (boxes[:, 3] <= 100).all()


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 anchors but 1 label sizes"):
        place_labels(np.zeros((2, 2)), np.ones((1, 2)), (10, 10))
