"""The grid: cells, their run directories, each cell's TrainConfig, and the protocols' part in it."""

from __future__ import annotations

from pathlib import Path

import pytest

import hcl.metrics
from hcl.hierarchy import Hierarchy
from hcl.study import AllClasses, Cell, HeldoutClasses, HeldoutSpec, StudyConfig, build_grid, cell_dir, plan_study

BASE = {
    "dataset": "synthetic",
    "data_options": {"depth": 3, "branching": [3, 2, 3], "samples_per_leaf": 4, "image_size": 16},
    "width": 8,
    "batch_size": 16,
    "lr": 0.05,
}


def make(**changes) -> StudyConfig:
    data = {
        "base": dict(BASE),
        "variants": {"SupCon": {"loss": "supcon"}, "HiMulCon": {"loss": "himulcon", "lr": 0.1}},
        "seeds": [3, 1, 2],
        "protocols": ["all"],
        "output_dir": "/tmp/s",
    }
    data.update(changes)
    return StudyConfig.from_dict(data)


def test_grid_is_seed_major_and_complete() -> None:
    cells = build_grid(make(protocols=["all", "heldout"]))
    assert len(cells) == 2 * 3 * 2 and len(set(cells)) == len(cells)
    assert cells[:4] == [
        Cell("SupCon", "all", 3),
        Cell("HiMulCon", "all", 3),
        Cell("SupCon", "heldout", 3),
        Cell("HiMulCon", "heldout", 3),
    ]
    assert [c.seed for c in cells[4:8]] == [1] * 4  # a stopped study has whole seeds


def test_run_directory_layout() -> None:
    cell = Cell("HiMulConE-paper", "heldout", 4)
    assert cell.key == "HiMulConE-paper/heldout/seed4"
    assert cell_dir("studies/x", cell) == Path("studies/x/cells/HiMulConE-paper/heldout/seed4")


def test_cell_configs_differ_only_where_the_grid_does() -> None:
    plan = plan_study(make())
    assert isinstance(plan.protocols["all"], AllClasses)
    a = plan.configs[Cell("SupCon", "all", 3)].to_dict()
    b = plan.configs[Cell("HiMulCon", "all", 1)].to_dict()
    differ = {k for k in a if a[k] != b[k]}
    assert differ == {"loss", "lr", "seed", "output_dir"}
    assert (a["seed"], a["lr"], b["lr"]) == (3, 0.05, 0.1)
    assert b["output_dir"] == "/tmp/s/cells/HiMulCon/all/seed1"
    assert a["progress"] is False and a["width"] == 8 and a["data_options"] == BASE["data_options"]


def test_all_classes_protocol_adds_nothing() -> None:
    protocol = AllClasses()
    assert protocol.name == "all" and protocol.overrides(5) == {} and protocol.evaluate({"cpcc": 0.5}) == {}


@pytest.fixture
def tiny_hierarchy() -> Hierarchy:
    return Hierarchy.from_paths([("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("b", "b3")])


def test_heldout_fixed_classes(tiny_hierarchy: Hierarchy) -> None:
    labels = tiny_hierarchy.node_labels(1)
    protocol = HeldoutClasses.resolve(HeldoutSpec(classes=["a2", "b1"]), labels, tiny_hierarchy, [0, 1])
    assert protocol.name == "heldout"
    assert protocol.overrides(0) == protocol.overrides(1) == {"heldout_classes": ["a2", "b1"]}


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["a1", "a2"], "holding out all of 'a1' (0, 0), 'a2' (0, 1) leaves 'a' (0,) with no seen child"),
        (["a3"], "unknown held-out class 'a3'"),
        (["b"], "held-out class 'b' (1,) is at level 0, not at level 1"),
    ],
)
def test_heldout_bad_classes_are_named(tiny_hierarchy: Hierarchy, classes: list, message: str) -> None:
    with pytest.raises(ValueError) as error:
        HeldoutClasses.resolve(HeldoutSpec(classes=classes), tiny_hierarchy.node_labels(1), tiny_hierarchy, [0])
    assert str(error.value).startswith("study key 'heldout': ") and message in str(error.value)


def test_heldout_chosen_once_or_per_seed(tiny_hierarchy: Hierarchy) -> None:
    labels = tiny_hierarchy.node_labels(1)

    def names(count: int, seed: int) -> list[str]:
        return [
            tiny_hierarchy.nodes(1)[c[-1]] for c in hcl.metrics.choose_unseen_classes(labels, count=count, seed=seed)
        ]

    once = HeldoutClasses.resolve(HeldoutSpec(count=2, seed=1), labels, tiny_hierarchy, [0, 2])
    assert (
        once.overrides(0) == once.overrides(2) == {"heldout_classes": names(2, 1)} == {"heldout_classes": ["a1", "b3"]}
    )
    per_seed = HeldoutClasses.resolve(HeldoutSpec(count=1, seed=1, per_seed=True), labels, tiny_hierarchy, [0, 1])
    assert per_seed.overrides(0) == {"heldout_classes": names(1, 1)} == {"heldout_classes": ["b3"]}
    assert per_seed.overrides(1) == {"heldout_classes": names(1, 2)} == {"heldout_classes": ["b1"]}


def test_heldout_evaluate_reads_the_report_as_a_table() -> None:
    """The protocol's table is the held-out report of the standard evaluation, one metric per key,
    each keyed by level (the study's rows ``heldout/<metric>``)."""

    def group(offset: float) -> dict:
        return {
            "num_test": 4,
            "retrieval": {
                str(lv): {"map@r": offset + lv, "precision@1": offset - lv, "num_queries": 4} for lv in range(3)
            },
            "ancestor_knn_accuracy": {"0": offset + 0.5, "1": offset + 0.6},
            "knn_accuracy": {"2": offset + 0.7},
        }

    report = {
        "heldout_classes": [[0, 1, 2]],
        "heldout_class_names": ["x"],
        "heldout_level": 2,
        "k": 3,
        "heldout": group(10.0),
        "seen": group(20.0),
    }
    table = HeldoutClasses({0: ("x",)}).evaluate({"cpcc": 0.1, "heldout": report})
    assert table == {
        "classes": ["x"],
        "map@r": {"0": 10.0, "1": 11.0, "2": 12.0},
        "precision@1": {"0": 10.0, "1": 9.0, "2": 8.0},
        "ancestor_knn_accuracy": {"0": 10.5, "1": 10.6},
        "knn_accuracy": {"2": 10.7},
        "seen_map@r": {"0": 20.0, "1": 21.0, "2": 22.0},
        "seen_precision@1": {"0": 20.0, "1": 19.0, "2": 18.0},
        "seen_ancestor_knn_accuracy": {"0": 20.5, "1": 20.6},
        "seen_knn_accuracy": {"2": 20.7},
    }
    with pytest.raises(KeyError):
        HeldoutClasses({0: ("x",)}).evaluate({"cpcc": 0.1})
