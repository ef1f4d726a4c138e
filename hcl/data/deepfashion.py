"""DeepFashion In-Shop Clothes Retrieval (Liu et al., CVPR 2016), read from its official files.

Expected layout under ``root`` (as distributed: ``Img/img.zip`` unpacked, ``Eval/`` copied)::

    root/img/{MEN,WOMEN}/<Category>/id_XXXXXXXX/NN_V_view.jpg    (or root/Img/img/...)
    root/list_eval_partition.txt                                 (or root/Eval/list_eval_partition.txt)

``list_eval_partition.txt`` holds the number of images on its first line, the column names on
the second (``image_name item_id evaluation_status``), then one ``<image name> <item id>
<train|query|gallery>`` row per image. Labels are gender > category > product > variation: the
reference code's (category, product id, variation ``NN``) plus the gender folder. Node names are
path-qualified (``"WOMEN/Dresses/id_00000002/02"``) so that they are unique within each level.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hcl.data.base import HierarchicalDataset, encode_paths
from hcl.data.files import check_split, default_data_dir, find_first, official_files, open_image
from hcl.hierarchy import Hierarchy

__all__ = ["DeepFashionInShop", "read_inshop_partition"]

_OFFICIAL_SOURCE = "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_STATUSES = ("train", "query", "gallery")
_SPLITS = {"train": ("train",), "query": ("query",), "gallery": ("gallery",), "test": ("query", "gallery")}
_FILE_NAME = re.compile(r"^(\d+)_(\d+)_[A-Za-z]+\.jpg$")
LEVEL_NAMES = ("gender", "category", "product", "variation")


class DeepFashionInShop(HierarchicalDataset):
    """DeepFashion In-Shop images with 4-level labels and the benchmark's splits.

    Args:
        root: the data set directory (default ``deepfashion`` in :func:`hcl.data.files.default_data_dir`:
            ``$HCL_DATA_DIR``, the repository's ``data/`` or ``./data``), see the module docstring.
        split: ``"train"``, ``"query"``, ``"gallery"``, or ``"test"`` (query then gallery).
        transform: applied to each PIL image (see :class:`hcl.data.base.HierarchicalDataset`).
        target_transform: applied to each label row.
        download: accepted for torchvision's sake; nothing is fetched (the data set is licensed
            per user), a missing file says where to put the official ones.
        subset: keep a seeded, stratified subset of this size.
        unseen_classes: node names held out of the training split (e.g. ``["MEN/Denim"]``).
        levels: keep only the first k levels.

    Attributes:
        item_ids: the item id column of each sample (the retrieval benchmark's identity).

    Raises:
        FileNotFoundError: the partition file or an image of the split is missing (the message
            says where the official files go).
        ValueError: a malformed partition file (bad header, count, row or image name).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        download: bool = False,
        subset: int | None = None,
        unseen_classes: Sequence[str] | None = None,
        levels: int | None = None,
    ) -> None:
        super().__init__(
            transform=transform,
            target_transform=target_transform,
            channels=3,
            image_size=256,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
        )
        check_split(split, tuple(_SPLITS), "DeepFashion In-Shop")
        self.root = Path(root) if root is not None else default_data_dir() / "deepfashion"
        where = (
            f"get the In-Shop Clothes Retrieval benchmark ({_OFFICIAL_SOURCE}), unpack its Img/img.zip "
            f"in {self.root} (giving {self.root / 'img'}) and copy Eval/list_eval_partition.txt there"
        )
        with official_files("DeepFashion In-Shop", where, download=download):
            partition = find_first(
                (self.root / "list_eval_partition.txt", self.root / "Eval" / "list_eval_partition.txt"),
                "DeepFashion In-Shop partition file list_eval_partition.txt",
            )
            rows = read_inshop_partition(partition)
            base = self.root / "Img" if (self.root / "Img" / "img").is_dir() else self.root
            paths = [_label_path(name, item, partition, line) for name, item, _, line in rows]
            hierarchy = Hierarchy.from_paths(paths, level_names=LEVEL_NAMES)
            wanted = [i for i, row in enumerate(rows) if row[2] in _SPLITS[split]]
            if split == "test":  # query rows first, then gallery rows, each in file order
                wanted.sort(key=lambda i: _STATUSES.index(rows[i][2]))
            files = [str(base / rows[i][0]) for i in wanted]
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) of split {split!r} listed in {partition} are missing, e.g. {missing[0]}"
                )
        self.item_ids = [rows[i][1] for i in wanted]
        self._files = files
        self._select(
            hierarchy,
            encode_paths(hierarchy, [paths[i] for i in wanted]),
            split=split,
            source=str(partition),
            raw_paths=files,
            subset=subset,
            unseen_classes=unseen_classes,
            levels=levels,
        )
        self.item_ids = [self.item_ids[r] for r in self._rows]

    def _load_image(self, row: int, index: int) -> Image.Image:
        return open_image(self._files[row], index).convert("RGB")


def read_inshop_partition(path: str | os.PathLike[str]) -> list[tuple[str, str, str, int]]:
    """Parse ``list_eval_partition.txt``: ``(image name, item id, status, line number)`` per image.

    Raises:
        ValueError: the file is not UTF-8 text (binary, UTF-16), its count or header is wrong, a
            row is malformed, or an image is listed twice, e.g. as a query and in the gallery,
            where the query would find itself (file and lines named).
    """
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a header line, got {len(lines)} line(s)")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(f"{path}: the first line must be the number of images, got {lines[0]!r}") from None
    if lines[1].split() != ["image_name", "item_id", "evaluation_status"]:
        raise ValueError(f"{path}: the second line must be 'image_name item_id evaluation_status', got {lines[1]!r}")
    rows = []
    first_line: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"{path}:{number}: expected '<image name> <item id> <status>', got {line!r}")
        if fields[2] not in _STATUSES:
            raise ValueError(f"{path}:{number}: unknown evaluation status {fields[2]!r} (expected {_STATUSES})")
        earlier, status = first_line.setdefault(fields[0], (number, fields[2]))
        if earlier != number:
            overlap = (
                " (a query image in the gallery would find itself)"
                if {status, fields[2]} == {"query", "gallery"}
                else ""
            )
            raise ValueError(
                f"{path}:{number}: image {fields[0]!r} ({fields[2]}) is already listed on line {earlier} ({status}){overlap}"
            )
        rows.append((fields[0], fields[1], fields[2], number))
    if len(rows) != count:
        raise ValueError(f"{path}: the first line announces {count} images but {len(rows)} are listed")
    return rows


def _label_path(name: str, item_id: str, partition: Path, line: int) -> tuple[str, str, str, str]:
    parts = name.split("/")
    match = _FILE_NAME.match(parts[-1]) if parts else None
    if len(parts) != 5 or parts[0] != "img" or not parts[3].startswith("id_") or match is None:
        raise ValueError(
            f"{partition}:{line}: image name {name!r} is not img/<GENDER>/<Category>/id_XXXXXXXX/NN_V_view.jpg"
        )
    gender, category, item = parts[1], parts[2], parts[3]
    if item != item_id:
        raise ValueError(f"{partition}:{line}: item id {item_id!r} disagrees with the image's folder {item!r}")
    cat = f"{gender}/{category}"
    product = f"{cat}/{item}"
    return gender, cat, product, f"{product}/{match.group(1)}"
