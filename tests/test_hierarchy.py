"""Hierarchy: construction from every source, encoding, distances, validation, persistence."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from hcl import Hierarchy

FASHION_PATHS = [
    ("clothes", "tops", "shirt"),
    ("clothes", "tops", "tee"),
    ("clothes", "bottoms", "trouser"),
    ("goods", "shoes", "sneaker"),
    ("goods", "bag"),  # a ragged leaf: stops at level 1
]


@pytest.fixture
def tree() -> Hierarchy:
    return Hierarchy.from_paths(FASHION_PATHS, level_names=["kind", "group", "item"])


def test_ids_are_sorted_by_path_not_input_order(tree: Hierarchy) -> None:
    assert tree.nodes(0) == ["clothes", "goods"]
    assert tree.nodes(1) == ["bottoms", "tops", "bag", "shoes"]
    assert tree.nodes(2) == ["trouser", "shirt", "tee", "sneaker"]
    shuffled = Hierarchy.from_paths(FASHION_PATHS[::-1], level_names=["kind", "group", "item"])
    assert shuffled == tree


def test_encode_decode_round_trip(tree: Hierarchy) -> None:
    labels = tree.encode(FASHION_PATHS)
    assert labels.dtype == torch.int64 and labels.shape == (5, 3)
    assert labels[4].tolist() == [1, 2, -1]
    assert tree.decode(labels) == [tuple(p) for p in FASHION_PATHS]


def test_structure_queries(tree: Hierarchy) -> None:
    tops = tree.index(1, "tops")
    assert tree.parent(1, tops) == tree.index(0, "clothes")
    assert [tree.nodes(2)[c] for c in tree.children(1, tops)] == ["shirt", "tee"]
    assert tree.children(1, tree.index(1, "bag")) == []
    assert tree.path(2, tree.index(2, "sneaker")) == ("goods", "shoes", "sneaker")
    assert tree.node_labels(1).tolist() == [[0, 0, -1], [0, 1, -1], [1, 2, -1], [1, 3, -1]]
    assert sorted(map(tuple, tree.leaves().tolist())) == sorted(map(tuple, tree.encode(FASHION_PATHS).tolist()))


def test_lca_and_tree_distance_against_brute_force(tree: Hierarchy) -> None:
    labels = tree.encode(FASHION_PATHS)
    for a, b in itertools.product(range(5), repeat=2):
        pa, pb = FASHION_PATHS[a], FASHION_PATHS[b]
        shared = 0
        while shared < min(len(pa), len(pb)) and pa[shared] == pb[shared]:
            shared += 1
        assert tree.lca(labels[a].tolist(), labels[b].tolist()) == shared - 1
        assert tree.tree_distance(labels[a].tolist(), labels[b].tolist()) == len(pa) + len(pb) - 2 * shared


def test_tree_distance_matrix_full_depth(tree: Hierarchy) -> None:
    dist = tree.tree_distance_matrix()
    assert dist.tolist() == [[0, 4, 4, 6], [4, 0, 2, 6], [4, 2, 0, 6], [6, 6, 6, 0]]


def test_child_under_two_parents_is_rejected() -> None:
    with pytest.raises(ValueError, match="'shirt'.*two parents"):
        Hierarchy.from_paths([("clothes", "tops", "shirt"), ("clothes", "outers", "shirt")])
    with pytest.raises(ValueError, match="'shirt' has two parents"):
        Hierarchy.from_parent_map([("shirt", "tops"), ("shirt", "outers")])


def test_parent_map_depths_roots_and_cycles() -> None:
    tree = Hierarchy.from_parent_map(
        {"shirt": "tops", "tops": "clothes", "bag": "goods", "sneaker": "shoes", "shoes": "goods"}
    )
    assert tree.nodes(0) == ["clothes", "goods"]
    assert tree.nodes(1) == ["tops", "bag", "shoes"]
    assert tree.decode(tree.encode_leaf(["sneaker"])) == [("goods", "shoes", "sneaker")]
    with pytest.raises(ValueError, match="cycle: a -> b -> c -> a"):
        Hierarchy.from_parent_map([("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(ValueError, match="its own parent"):
        Hierarchy.from_parent_map({"a": "a"})


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: Hierarchy.from_paths([(None, "a")]), TypeError, r"must be a string, got None"),
        (lambda: Hierarchy.from_paths([("a", ["b"])]), TypeError, r"must be a string, got \['b'\]"),
        (lambda: Hierarchy.from_paths([("a", 3)]), TypeError, r"must be a string, got 3"),
        (lambda: Hierarchy.from_paths([("a", "")]), ValueError, r"must not be empty or blank, got ''"),
        (lambda: Hierarchy.from_paths([(" ", "b")]), ValueError, r"must not be empty or blank, got ' '"),
        (lambda: Hierarchy.from_parent_map({"a": ["b"]}), TypeError, r"parent of 'a' must be a string, got \['b'\]"),
        (lambda: Hierarchy.from_parent_map({None: "b"}), TypeError, r"child in the parent map must be a string"),
        (lambda: Hierarchy.from_parent_map([("a", "")]), ValueError, r"parent of 'a' must not be empty"),
        (lambda: Hierarchy([[None]], [[-1]]), TypeError, r"a node of level 0 must be a string, got None"),
    ],
    ids=["none", "list", "int", "empty", "blank", "map-list", "map-none", "map-empty", "constructor-none"],
)
def test_a_node_name_that_is_not_a_non_empty_string_is_refused(build, error: type, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        build()


def test_composed_and_decomposed_names_are_one_node() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert composed != decomposed
    tree = Hierarchy.from_paths([(composed, "x"), (decomposed, "y")])
    assert tree.nodes(0) == [composed] and tree.nodes(1) == ["x", "y"]
    assert tree.index(0, decomposed) == tree.index(0, composed) == 0
    assert tree.encode([(decomposed, "y")]).tolist() == [[0, 1]]
    by_map = Hierarchy.from_parent_map({"x": composed, "y": decomposed})
    assert by_map.nodes(0) == [composed] and by_map == tree
    with pytest.raises(ValueError, match="appears twice"):  # one name, twice at one level
        Hierarchy([[composed, decomposed]], [[-1, -1]])


def test_from_folders(tmp_path) -> None:
    files = [
        tmp_path / "animal" / "dog" / "beagle" / "1.jpg",
        tmp_path / "animal" / "cat" / "2.jpg",
        tmp_path / "plant" / "3.jpg",
    ]
    tree = Hierarchy.from_folders(files, root=tmp_path)
    assert tree.num_levels == 3
    assert tree.nodes(0) == ["animal", "plant"]
    assert tree.nodes(2) == ["beagle"]
    with pytest.raises(ValueError, match="not inside any class folder"):
        Hierarchy.from_folders([tmp_path / "loose.jpg"], root=tmp_path)


def test_from_array_keeps_repeated_ids_apart() -> None:
    # product 7 exists in category 0 and category 1: two different nodes.
    raw = torch.tensor([[0, 7], [1, 7], [0, 7], [1, 3]])
    tree = Hierarchy.from_array(raw)
    assert tree.num_nodes(1) == 3
    encoded = tree.encode_array(raw)
    assert encoded[0, 1] == encoded[2, 1]
    assert encoded[0, 1] != encoded[1, 1]
    assert tree.decode(encoded)[1] == ("1", "1/7")


def test_encode_errors_name_the_node(tree: Hierarchy) -> None:
    with pytest.raises(ValueError, match="unknown node 'hat'"):
        tree.encode([("clothes", "tops", "hat")])
    with pytest.raises(ValueError, match="'shirt' is not a child of 'bottoms'"):
        tree.encode([("clothes", "bottoms", "shirt")])
    with pytest.raises(TypeError, match="string"):
        tree.encode(["clothes"])


def test_validate_rejects_inconsistent_rows(tree: Hierarchy) -> None:
    with pytest.raises(ValueError, match="out of range"):
        tree.validate([[0, 9, -1]])
    with pytest.raises(ValueError, match="not a child"):
        tree.validate([[1, 0, -1]])
    with pytest.raises(ValueError, match="known label below an unknown"):
        tree.validate([[0, -1, 1]])
    with pytest.raises(ValueError, match="3 levels"):
        tree.validate([[0, 0]])


def test_json_round_trip_is_exact_and_atomic(tree: Hierarchy, tmp_path) -> None:
    path = tmp_path / "h.json"
    tree.to_json(path)
    assert Hierarchy.from_json(path) == tree
    assert Hierarchy.from_json(path).level_names == ["kind", "group", "item"]
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]  # no temp file left behind
    numeric = Hierarchy.from_array([[0, 10], [0, 2]])
    numeric.to_json(path)
    assert Hierarchy.from_json(path).nodes(1) == numeric.nodes(1)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "malformed hierarchy JSON"),
        ("[1, 2]", "must hold an object"),
        (json.dumps({"format": "other"}), "expected 'hcl.Hierarchy'"),
        (json.dumps({"format": "hcl.Hierarchy", "levels": [{"name": "a", "nodes": [["x", "nope"]]}]}), "not a valid"),
    ],
)
def test_malformed_json_names_the_file(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        Hierarchy.from_json(path)
    assert "bad.json" in str(info.value)
