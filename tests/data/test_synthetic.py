"""Synthetic hierarchical data: determinism, labels, nesting of visual factors, cache, parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import hcl.data.synthetic as synthetic
from hcl.data import HierarchicalBatchSampler, SyntheticHierarchy, sampler_coverage

SMALL = {"branching": (2, 3, 2), "depth": 3, "samples_per_leaf": 4, "image_size": 16}


def test_default_size_levels_and_names(tmp_path: Path) -> None:
    ds = SyntheticHierarchy(tmp_path)
    assert len(ds) == 10_000 and ds.labels.shape == (10_000, 4)
    assert ds.hierarchy.level_names == ["family", "class", "variant", "instance"]
    assert [ds.hierarchy.num_nodes(lv) for lv in range(4)] == [5, 20, 80, 400]
    assert (ds.channels, ds.image_size, ds.paths) == (3, 32, None)
    assert torch.bincount(ds.labels[:, 3]).tolist() == [25] * 400
    image = ds.get_image(0)
    assert image.mode == "RGB" and image.size == (32, 32)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and torch.equal(y, ds.labels[0])
    test = SyntheticHierarchy(tmp_path, split="test")
    assert len(test) == 2_000 and test.hierarchy == ds.hierarchy
    coverage = sampler_coverage(ds.labels, list(HierarchicalBatchSampler(ds.labels, 256)))
    assert min(coverage) >= 0.95


def test_labels_name_the_path_of_each_image() -> None:
    ds = SyntheticHierarchy(cache=False, **SMALL)
    assert len(ds) == 2 * 3 * 2 * 4
    paths = ds.hierarchy.decode(ds.labels)
    # Row-major leaves, samples_per_leaf consecutive views each.
    assert paths[0] == ("f0", "f0.c0", "f0.c0.v0")
    assert paths[4] == ("f0", "f0.c0", "f0.c0.v1")
    assert paths[-1] == ("f1", "f1.c2", "f1.c2.v1")
    ds.hierarchy.validate(ds.labels)


def test_deterministic_in_seed_and_split() -> None:
    a = SyntheticHierarchy(cache=False, seed=3, **SMALL)
    b = SyntheticHierarchy(cache=False, seed=3, **SMALL)
    c = SyntheticHierarchy(cache=False, seed=4, **SMALL)
    t = SyntheticHierarchy(cache=False, seed=3, split="test", **SMALL)
    assert np.array_equal(a._images, b._images)
    assert not np.array_equal(a._images, c._images)
    assert not np.array_equal(a._images, t._images)
    assert torch.equal(a.labels, t.labels)


def test_noise_zero_makes_views_identical_and_noise_varies_them() -> None:
    still = SyntheticHierarchy(cache=False, noise=0.0, **SMALL)
    views = still._images.reshape(12, 4, 16, 16, 3)
    assert (views == views[:, :1]).all()
    assert len({v.tobytes() for v in views[:, 0]}) == 12  # every leaf looks different
    noisy = SyntheticHierarchy(cache=False, noise=1.0, **SMALL)._images.reshape(12, 4, 16, 16, 3)
    assert not (noisy == noisy[:, :1]).all()


def test_visual_factors_nest_coarse_levels_are_easiest() -> None:
    kwargs = {"branching": (3, 3, 3, 3), "cache": False}
    train = SyntheticHierarchy(samples_per_leaf=8, **kwargs)
    test = SyntheticHierarchy(split="test", samples_per_leaf=2, **kwargs)
    x = torch.from_numpy(train._images.reshape(len(train), -1)).float()
    xt = torch.from_numpy(test._images.reshape(len(test), -1)).float()
    nearest = torch.cdist(xt, x).argmin(dim=1)
    accuracy = [(train.labels[nearest, lv] == test.labels[:, lv]).float().mean().item() for lv in range(4)]
    # 1-NN on raw pixels: families and classes are easy, instances far above chance (1/81).
    assert accuracy[0] >= 0.95 and accuracy[1] >= 0.8
    assert accuracy[3] >= 10 / 81, accuracy


def test_any_depth_and_branching() -> None:
    deep = SyntheticHierarchy(cache=False, depth=5, branching=2, samples_per_leaf=2, image_size=16)
    assert deep.labels.shape == (64, 5) and deep.hierarchy.level_names[-1] == "level4"
    flat = SyntheticHierarchy(cache=False, depth=1, branching=[7], samples_per_leaf=3)
    assert flat.labels.shape == (21, 1) and flat.hierarchy.num_nodes(0) == 7
    with pytest.raises(ValueError, match="one entry per level"):
        SyntheticHierarchy(cache=False, depth=3, branching=(2, 2))
    with pytest.raises(ValueError, match="noise"):
        SyntheticHierarchy(cache=False, noise=-1.0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticHierarchy(cache=False, image_size=8)
    with pytest.raises(ValueError, match="split"):
        SyntheticHierarchy(cache=False, split="val")


def test_cache_is_written_atomically_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = SyntheticHierarchy(tmp_path, **SMALL)
    assert first.cache_path is not None and first.cache_path.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_path.name]  # no temp files left

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered although cached")

    monkeypatch.setattr(synthetic, "render_synthetic", fail)
    again = SyntheticHierarchy(tmp_path, **SMALL)
    assert np.array_equal(first._images, again._images)
    with pytest.raises(AssertionError, match="rendered"):
        SyntheticHierarchy(tmp_path, **{**SMALL, "seed": 9})  # other parameters, other cache entry


def test_corrupt_cache_entry_is_rendered_again(tmp_path: Path) -> None:
    first = SyntheticHierarchy(tmp_path, **SMALL)
    assert first.cache_path is not None
    first.cache_path.write_bytes(b"garbage")
    again = SyntheticHierarchy(tmp_path, **SMALL)
    assert np.array_equal(first._images, again._images)
    assert np.load(first.cache_path)["images"].shape == first._images.shape


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCL_CACHE_DIR", str(tmp_path / "cache"))
    ds = SyntheticHierarchy(**SMALL)
    assert ds.cache_path is not None and ds.cache_path.parent == tmp_path / "cache"
    assert ds.cache_path.is_file()


def test_torchvision_conventions_and_download_is_ignored() -> None:
    ds = SyntheticHierarchy(cache=False, download=True, target_transform=lambda row: row[-1] * 10, **SMALL)
    assert ds.targets is ds.labels and ds.targets.shape == (48, 3)
    assert ds.classes[0] == ["f0", "f1"]
    assert ds.classes[1] == [f"f{f}.c{c}" for f in range(2) for c in range(3)]
    assert ds.classes[2] == [f"f{f}.c{c}.v{v}" for f in range(2) for c in range(3) for v in range(2)]
    for i in (0, 5, 47):  # samples_per_leaf=4 consecutive views per row-major leaf
        assert ds[i][1] == 10 * (i // 4) and ds.class_to_idx[ds.classes[2][i // 4]] == i // 4
