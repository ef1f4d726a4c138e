"""Hypothesis strategies shared by the fuzz tests of the losses and the metrics."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np

__all__ = ["label_rows"]


@st.composite
def label_rows(draw: st.DrawFn, num_samples: int, num_levels: int) -> np.ndarray:
    """(N, L) int64 labels in the prefix convention, from a small alphabet so that prefixes collide.

    Rows are random, all identical, all distinct or drawn from a pool of one or two; half the
    draws cut each row at a random depth (``-1`` below it, a whole row of ``-1`` included).
    """
    kind = draw(st.sampled_from(["random", "identical", "distinct", "duplicates"]))
    row = st.lists(st.integers(0, 2), min_size=num_levels, max_size=num_levels)
    if kind == "identical":
        rows = [draw(row)] * num_samples
    elif kind == "distinct":
        rows = [[i] * num_levels for i in range(num_samples)]
    elif kind == "duplicates":
        pool = draw(st.lists(row, min_size=1, max_size=2))
        rows = [pool[draw(st.integers(0, len(pool) - 1))] for _ in range(num_samples)]
    else:
        rows = [draw(row) for _ in range(num_samples)]
    labels = np.array(rows, dtype=np.int64).reshape(num_samples, num_levels)
    if draw(st.booleans()):
        depth = np.array(draw(st.lists(st.integers(0, num_levels), min_size=num_samples, max_size=num_samples)))
        labels[np.arange(num_levels)[None, :] >= depth[:, None]] = -1
    return labels
