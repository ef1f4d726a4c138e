"""Options every data set shares (subset, levels, unseen classes), the registry, and DataLoader use."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hcl import Hierarchy
from hcl.data import (
    CIFAR100,
    DATASETS,
    DeepFashionInShop,
    FashionMNIST,
    HierarchicalBatchSampler,
    HierarchicalImageFolder,
    MultiViewTransform,
    SyntheticHierarchy,
    build_dataset,
    dataset_options,
    supcon_augmentation,
)
from hcl.data.base import _stratified_subset, encode_paths, truncate_hierarchy

SMALL = {"branching": (2, 2, 3), "depth": 3, "samples_per_leaf": 5, "image_size": 16, "cache": False}


def test_registry_names_and_errors(tmp_path: Path) -> None:
    assert DATASETS == {
        "fashion_mnist": FashionMNIST,
        "synthetic": SyntheticHierarchy,
        "deepfashion": DeepFashionInShop,
        "cifar100": CIFAR100,
        "image_folder": HierarchicalImageFolder,
    }
    ds = build_dataset("synthetic", split="test", **SMALL)
    assert isinstance(ds, SyntheticHierarchy) and len(ds) == 60
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        build_dataset("mnist")
    with pytest.raises(TypeError):
        build_dataset("synthetic", color="red", **SMALL)
    for name in ("deepfashion", "cifar100", "fashion_mnist"):
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            build_dataset(name, root=tmp_path)


def test_stratified_subset_keeps_proportions_and_is_seeded() -> None:
    labels = torch.tensor([[0, 0]] * 50 + [[0, 1]] * 30 + [[1, 2]] * 20)
    keep = _stratified_subset(labels, 10, seed=0)
    assert Counter(labels[keep, 1].tolist()) == {0: 5, 1: 3, 2: 2}
    assert np.all(np.diff(keep) > 0)
    assert np.array_equal(keep, _stratified_subset(labels, 10, seed=0))
    assert not np.array_equal(keep, _stratified_subset(labels, 10, seed=1))
    # Remainders go to the largest fractional parts: 7 * (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4.
    assert Counter(labels[_stratified_subset(labels, 7, 0), 1].tolist()) == {0: 4, 1: 2, 2: 1}
    with pytest.raises(ValueError, match="subset"):
        _stratified_subset(labels, 101, 0)
    with pytest.raises(ValueError, match="subset"):
        _stratified_subset(labels, 0, 0)


def test_truncate_hierarchy_reencodes_ragged_labels() -> None:
    hierarchy = Hierarchy.from_paths([("a", "a1", "a1x"), ("a", "a2"), ("b",), ("b", "b1", "b1y")])
    labels = hierarchy.encode([("a", "a1", "a1x"), ("a", "a2"), ("b",), ("b", "b1", "b1y"), ("a", "a1")])
    cut, new = truncate_hierarchy(hierarchy, labels, 2)
    assert cut.num_levels == 2
    assert cut.decode(new) == [("a", "a1"), ("a", "a2"), ("b",), ("b", "b1"), ("a", "a1")]
    top, only = truncate_hierarchy(hierarchy, labels, 1)
    assert top.decode(only) == [("a",), ("a",), ("b",), ("b",), ("a",)]
    assert encode_paths(hierarchy, [("b",), ("a", "a2")]).tolist() == hierarchy.encode([("b",), ("a", "a2")]).tolist()


def test_levels_and_unseen_options_on_synthetic() -> None:
    full = SyntheticHierarchy(**SMALL)
    two = SyntheticHierarchy(levels=2, **SMALL)
    assert two.labels.shape == (60, 2) and two.hierarchy.level_names == ["family", "class"]
    assert two.hierarchy.decode(two.labels) == [p[:2] for p in full.hierarchy.decode(full.labels)]
    with pytest.raises(ValueError, match="levels"):
        SyntheticHierarchy(levels=4, **SMALL)
    held = SyntheticHierarchy(unseen_classes=["f1.c0", "f0.c1.v2"], **SMALL)
    assert len(held) == 60 - 15 - 5
    test = SyntheticHierarchy(split="test", unseen_classes=["f1.c0", "f0.c1.v2"], **SMALL)
    assert int(test.unseen_mask.sum()) == 15 + 5
    with pytest.raises(ValueError, match="every sample"):
        SyntheticHierarchy(unseen_classes=["f0", "f1"], **SMALL)
    with pytest.raises(TypeError, match="list of class names"):
        SyntheticHierarchy(unseen_classes="f0", **SMALL)


def test_dataloader_with_views_and_hierarchical_batches() -> None:
    ds = SyntheticHierarchy(**SMALL)
    ds.transform = MultiViewTransform(supcon_augmentation(ds.image_size, ds.channels, ds.mean, ds.std), num_views=2)
    loader = DataLoader(ds, batch_sampler=HierarchicalBatchSampler(ds.labels, 12, seed=0))
    batches = list(loader)
    assert len(batches) == 5
    x, y = batches[0]
    assert x.shape == (12, 2, 3, 16, 16) and y.shape == (12, 3) and y.dtype == torch.int64


def test_data_sets_pickle_for_worker_processes() -> None:
    ds = SyntheticHierarchy(**SMALL)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone.labels, ds.labels) and clone.hierarchy == ds.hierarchy
    assert np.array_equal(np.asarray(clone.get_image(7)), np.asarray(ds.get_image(7)))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_data_set_takes_torchvision_options(name: str) -> None:
    assert {"target_transform", "download", "subset", "unseen_classes", "levels"} <= set(dataset_options(name))


def test_an_option_a_data_set_does_not_take_is_named(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"data set 'cifar100' takes no option 'depth'; its options are .*levels"):
        build_dataset("cifar100", root=tmp_path, depth=3)
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        dataset_options("mnist")
    ds = build_dataset("synthetic", target_transform=lambda row: row[0], **SMALL)
    assert ds[59][1] == ds.labels[59, 0] == 1
