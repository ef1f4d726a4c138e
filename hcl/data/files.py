"""File helpers shared by the data sets: where things live, atomic writes, safe image decoding."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hcl.atomic import atomic_write

__all__ = [
    "DATA_DIR",
    "atomic_write",
    "check_split",
    "default_cache_dir",
    "find_first",
    "open_image",
    "read_maybe_gzip",
]

# data/ at the repository root: default roots of downloaded data sets, and the git-ignored cache/.
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def default_cache_dir() -> Path:
    """``$HCL_CACHE_DIR`` if set, else ``data/cache`` in the repository."""
    return Path(os.environ.get("HCL_CACHE_DIR", DATA_DIR / "cache"))


def find_first(candidates: Iterable[Path], what: str) -> Path:
    """The first existing path among ``candidates``; FileNotFoundError listing them all otherwise."""
    tried = list(candidates)
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{what} not found; looked for: " + ", ".join(str(p) for p in tried))


def read_maybe_gzip(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from err


def open_image(path: str | os.PathLike[str], index: int) -> Image.Image:
    """Decode an image file fully; a missing or corrupt file raises an error naming path and index.

    ``index`` is the sample's index in the data set (what ``dataset[i]`` was given), not the
    file's position in a listing: the two differ under ``subset`` or ``unseen_classes``.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image {index} is missing: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise OSError(f"cannot decode image {index} ({path}): {err}") from err


def check_split(split: str, allowed: Sequence[str], dataset: str) -> str:
    """Return ``split`` if it is one of ``allowed``, else raise ValueError listing them."""
    if split not in allowed:
        raise ValueError(f"{dataset} has no split {split!r}; choose one of {list(allowed)}")
    return split
