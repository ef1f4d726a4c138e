"""Property-based fuzzing of Hierarchy construction, encoding and persistence.

Every call either returns a hierarchy that round-trips exactly or raises a clear
ValueError/TypeError; nothing else (no KeyError, IndexError or crash inside torch).
"""

from __future__ import annotations

import string

import hypothesis.strategies as st
import torch
from hypothesis import HealthCheck, given, settings

from hcl import Hierarchy
from hcl.labels import as_label_tensor, prefix_ids

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = st.text(alphabet=string.ascii_lowercase[:4], min_size=1, max_size=2)
paths = st.lists(st.lists(names, min_size=1, max_size=6).map(tuple), min_size=1, max_size=25)


@FUZZ
@given(paths)
def test_from_paths_round_trips_or_names_the_conflict(cases, raw_paths: list[tuple[str, ...]]) -> None:
    try:
        tree = Hierarchy.from_paths(raw_paths)
    except ValueError as err:
        assert "two parents" in str(err)
        cases.add("hierarchy.from_paths", "rejected")
        return
    cases.add("hierarchy.from_paths", "valid")
    labels = tree.encode(raw_paths)
    assert labels.shape == (len(raw_paths), max(map(len, raw_paths)))
    assert tree.decode(labels) == [tuple(p) for p in raw_paths]
    assert Hierarchy.from_dict(tree.to_dict()) == tree
    # Encoded labels use the prefix convention: column l equality == prefix equality.
    ids = prefix_ids(labels)
    for level in range(tree.num_levels):
        col, pid = labels[:, level], ids[:, level]
        same_col = (col[:, None] == col[None, :]) & (col[:, None] >= 0)
        same_pid = (pid[:, None] == pid[None, :]) & (pid[:, None] >= 0)
        assert torch.equal(same_col, same_pid)


@FUZZ
@given(st.lists(st.tuples(names, st.one_of(st.none(), names)), min_size=1, max_size=20))
def test_from_parent_map_accepts_trees_and_rejects_the_rest(cases, pairs: list[tuple[str, str | None]]) -> None:
    try:
        tree = Hierarchy.from_parent_map(pairs)
    except ValueError as err:
        assert any(word in str(err) for word in ("two parents", "cycle", "own parent"))
        cases.add("hierarchy.from_parent_map", "rejected")
        return
    cases.add("hierarchy.from_parent_map", "valid")
    parent = dict(pairs)
    for level in range(1, tree.num_levels):
        for idx, name in enumerate(tree.nodes(level)):
            assert tree.nodes(level - 1)[tree.parent(level, idx)] == parent[name]


@FUZZ
@given(
    st.integers(1, 6).flatmap(
        lambda levels: st.lists(st.lists(st.integers(-3, 4), min_size=levels, max_size=levels), min_size=0, max_size=30)
    )
)
def test_from_array_valid_or_clear_error(cases, rows: list[list[int]]) -> None:
    if not rows:
        rows_tensor = torch.zeros(0, 2, dtype=torch.int64)
    else:
        rows_tensor = torch.tensor(rows)
    try:
        labels = as_label_tensor(rows_tensor)
    except ValueError as err:
        assert ">= -1" in str(err) or "below an unknown" in str(err)
        cases.add("hierarchy.from_array", "rejected")
        return
    cases.add("hierarchy.from_array", "valid")
    tree = Hierarchy.from_array(labels)
    encoded = tree.encode_array(labels)
    assert torch.equal(encoded >= 0, labels >= 0)
    assert torch.equal(prefix_ids(encoded), prefix_ids(labels))
    tree.validate(encoded)
