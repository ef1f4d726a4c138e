"""HierarchicalImageFolder: nested (ragged) trees, flat folders + parent map, WordNet ids, splits, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from hcl.data import HierarchicalImageFolder, build_dataset


def make_image(path: Path, value: int = 128, size: tuple[int, int] = (10, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 60)).save(path)


NESTED = [
    "vehicle/car/d1.png",
    "vehicle/e1.png",
    "animal/dog/beagle/a1.png",
    "animal/dog/beagle/a2.jpg",
    "animal/dog/b1.png",
    "animal/cat/c1.png",
]


def test_nested_ragged_tree(tmp_path: Path) -> None:
    for i, rel in enumerate(NESTED):  # created in non-sorted order on purpose
        make_image(tmp_path / rel, value=i * 30)
    (tmp_path / "animal" / "notes.txt").write_text("not an image")
    ds = HierarchicalImageFolder(tmp_path, level_names=["kingdom", "kind", "breed"])
    assert len(ds) == 6 and ds.labels.shape == (6, 3)
    assert ds.paths == sorted(str(tmp_path / r) for r in NESTED)
    by_file = dict(zip(ds.paths, ds.hierarchy.decode(ds.labels)))
    assert by_file[str(tmp_path / "animal/dog/beagle/a2.jpg")] == ("animal", "dog", "beagle")
    assert by_file[str(tmp_path / "animal/dog/b1.png")] == ("animal", "dog")
    assert by_file[str(tmp_path / "vehicle/e1.png")] == ("vehicle",)
    assert ds.labels[[p.endswith("e1.png") for p in ds.paths].index(True)].tolist() == [1, -1, -1]
    assert ds.hierarchy.nodes(0) == ["animal", "vehicle"]  # sorted, not creation order
    assert ds.hierarchy.level_names == ["kingdom", "kind", "breed"]
    assert (ds.channels, ds.image_size) == (3, 8)
    x, y = ds[0]
    assert x.shape == (3, 8, 10) and y.tolist() == ds.labels[0].tolist()


def test_split_folders_share_one_hierarchy(tmp_path: Path) -> None:
    make_image(tmp_path / "train/a/x/1.png")
    make_image(tmp_path / "train/b/y/2.png")
    make_image(tmp_path / "val/a/z/3.png")  # a class only the test split has
    train = build_dataset("image_folder", root=tmp_path, split="train")
    test = build_dataset("image_folder", root=tmp_path, split="test")
    assert len(train) == 2 and len(test) == 1
    assert train.hierarchy == test.hierarchy and train.hierarchy.nodes(1) == ["x", "z", "y"]
    assert test.hierarchy.decode(test.labels) == [("a", "z")]


def test_parent_map_dict_and_json(tmp_path: Path) -> None:
    for cls in ("tabby", "beagle", "car"):
        make_image(tmp_path / "images" / cls / "1.png")
    parents = {"beagle": "dog", "dog": "animal", "animal": None, "tabby": "cat", "cat": "animal", "car": "vehicle"}
    ds = HierarchicalImageFolder(tmp_path / "images", parent_map=parents)
    expected = [("animal", "dog", "beagle"), ("vehicle", "car"), ("animal", "cat", "tabby")]
    assert ds.hierarchy.decode(ds.labels) == expected
    (tmp_path / "map.json").write_text(json.dumps(parents))
    from_file = HierarchicalImageFolder(tmp_path / "images", parent_map=tmp_path / "map.json")
    assert from_file.hierarchy == ds.hierarchy and from_file.labels.tolist() == ds.labels.tolist()


def test_parent_map_errors(tmp_path: Path) -> None:
    make_image(tmp_path / "images/beagle/1.png")
    make_image(tmp_path / "images/tabby/1.png")
    with pytest.raises(ValueError, match="'tabby' is not in the parent map"):
        HierarchicalImageFolder(tmp_path / "images", parent_map={"beagle": "dog"})
    with pytest.raises(ValueError, match="cycle"):
        HierarchicalImageFolder(tmp_path / "images", parent_map={"beagle": "dog", "dog": "beagle", "tabby": None})
    with pytest.raises(FileNotFoundError, match="nope.json"):
        HierarchicalImageFolder(tmp_path / "images", parent_map=tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON"):
        HierarchicalImageFolder(tmp_path / "images", parent_map=tmp_path / "bad.json")
    make_image(tmp_path / "images/tabby/kitten/2.png")
    with pytest.raises(ValueError, match="flat folders"):
        HierarchicalImageFolder(tmp_path / "images", parent_map={"beagle": None, "tabby": None})


def test_wordnet_ids_as_class_folders(tmp_path: Path, fixture_wordnet: tuple[Path, dict[str, str]]) -> None:
    wordnet_root, wnid = fixture_wordnet
    for key in ("beagle", "cat", "scooter"):
        make_image(tmp_path / "images" / wnid[key] / "1.png")
    ds = HierarchicalImageFolder(tmp_path / "images", wordnet_depth=3, wordnet_root=wordnet_root)
    paths = dict(zip([p.split("/")[-2] for p in ds.paths], ds.hierarchy.decode(ds.labels)))
    assert paths[wnid["beagle"]] == (wnid["animal"], wnid["dog"], wnid["beagle"])
    assert paths[wnid["scooter"]] == (wnid["artifact"], wnid["scooter"])
    with pytest.raises(ValueError, match="either"):
        HierarchicalImageFolder(tmp_path / "images", wordnet_depth=3, parent_map={})


def test_bad_trees(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HierarchicalImageFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="root="):
        HierarchicalImageFolder(None)
    make_image(tmp_path / "loose/stray.png")
    make_image(tmp_path / "loose/a/1.png")
    with pytest.raises(ValueError, match="outside any class folder"):
        HierarchicalImageFolder(tmp_path / "loose")
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        HierarchicalImageFolder(tmp_path / "empty")
    make_image(tmp_path / "flat/a/1.png")
    with pytest.raises(FileNotFoundError, match="no 'test' split"):
        HierarchicalImageFolder(tmp_path / "flat", split="test")
    make_image(tmp_path / "twice/x/shared/1.png")
    make_image(tmp_path / "twice/y/shared/2.png")
    with pytest.raises(ValueError, match="two parents"):
        HierarchicalImageFolder(tmp_path / "twice")


def test_corrupt_image_and_grey_mode(tmp_path: Path) -> None:
    make_image(tmp_path / "a/1.png", size=(6, 6))
    make_image(tmp_path / "a/2.png")
    (tmp_path / "a/2.png").write_bytes(b"\x89PNG broken")
    ds = HierarchicalImageFolder(tmp_path, channels=1)
    assert ds.get_image(0).mode == "L" and ds[0][0].shape == (1, 6, 6)
    with pytest.raises(OSError, match=r"image 1 .*a/2\.png"):
        ds.get_image(1)


@pytest.mark.parametrize("options", [{"unseen_classes": ["a"]}, {"subset": 4}])
def test_bad_images_are_named_by_their_data_set_index(tmp_path: Path, options: dict[str, object]) -> None:
    """Under unseen classes or a subset, errors give the index passed to ``dataset[i]``, not the file's position."""
    for top, leaf in (("a", "x"), ("b", "y")):
        for i in range(4):
            make_image(tmp_path / top / leaf / f"{i}.png", value=40 * i)
    files = sorted(str(p) for p in tmp_path.rglob("*.png"))
    ds = HierarchicalImageFolder(tmp_path, **options)
    assert ds.paths is not None and len(ds) == 4
    corrupt, missing = len(ds) - 1, len(ds) - 2
    assert files.index(ds.paths[corrupt]) != corrupt and files.index(ds.paths[missing]) != missing
    Path(ds.paths[corrupt]).write_bytes(b"\x89PNG broken")
    Path(ds.paths[missing]).unlink()
    with pytest.raises(OSError, match=rf"cannot decode image {corrupt} \({re.escape(ds.paths[corrupt])}\)"):
        ds[corrupt]
    with pytest.raises(FileNotFoundError, match=rf"image {missing} is missing: {re.escape(ds.paths[missing])}"):
        ds[missing]


