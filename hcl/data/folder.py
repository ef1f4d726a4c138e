"""Image folders whose nesting is the label hierarchy (ImageNet-style trees of any depth).

Three ways to get the hierarchy, chosen by the arguments:

* nested folders (default): ``root/animal/dog/beagle/x.jpg`` has the path (animal, dog, beagle);
  depths may differ (ragged), and a folder may hold both images and sub-folders. As in
  :meth:`hcl.Hierarchy.from_folders`, folder names must be unique within a level.
* flat class folders plus a child -> parent map (``parent_map``: a dict or a JSON file with an
  object ``{"child": "parent", ...}``, roots mapping to ``null``), as the reference code's ImageNet
  experiments used: ``root/beagle/x.jpg`` with ``{"beagle": "dog", "dog": "animal"}``.
* flat class folders named by WordNet ids plus ``wordnet_depth``: paths from WordNet's hypernyms
  (:func:`hcl.data.wordnet.wordnet_paths`).

Splits: ``root/train`` and ``root/test`` (or ``root/val``) when those folders exist; a tree
without split folders is the training split. The hierarchy is built from every split folder
present, so ids agree between splits; ids follow sorted names, never file-system order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hcl.data.base import HierarchicalDataset, encode_paths
from hcl.data.files import check_split, open_image
from hcl.data.wordnet import wordnet_paths
from hcl.hierarchy import Hierarchy, folder_path

__all__ = ["IMAGE_EXTENSIONS", "HierarchicalImageFolder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class HierarchicalImageFolder(HierarchicalDataset):
    """Images in class folders, labelled by folder nesting, a parent map, or WordNet.

    Args:
        root: the tree's top directory (see the module docstring for the layouts).
        split: ``"train"`` or ``"test"``.
        transform: applied to each PIL image (see :class:`hcl.data.base.HierarchicalDataset`).
        target_transform: applied to each label row.
        download: accepted for torchvision's sake; the images are the caller's own, so nothing
            is fetched, and a missing ``root`` says what to put there.
        parent_map: child -> parent names (dict or JSON file) for flat class folders.
        wordnet_depth: build paths of at most this many levels from WordNet (flat wnid folders).
        wordnet_root: WordNet directory (default ``/usr/share/wordnet``).
        level_names: one name per level (default ``"level0"``, ...).
        channels: 3 (images converted to RGB) or 1 (converted to grey).
        image_size: native side length to report (default: the shorter side of the first image).
        extensions: file name endings counted as images (case-insensitive).
        subset: keep a seeded, class-stratified subset of this size.
        unseen_classes: node names held out of the training split.
        levels: keep only the first k levels.

    Raises:
        FileNotFoundError: ``root`` or the split folder does not exist.
        ValueError: an empty split, an image outside any class folder, a class missing from the
            parent map, or a node name under two parents.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        download: bool = False,
        parent_map: Mapping[str, str | None] | str | os.PathLike[str] | None = None,
        wordnet_depth: int | None = None,
        wordnet_root: str | os.PathLike[str] | None = None,
        level_names: Sequence[str] | None = None,
        channels: int = 3,
        image_size: int | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        subset: int | None = None,
        unseen_classes: Sequence[str] | None = None,
        levels: int | None = None,
    ) -> None:
        check_split(split, tuple(_SPLIT_FOLDERS), "HierarchicalImageFolder")
        if parent_map is not None and wordnet_depth is not None:
            raise ValueError("give either parent_map or wordnet_depth, not both")
        if root is None or not Path(root).is_dir():
            lead = "download=True fetches nothing, the images are your own; " if download else ""
            problem = "needs root=<the image tree's directory>" if root is None else f"root does not exist: {root}"
            raise FileNotFoundError(
                f"HierarchicalImageFolder {problem}; {lead}put the images in class folders under root, "
                "e.g. root/animal/dog/x.jpg (see hcl.data.folder)"
            )
        self.root = Path(root)
        split_dirs = _split_dirs(self.root)
        if split not in split_dirs:
            tried = ", ".join(str(self.root / name) for name in _SPLIT_FOLDERS[split])
            raise FileNotFoundError(f"no {split!r} split folder under {self.root} (looked for {tried})")
        suffixes = tuple(e.lower() for e in extensions)
        files = {name: _list_images(folder, suffixes) for name, folder in split_dirs.items()}
        if not files[split]:
            raise ValueError(f"split {split!r} has no images under {split_dirs[split]} (extensions {suffixes})")
        folder_paths = {name: [_relative_folders(f, split_dirs[name]) for f in found] for name, found in files.items()}
        every = [p for paths in folder_paths.values() for p in paths]
        if parent_map is not None or wordnet_depth is not None:
            flat = [p for p in every if len(p) != 1]
            if flat:
                raise ValueError(
                    f"with a parent map or WordNet the classes must be flat folders, found nested {'/'.join(flat[0])}"
                )
            classes = sorted({p[0] for p in every})
            if parent_map is not None:
                class_path = dict(zip(classes, _parent_map_paths(classes, parent_map)))
            else:
                class_path = dict(zip(classes, wordnet_paths(classes, depth=wordnet_depth, root=wordnet_root)))
            label_paths = {name: [class_path[p[0]] for p in paths] for name, paths in folder_paths.items()}
        else:
            label_paths = folder_paths
        hierarchy = Hierarchy.from_paths(
            sorted({p for paths in label_paths.values() for p in paths}), level_names=level_names
        )
        self._files = [str(f) for f in files[split]]
        if image_size is None:  # the first image's shorter side; opened only when needed
            image_size = min(open_image(self._files[0], 0).size)
        super().__init__(
            transform=transform,
            target_transform=target_transform,
            channels=channels,
            image_size=image_size,
            mean=_IMAGENET_MEAN if channels == 3 else (0.5,),
            std=_IMAGENET_STD if channels == 3 else (0.25,),
        )
        self._select(
            hierarchy,
            encode_paths(hierarchy, label_paths[split]),
            split=split,
            source=str(split_dirs[split]),
            raw_paths=self._files,
            subset=subset,
            unseen_classes=unseen_classes,
            levels=levels,
        )

    def _load_image(self, row: int, index: int) -> Image.Image:
        return open_image(self._files[row], index).convert("L" if self.channels == 1 else "RGB")


