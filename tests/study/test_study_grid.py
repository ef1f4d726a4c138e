"""The grid: cells, their run directories, each cell's TrainConfig, and the protocols' part in it."""

from __future__ import annotations

from pathlib import Path

import pytest

import hcl.metrics
from hcl.hierarchy import Hierarchy
from hcl.study import AllClasses, Cell, HeldoutClasses, HeldoutSpec, StudyConfig, build_grid, cell_dir, plan_study

BASE = {"dataset": "synthetic", "data_options": {"depth": 3, "branching": [3, 2, 3], "samples_per_leaf": 4,
                                                 "image_size": 16}, "width": 8, "batch_size": 16, "lr": 0.05}


def make(**changes) -> StudyConfig:
    data = {"base": dict(BASE), "variants": {"SupCon": {"loss": "supcon"}, "HiMulCon": {"loss": "himulcon", "lr": 0.1}},
            "seeds": [3, 1, 2], "protocols": ["all"], "output_dir": "/tmp/s"}
    data.update(changes)
    return StudyConfig.from_dict(data)


def test_grid_is_seed_major_and_complete() -> None:
    cells = build_grid(make(protocols=["all", "heldout"]))
    assert len(cells) == 2 * 3 * 2 and len(set(cells)) == len(cells)
    assert cells[:4] == [Cell("SupCon", "all", 3), Cell("HiMulCon", "all", 3),
                         Cell("SupCon", "heldout", 3), Cell("HiMulCon", "heldout", 3)]
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
    assert protocol.name == "all" and protocol.overrides(5) == {} and protocol.evaluate(None, None, device="cpu") == {}


@pytest.fixture
def tiny_hierarchy() -> Hierarchy:
    return Hierarchy.from_paths([("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("b", "b3")])


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> list:
    """Stand-ins for hcl.metrics' held-out helpers, recording their calls: the study's wiring is
    tested here; the helpers themselves are tested with hcl.metrics."""
    calls: list = []

    def choose(hierarchy, count, *, seed):
        calls.append(("choose", count, seed))
        return hierarchy.nodes(1)[seed % 5: seed % 5 + count]

    monkeypatch.setattr(hcl.metrics, "choose_heldout_classes", choose, raising=False)
    monkeypatch.setattr(hcl.metrics, "check_heldout_classes", lambda h, c: calls.append(("check", list(c))),
                        raising=False)
    return calls


def test_heldout_fixed_classes(tiny_hierarchy: Hierarchy, stand_ins: list) -> None:
    protocol = HeldoutClasses.resolve(HeldoutSpec(classes=["a2", "b1"]), tiny_hierarchy, [0, 1])
    assert protocol.name == "heldout"
    assert protocol.overrides(0) == protocol.overrides(1) == {"heldout_classes": ["a2", "b1"]}
    assert stand_ins == [("check", ["a2", "b1"]), ("check", ["a2", "b1"])]


def test_heldout_chosen_once_or_per_seed(tiny_hierarchy: Hierarchy, stand_ins: list) -> None:
    once = HeldoutClasses.resolve(HeldoutSpec(count=2, seed=1), tiny_hierarchy, [0, 2])
    assert once.overrides(0) == once.overrides(2) == {"heldout_classes": ["a2", "b1"]}
    assert [c for c in stand_ins if c[0] == "choose"] == [("choose", 2, 1), ("choose", 2, 1)]
    stand_ins.clear()
    per_seed = HeldoutClasses.resolve(HeldoutSpec(count=1, seed=1, per_seed=True), tiny_hierarchy, [0, 2])
    assert per_seed.overrides(0) == {"heldout_classes": ["a2"]} and per_seed.overrides(2) == {"heldout_classes": ["b2"]}
    assert [c for c in stand_ins if c[0] == "choose"] == [("choose", 1, 1), ("choose", 1, 3)]


def test_heldout_evaluate_embeds_every_class_and_calls_the_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring only (stand-ins for the splits, the embedding and the metric): the held-out metric sees
    the test split and the WHOLE training split (held-out classes included), embedded as configured."""
    import dataclasses

    import numpy as np

    import hcl.train

    @dataclasses.dataclass
    class Cfg:
        heldout_classes: list
        embedding: str = "projection"
        eval_batch_size: int = 7
        precision: str = "fp32"
        channels_last: bool = False
        eval_split: str = "test"
        train_split: str = "train"
        knn_k: int = 3

    class Split:
        def __init__(self, name: str, cfg: Cfg) -> None:
            self.name, self.classes, self.hierarchy = name, list(cfg.heldout_classes), "H"

    calls: dict = {}

    def embed(model, split, **options):
        calls.setdefault("embedded", []).append((split.name, split.classes, options["which"], options["batch_size"]))
        return np.full((2, 3), len(split.name)), np.zeros((2, 2), dtype=np.int64), np.arange(2)

    def metric(test, test_labels, train, train_labels, classes, *, hierarchy, k):
        calls["metric"] = (test[0, 0], train[0, 0], classes, hierarchy, k)
        return {"map@r": {"0": 0.5}}

    monkeypatch.setattr(hcl.train, "build_split", lambda cfg, name: Split(name, cfg))
    monkeypatch.setattr(hcl.train, "embed_dataset", embed)
    monkeypatch.setattr(hcl.metrics, "heldout_metrics", metric, raising=False)
    result = HeldoutClasses({0: ("a2",)}).evaluate("model", Cfg(heldout_classes=["a2"]), device="cpu")
    assert result == {"map@r": {"0": 0.5}}
    assert calls["embedded"] == [("test", [], "projection", 7), ("train", [], "projection", 7)]
    assert calls["metric"] == (4, 5, ["a2"], "H", 3)