def test_a_corrupt_first_image_only_matters_when_its_size_is_needed(tmp_path: Path) -> None:
    # Without image_size the first image's size is read at construction; with it, nothing is
    # opened until an item is asked for, so one bad file cannot block the whole data set.
    (tmp_path / "a").mkdir()
    (tmp_path / "a/0.png").write_bytes(b"\x89PNG broken")
    make_image(tmp_path / "a/1.png", size=(6, 6))
    with pytest.raises(OSError, match=r"image 0 .*a/0\.png"):
        HierarchicalImageFolder(tmp_path)
    ds = HierarchicalImageFolder(tmp_path, image_size=6)
    assert ds[1][0].shape == (3, 6, 6)
    with pytest.raises(OSError, match=r"image 0 .*a/0\.png"):
        ds[0]


def test_torchvision_conventions_on_a_ragged_tree(tmp_path: Path) -> None:
    for rel in NESTED:
        make_image(tmp_path / rel)
    ds = HierarchicalImageFolder(tmp_path, target_transform=lambda row: row.tolist())
    assert ds.targets is ds.labels and ds.targets.shape == (6, 3)
    assert ds.classes == [["animal", "vehicle"], ["cat", "dog", "car"], ["beagle"]]
    assert ds.class_to_idx == {"beagle": 0}
    for path, target in zip(ds.paths, (ds[i][1] for i in range(len(ds)))):
        folders = Path(path).relative_to(tmp_path).parts[:-1]
        assert tuple(ds.classes[level][i] for level, i in enumerate(target) if i >= 0) == folders
        assert (target[-1] == ds.class_to_idx["beagle"]) == (folders[-1] == "beagle")  # -1 above the finest level


def test_download_fetches_nothing_and_says_what_root_needs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"root does not exist: {re.escape(str(tmp_path / 'no'))}.*"):
        HierarchicalImageFolder(tmp_path / "no")
    with pytest.raises(FileNotFoundError, match="download=True fetches nothing.*class folders under root"):
        HierarchicalImageFolder(tmp_path / "no", download=True)
    with pytest.raises(FileNotFoundError, match="needs root="):
        HierarchicalImageFolder(download=True)
    make_image(tmp_path / "a" / "x.png")
    assert len(HierarchicalImageFolder(tmp_path, download=True)) == 1