def _split_dirs(root: Path) -> dict[str, Path]:
    """Split name -> folder; a root without split folders is the training split."""
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found or {"train": root}


def _list_images(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Image files below ``folder``, sorted by path (never in file-system order)."""
    found = []
    for directory, subdirs, names in os.walk(folder):
        subdirs.sort()
        found.extend(Path(directory) / n for n in names if n.lower().endswith(suffixes))
    return sorted(found)


def _relative_folders(file: Path, root: Path) -> tuple[str, ...]:
    try:
        return folder_path(file, root)
    except ValueError:
        raise ValueError(f"image {file} lies directly in {root}, outside any class folder") from None


def _parent_map_paths(
    classes: Iterable[str], parent_map: Mapping[str, str | None] | str | os.PathLike[str]
) -> list[tuple[str, ...]]:
    """Root-to-class paths from a child -> parent map; every class must be a key of the map."""
    source = "the parent map"
    if not isinstance(parent_map, Mapping):
        source = str(parent_map)
        try:
            with open(parent_map) as f:
                parent_map = json.load(f, object_pairs_hook=_object_without_conflicts)
        except FileNotFoundError:
            raise FileNotFoundError(f"parent map file not found: {source}") from None
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{source}: malformed JSON ({err})") from err
        except ValueError as err:  # two parents, or not UTF-8 text
            raise ValueError(f"{source}: {err}") from err
        if not isinstance(parent_map, Mapping):
            raise ValueError(f"{source}: expected a JSON object child -> parent, got {type(parent_map).__name__}")
    for child, parent in parent_map.items():
        if parent is not None and not isinstance(parent, str):
            raise ValueError(f"{source}: the parent of {child!r} must be a name or null, got {parent!r}")

    def path_to(node: str) -> tuple[str, ...]:
        chain, seen = [node], {node}
        while (parent := parent_map.get(chain[-1])) is not None:
            if parent in seen:
                raise ValueError(f"{source} has a cycle: {' -> '.join(chain + [parent])}")
            chain.append(parent)
            seen.add(parent)
        return tuple(reversed(chain))

    for node in parent_map:  # a cycle anywhere makes the map wrong, even away from the classes
        path_to(node)
    paths = []
    for cls in classes:
        if cls not in parent_map:
            raise ValueError(f"class folder {cls!r} is not in {source} (every class needs an entry; roots map to null)")
        paths.append(path_to(cls))
    return paths


def _object_without_conflicts(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key repeated with another value is an error (json keeps the last)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result and result[key] != value:
            raise ValueError(f"node {key!r} has two parents: {result[key]!r} and {value!r}")
        result[key] = value
    return result
