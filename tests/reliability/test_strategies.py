"""The shared label strategy draws valid labels: else the fuzz tests would only test rejections."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from hypothesis import given, settings
from reliability.strategies import label_rows

from hcl.labels import as_label_tensor


@settings(max_examples=200, deadline=None)
@given(data=st.data(), num_samples=st.integers(1, 8), num_levels=st.integers(1, 6))
def test_label_rows_are_valid_prefix_labels_of_the_asked_shape(data, num_samples: int, num_levels: int) -> None:
    labels = data.draw(label_rows(num_samples, num_levels))
    assert labels.shape == (num_samples, num_levels) and labels.dtype == np.int64
    as_label_tensor(labels, num_levels=num_levels)  # raises on values below -1 or a known label under -1
