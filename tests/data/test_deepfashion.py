"""DeepFashion In-Shop on a tiny fixture in the official layout (img tree + list_eval_partition.txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hcl.data import DeepFashionInShop, build_dataset

# (image name, item id, status)
ROWS = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/03_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Denim/id_00000010/01_1_front.jpg", "id_00000010", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "train"),
    ("img/MEN/Denim/id_00000080/01_7_additional.jpg", "id_00000080", "train"),
    ("img/MEN/Tees_Tanks/id_00000100/04_1_front.jpg", "id_00000100", "query"),
    ("img/MEN/Tees_Tanks/id_00000100/04_2_side.jpg", "id_00000100", "gallery"),
    ("img/WOMEN/Dresses/id_00000200/01_1_front.jpg", "id_00000200", "gallery"),
    ("img/WOMEN/Dresses/id_00000200/01_3_back.jpg", "id_00000200", "query"),
]


def write_partition(path: Path, rows: list[tuple[str, str, str]], count: int | None = None) -> None:
    lines = [str(len(rows) if count is None else count), "image_name item_id evaluation_status"]
    lines += [f"{name:<60}{item:<20}{status}" for name, item, status in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def build_inshop(
    root: Path, rows: list[tuple[str, str, str]] = ROWS, images_under: str = "", eval_dir: str = ""
) -> Path:
    for i, (name, _, _) in enumerate(rows):
        file = root / images_under / name
        file.parent.mkdir(parents=True, exist_ok=True)
        color = (i * 20 % 256, 100, 200)
        Image.new("RGB", (12, 16), color).save(file, format="JPEG")
    write_partition(root / eval_dir / "list_eval_partition.txt", rows)
    return root


def test_splits_labels_and_hierarchy(tmp_path: Path) -> None:
    root = build_inshop(tmp_path)
    train = DeepFashionInShop(root, "train")
    assert len(train) == 6 and train.labels.shape == (6, 4)
    assert train.hierarchy.level_names == ["gender", "category", "product", "variation"]
    assert train.hierarchy.decode(train.labels[:1]) == [
        ("WOMEN", "WOMEN/Dresses", "WOMEN/Dresses/id_00000002", "WOMEN/Dresses/id_00000002/02")
    ]
    # Same product and variation share the row; another variation differs only at the last level.
    assert train.labels[0].tolist() == train.labels[1].tolist()
    assert train.labels[0, :3].tolist() == train.labels[2, :3].tolist() and train.labels[0, 3] != train.labels[2, 3]
    # Denim exists for both genders and stays two different categories.
    assert train.labels[3, 1] != train.labels[4, 1]
    assert train.paths == [str(root / r[0]) for r in ROWS[:6]]
    assert train.item_ids[:2] == ["id_00000002", "id_00000002"]
    query, gallery, test = (DeepFashionInShop(root, s) for s in ("query", "gallery", "test"))
    assert (len(query), len(gallery), len(test)) == (2, 2, 4)
    assert query.item_ids == ["id_00000100", "id_00000200"] and gallery.item_ids == ["id_00000100", "id_00000200"]
    assert test.item_ids == query.item_ids + gallery.item_ids
    assert train.hierarchy == query.hierarchy  # one hierarchy over all splits: ids agree
    assert query.labels[0, :3].tolist() == gallery.labels[0, :3].tolist()
    assert (train.channels, train.image_size) == (3, 256)


def test_images_decode_as_rgb(tmp_path: Path) -> None:
    root = build_inshop(tmp_path)
    ds = build_dataset("deepfashion", root=root, split="gallery")
    image = ds.get_image(0)
    assert image.mode == "RGB" and image.size == (12, 16)
    x, y = ds[1]
    assert x.shape == (3, 16, 12)
    assert y.tolist() == ds.labels[1].tolist()


def test_official_download_layout_with_img_and_eval_folders(tmp_path: Path) -> None:
    root = build_inshop(tmp_path, images_under="Img", eval_dir="Eval")
    ds = DeepFashionInShop(root, "train")
    assert len(ds) == 6 and ds.paths is not None and ds.paths[0].startswith(str(root / "Img" / "img"))


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        DeepFashionInShop(tmp_path)
    root = build_inshop(tmp_path)
    (root / ROWS[7][0]).unlink()
    with pytest.raises(FileNotFoundError, match="id_00000100/04_2_side.jpg"):
        DeepFashionInShop(root, "gallery")
    assert len(DeepFashionInShop(root, "train")) == 6  # other splits are unaffected


def test_corrupt_image_names_path_and_index(tmp_path: Path) -> None:
    root = build_inshop(tmp_path)
    (root / ROWS[1][0]).write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = DeepFashionInShop(root)
    ds.get_image(0)
    with pytest.raises(OSError, match=r"image 1 .*02_2_side\.jpg"):
        ds[1]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: ["7"] + lines[1:], "announces 7 images but 10"),
        (lambda lines: [lines[0], "image_name evaluation_status"] + lines[2:], "second line"),
        (lambda lines: ["many"] + lines[1:], "first line"),
        (
            lambda lines: lines[:3] + ["img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002"] + lines[4:],
            "expected",
        ),
        (lambda lines: lines[:2] + [lines[2].replace("train", "validation")] + lines[3:], "unknown evaluation status"),
        (lambda lines: lines[:2] + [lines[2].replace("id_00000002 ", "id_00000003 ")] + lines[3:], "disagrees"),
        (lambda lines: lines[:2] + [lines[2].replace("02_1_front.jpg", "front.jpg")] + lines[3:], "is not img/"),
    ],
)
def test_malformed_partition_files(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    root = build_inshop(tmp_path)
    partition = root / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    partition.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(ValueError, match=message):
        DeepFashionInShop(root)


@pytest.mark.parametrize(
    ("duplicate", "message"),
    [
        (ROWS[1], r":5: image '.*02_2_side\.jpg' \(train\) is already listed on line 4"),
        (
            ROWS[7][:2] + ("query",),
            r":11: image '.*04_2_side\.jpg' \(gallery\) is already listed on line 10 \(query\) \(a query image in the "
            r"gallery would find itself\)",
        ),
    ],
    ids=["duplicated-row", "query-also-in-gallery"],
)
def test_an_image_listed_twice_is_named_with_both_lines(
    tmp_path: Path, duplicate: tuple[str, str, str], message: str
) -> None:
    rows = list(ROWS)
    rows.insert(ROWS.index(duplicate) if duplicate in ROWS else 7, duplicate)
    build_inshop(tmp_path, rows)
    with pytest.raises(ValueError, match=message) as info:
        DeepFashionInShop(tmp_path)
    assert str(tmp_path / "list_eval_partition.txt") in str(info.value)


@pytest.mark.parametrize("encoding", ["utf-16", "binary"])
def test_a_partition_file_that_is_not_utf8_is_named(tmp_path: Path, encoding: str) -> None:
    root = build_inshop(tmp_path)
    partition = root / "list_eval_partition.txt"
    text = partition.read_text()
    partition.write_bytes(text.encode("utf-16") if encoding == "utf-16" else bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"list_eval_partition\.txt: not UTF-8 text") as info:
        DeepFashionInShop(root)
    assert str(partition) in str(info.value)


def test_empty_split_and_options(tmp_path: Path) -> None:
    root = build_inshop(tmp_path, rows=[r for r in ROWS if r[2] != "query"])
    with pytest.raises(ValueError, match="no samples"):
        DeepFashionInShop(root, "query")
    ds = DeepFashionInShop(root, "train", unseen_classes=["MEN/Denim"], levels=2)
    assert len(ds) == 4 and ds.labels.shape == (4, 2)
    assert ds.item_ids == ["id_00000002"] * 3 + ["id_00000010"]
    sub = DeepFashionInShop(root, "train", subset=3)
    assert len(sub) == 3 and len(sub.item_ids) == 3 and sub.paths is not None and len(sub.paths) == 3
    assert np.all(np.diff([ROWS.index(next(r for r in ROWS if r[0] in p)) for p in sub.paths]) > 0)


def test_corrupt_image_under_unseen_classes_names_its_data_set_index(tmp_path: Path) -> None:
    """Without the held-out dresses, the MEN/Denim front view is row 4 of the split but sample 1."""
    root = build_inshop(tmp_path)
    (root / ROWS[4][0]).write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = DeepFashionInShop(root, "train", unseen_classes=["WOMEN/Dresses"])
    assert ds.paths is not None and ds.paths.index(str(root / ROWS[4][0])) == 1
    ds.get_image(0)
    with pytest.raises(OSError, match=r"cannot decode image 1 \(.*id_00000080/01_1_front\.jpg\)"):
        ds[1]


def test_torchvision_conventions(tmp_path: Path) -> None:
    root = build_inshop(tmp_path)
    ds = DeepFashionInShop(root, "test", target_transform=lambda row: row[1])
    assert ds.targets is ds.labels and ds.targets.shape == (4, 4)
    assert ds.classes[0] == ["MEN", "WOMEN"]
    assert len(ds.classes) == 4 and ds.classes[3] == ds.hierarchy.nodes(3)
    names = [row[0] for row in ROWS if row[2] == "query"] + [row[0] for row in ROWS if row[2] == "gallery"]
    for i, name in enumerate(names):  # the category of each image, from its file path
        assert ds.classes[1][int(ds[i][1])] == "/".join(name.split("/")[1:3])
    assert ds.class_to_idx["MEN/Tees_Tanks/id_00000100/04"] == ds.labels[0, 3]


def test_download_fetches_nothing_and_says_where_the_files_go(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        DeepFashionInShop(tmp_path, download=True)
    message = str(error.value)
    assert "download=True fetches nothing" in message and "InShopRetrieval" in message
    assert f"in {tmp_path} (giving {tmp_path / 'img'})" in message and "list_eval_partition.txt" in message
    build_inshop(tmp_path)
    (tmp_path / ROWS[0][0]).unlink()
    with pytest.raises(FileNotFoundError, match="1 image.*missing.*Img/img.zip"):
        DeepFashionInShop(tmp_path, download=True)
