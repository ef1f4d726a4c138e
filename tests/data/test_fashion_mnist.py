"""Fashion-MNIST: IDX parsing on tiny fixtures, the Seo & Shin hierarchy, options, bad input, real files."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hcl import Hierarchy
from hcl.data import FASHION_MNIST_CLASSES, FashionMNIST, MultiViewTransform, supcon_augmentation
from hcl.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, HIERARCHY_FILE, read_idx

# Seo & Shin (2019), written out independently of the shipped JSON.
PUBLISHED = {
    "T-shirt/top": ("clothes", "tops"),
    "Trouser": ("clothes", "bottoms"),
    "Pullover": ("clothes", "tops"),
    "Dress": ("clothes", "dresses"),
    "Coat": ("clothes", "outers"),
    "Sandal": ("goods", "shoes"),
    "Shirt": ("clothes", "tops"),
    "Sneaker": ("goods", "shoes"),
    "Bag": ("goods", "accessories"),
    "Ankle boot": ("goods", "shoes"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fmnist(folder: Path, images: np.ndarray, labels: np.ndarray, split: str = "train", gz: bool = True) -> None:
    stem = {"train": "train", "test": "t10k"}[split]
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in ((f"{stem}-images-idx3-ubyte", images), (f"{stem}-labels-idx1-ubyte", labels)):
        payload = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array(list(range(10)) * 3, dtype=np.uint8)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    write_fmnist(tmp_path, images, labels, "train")
    write_fmnist(tmp_path, images[:10], labels[:10], "test")
    return tmp_path, images, labels


def test_labels_follow_the_published_hierarchy(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, raw = tiny
    ds = FashionMNIST(root)
    assert len(ds) == 30
    assert ds.labels.shape == (30, 3) and ds.labels.dtype == torch.int64
    assert ds.hierarchy.level_names == ["group", "category", "class"]
    for i, path in enumerate(ds.hierarchy.decode(ds.labels)):
        name = FASHION_MNIST_CLASSES[raw[i]]
        assert path == (*PUBLISHED[name], name)
    assert [ds.hierarchy.num_nodes(lv) for lv in range(3)] == [2, 6, 10]
    ds.hierarchy.validate(ds.labels)


def test_images_round_trip_and_sample_format(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = tiny
    ds = FashionMNIST(root, split="test")
    assert (ds.channels, ds.image_size, ds.paths) == (1, 28, None)
    assert len(ds.mean) == len(ds.std) == 1
    image = ds.get_image(3)
    assert image.mode == "L" and image.size == (28, 28)
    assert np.array_equal(np.asarray(image), images[3])
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.from_numpy(images[3]).float() / 255)
    assert torch.equal(y, ds.labels[3])
    views = FashionMNIST(root, transform=MultiViewTransform(supcon_augmentation(28, 1, ds.mean, ds.std), 2))
    x, _ = views[0]
    assert x.shape == (2, 1, 28, 28)
    with pytest.raises(IndexError):
        ds.get_image(10)


def test_torchvision_raw_layout_is_found(tmp_path: Path) -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    write_fmnist(tmp_path / "FashionMNIST" / "raw", images, np.array([0, 1, 2, 3], dtype=np.uint8), gz=False)
    ds = FashionMNIST(tmp_path)
    assert len(ds) == 4


def test_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        FashionMNIST(tmp_path)
    with pytest.raises(ValueError, match="split"):
        FashionMNIST(tmp_path, split="validation")


def test_label_count_disagreeing_with_images(tmp_path: Path) -> None:
    write_fmnist(tmp_path, np.zeros((5, 28, 28), dtype=np.uint8), np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="4 labels but .* 5 images"):
        FashionMNIST(tmp_path)


def test_malformed_idx_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4)
    with pytest.raises(ValueError, match="unsigned byte"):
        read_idx(bad)
    bad.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    bad.write_bytes(idx_bytes(np.zeros((3, 2), dtype=np.uint8))[:-1])
    with pytest.raises(ValueError, match="header promises"):
        read_idx(bad)
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=str(gz)):
        read_idx(gz)
    write_fmnist(tmp_path / "labels", np.zeros((2, 28, 28), dtype=np.uint8), np.array([3, 12], dtype=np.uint8))
    with pytest.raises(ValueError, match="label 12 at index 1"):
        FashionMNIST(tmp_path / "labels")


def test_images_are_read_on_first_use_and_truncation_is_reported(tmp_path: Path) -> None:
    write_fmnist(tmp_path, np.full((3, 28, 28), 7, dtype=np.uint8), np.array([0, 1, 2], dtype=np.uint8))
    ds = FashionMNIST(tmp_path)
    assert ds._image_array is None and ds.labels.shape == (3, 3)  # labels need no pixels
    assert np.asarray(ds.get_image(2)).max() == 7
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))[:-100]))
    truncated = FashionMNIST(tmp_path)
    with pytest.raises(ValueError, match="header promises"):
        truncated.get_image(0)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    write_fmnist(tmp_path, np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.uint8))
    with pytest.raises(ValueError, match="no samples"):
        FashionMNIST(tmp_path)


def test_unseen_classes_subset_and_levels(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, raw = tiny
    train = FashionMNIST(root, unseen_classes=["Sneaker", "Bag"])
    names = [p[-1] for p in train.hierarchy.decode(train.labels)]
    assert len(train) == 24 and "Sneaker" not in names and "Bag" not in names
    assert not train.unseen_mask.any()
    test = FashionMNIST(root, split="test", unseen_classes=["Sneaker", "Bag"])
    assert len(test) == 10 and int(test.unseen_mask.sum()) == 2
    # The hierarchy keeps held-out classes, so train and test ids agree.
    assert train.hierarchy == test.hierarchy
    with pytest.raises(ValueError, match="Loafer"):
        FashionMNIST(root, unseen_classes=["Loafer"])
    sub = FashionMNIST(root, subset=20)
    assert len(sub) == 20 and Counter(sub.labels[:, 2].tolist()) == Counter({c: 2 for c in range(10)})
    assert torch.equal(sub.labels, FashionMNIST(root, subset=20).labels)
    two = FashionMNIST(root, levels=2)
    assert two.labels.shape == (30, 2) and two.hierarchy.level_names == ["group", "category"]
    assert [p for p in two.hierarchy.decode(two.labels)] == [PUBLISHED[FASHION_MNIST_CLASSES[k]] for k in raw]


def test_shipped_json_is_a_hierarchy_file() -> None:
    hierarchy = Hierarchy.from_json(HIERARCHY_FILE)
    for name, (group, category) in PUBLISHED.items():
        assert hierarchy.path(2, hierarchy.index(2, name)) == (group, category, name)


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_ROOT.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    train, test = FashionMNIST(split="train"), FashionMNIST(split="test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert Counter(train.labels[:, 2].tolist()) == Counter({c: 6000 for c in range(10)})
    counts = np.bincount(train._images.reshape(-1), minlength=256)
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert (mean, std) == (pytest.approx(train.mean[0], abs=1e-3), pytest.approx(train.std[0], abs=1e-3))
    assert train.get_image(0).size == (28, 28)


def test_torchvision_conventions(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, raw = tiny
    ds = FashionMNIST(root, target_transform=lambda row: int(row[-1]))
    assert ds.targets is ds.labels and ds.targets.shape == (30, 3)
    assert ds.classes[0] == ["clothes", "goods"]
    assert sorted(ds.classes[1]) == sorted({category for _, category in PUBLISHED.values()})
    assert sorted(ds.classes[2]) == sorted(FASHION_MNIST_CLASSES)
    # class_to_idx and target_transform agree with the raw IDX label of every sample.
    for i in range(len(ds)):
        name = FASHION_MNIST_CLASSES[raw[i]]
        assert ds[i][1] == ds.class_to_idx[name] and ds.classes[2][ds[i][1]] == name
    assert torch.equal(FashionMNIST(root)[4][1], ds.labels[4])  # no target_transform: the label row


def test_download_fetches_nothing_and_says_where_the_files_go(tiny: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = tiny
    assert len(FashionMNIST(root, download=True)) == 30  # files present: nothing to do, as in torchvision
    empty = root / "empty"
    with pytest.raises(FileNotFoundError) as error:
        FashionMNIST(empty, download=True)
    message = str(error.value)
    assert "download=True fetches nothing" in message and f"in {empty}," in message
    assert "t10k}-{images-idx3,labels-idx1}-ubyte.gz" in message and "zalandoresearch/fashion-mnist" in message
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as error:
        FashionMNIST(empty)
    assert "download=True" not in str(error.value)
