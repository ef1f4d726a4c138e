"""CIFAR-100 from tiny pickles in the official format (bytes keys, channel-major rows)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hcl.data import CIFAR100, build_dataset
from hcl.data.cifar import load_cifar_pickle

FINE = [f"fine_{k:02d}" for k in range(100)]
COARSE = [f"coarse_{k:02d}" for k in range(20)]


def coarse_of(fine: int) -> int:
    return fine // 5


def write_cifar(
    root: Path,
    split: str,
    fine: list[int],
    coarse: list[int] | None = None,
    num_images: int | None = None,
    protocol: int = 2,
) -> np.ndarray:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(fine) if num_images is None else num_images
    data = np.random.default_rng(len(fine)).integers(0, 256, (n, 3072), dtype=np.uint8)
    batch = {
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        b"batch_label": f"{split} batch".encode(),
        b"fine_labels": fine,
        b"coarse_labels": [coarse_of(f) for f in fine] if coarse is None else coarse,
        b"data": data,
    }
    with open(folder / split, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    meta = {b"fine_label_names": [n.encode() for n in FINE], b"coarse_label_names": [n.encode() for n in COARSE]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=protocol)
    return data


@pytest.fixture
def cifar_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    fine = [0, 1, 5, 99, 0, 42, 43, 7, 99, 1]
    data = write_cifar(tmp_path, "train", fine)
    write_cifar(tmp_path, "test", [0, 5, 99, 42])
    return tmp_path, data


def test_labels_names_and_hierarchy(cifar_root: tuple[Path, np.ndarray]) -> None:
    root, _ = cifar_root
    ds = CIFAR100(root)
    assert len(ds) == 10 and ds.labels.shape == (10, 2)
    assert ds.hierarchy.level_names == ["superclass", "class"]
    fine = [0, 1, 5, 99, 0, 42, 43, 7, 99, 1]
    assert ds.hierarchy.decode(ds.labels) == [(COARSE[coarse_of(f)], FINE[f]) for f in fine]
    # Only the classes present in the split become nodes.
    assert sorted(ds.hierarchy.nodes(1)) == sorted({FINE[f] for f in fine})
    assert (ds.channels, ds.image_size, ds.paths) == (3, 32, None)


def test_pixels_are_unpacked_channel_major(cifar_root: tuple[Path, np.ndarray]) -> None:
    root, data = cifar_root
    ds = CIFAR100(root / "cifar-100-python")  # the folder itself works as root too
    image = np.asarray(ds.get_image(2))
    assert image.shape == (32, 32, 3)
    assert np.array_equal(image[..., 0].reshape(-1), data[2, :1024])
    assert np.array_equal(image[..., 2].reshape(-1), data[2, 2048:])
    x, y = ds[2]
    assert x.shape == (3, 32, 32) and torch.equal(y, ds.labels[2])
    assert torch.allclose(x[1].reshape(-1), torch.from_numpy(data[2, 1024:2048]).float() / 255)


def test_test_split_and_registry(cifar_root: tuple[Path, np.ndarray]) -> None:
    root, _ = cifar_root
    test = build_dataset("cifar100", root=root, split="test")
    assert len(test) == 4
    assert test.hierarchy.decode(test.labels)[2] == (COARSE[19], FINE[99])


def test_python3_pickle_protocols_load(tmp_path: Path) -> None:
    write_cifar(tmp_path, "train", [3, 4], protocol=pickle.HIGHEST_PROTOCOL)
    assert len(CIFAR100(tmp_path)) == 2


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        CIFAR100(tmp_path)
    write_cifar(tmp_path, "train", [0, 1, 2], num_images=4)
    with pytest.raises(ValueError, match="4 images but 3 fine"):
        CIFAR100(tmp_path)
    write_cifar(tmp_path, "train", [0, 1], coarse=[0, 0, 0])
    with pytest.raises(ValueError, match="2 fine and 3 coarse"):
        CIFAR100(tmp_path)
    write_cifar(tmp_path, "train", [0, 0], coarse=[0, 3])
    with pytest.raises(ValueError, match="fine_00.*two superclasses"):
        CIFAR100(tmp_path)
    write_cifar(tmp_path, "train", [0, 100])
    with pytest.raises(ValueError, match=r"fine_labels\[1\] = 100 has no name"):
        CIFAR100(tmp_path)
    write_cifar(tmp_path, "train", [])
    with pytest.raises(ValueError, match="no images"):
        CIFAR100(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable CIFAR pickle"):
        CIFAR100(tmp_path)


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def test_pickles_cannot_run_code(tmp_path: Path) -> None:
    path = tmp_path / "evil"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Exploit()}, f)
    with pytest.raises(ValueError, match="refusing to load"):
        load_cifar_pickle(path)


def test_torchvision_conventions(cifar_root: tuple[Path, np.ndarray]) -> None:
    root, _ = cifar_root
    fine = [0, 1, 5, 99, 0, 42, 43, 7, 99, 1]
    ds = CIFAR100(root, target_transform=lambda row: row.tolist())
    assert ds.targets is ds.labels and ds.targets.shape == (10, 2)
    assert sorted(ds.classes[0]) == sorted({COARSE[coarse_of(f)] for f in fine})
    assert sorted(ds.classes[1]) == sorted({FINE[f] for f in fine})
    for i, f in enumerate(fine):
        coarse_id, fine_id = ds[i][1]
        assert (ds.classes[0][coarse_id], ds.classes[1][fine_id]) == (COARSE[coarse_of(f)], FINE[f])
        assert ds.class_to_idx[FINE[f]] == fine_id


def test_download_fetches_nothing_and_says_where_the_files_go(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        CIFAR100(tmp_path, download=True)
    message = str(error.value)
    assert "download=True fetches nothing" in message and "cifar-100-python.tar.gz" in message
    assert f"in {tmp_path}," in message and "www.cs.toronto.edu/~kriz/cifar.html" in message
    write_cifar(tmp_path, "train", [3, 4])
    assert len(CIFAR100(tmp_path, download=True)) == 2
