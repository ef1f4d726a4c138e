"""File helpers shared by the data sets: where things live, atomic writes, safe image decoding."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hcl.atomic import atomic_write

__all__ = [
    "atomic_write",
    "check_split",
    "default_cache_dir",
    "default_data_dir",
    "find_first",
    "official_files",
    "open_image",
    "read_maybe_gzip",
]


def checkout_root(module_file: str | os.PathLike[str] = __file__) -> Path | None:
    """The repository hcl runs from (``pip install -e .`` or a source tree), or None when hcl is
    installed as a package: then nothing beside it is the project's ``data/``."""
    root = Path(module_file).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "hcl" / "__init__.py").is_file() else None


def default_data_dir() -> Path:
    """Where data sets are looked for when no root is given: ``$HCL_DATA_DIR`` if set, else
    ``data/`` in the repository, else (an installed package) ``data/`` in the working directory."""
    if os.environ.get("HCL_DATA_DIR"):
        return Path(os.environ["HCL_DATA_DIR"])
    checkout = checkout_root()
    return checkout / "data" if checkout is not None else Path.cwd() / "data"


def default_cache_dir() -> Path:
    """``$HCL_CACHE_DIR`` if set, else the repository's git-ignored ``data/cache``, else (an
    installed package) ``$XDG_CACHE_HOME/hcl``, by default ``~/.cache/hcl``."""
    if os.environ.get("HCL_CACHE_DIR"):
        return Path(os.environ["HCL_CACHE_DIR"])
    checkout = checkout_root()
    if checkout is not None:
        return checkout / "data" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hcl"


def find_first(candidates: Iterable[Path], what: str) -> Path:
    """The first existing path among ``candidates``; FileNotFoundError listing them all otherwise."""
    tried = list(candidates)
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{what} not found; looked for: " + ", ".join(str(p) for p in tried))


@contextmanager
def official_files(dataset: str, where: str, *, download: bool) -> Iterator[None]:
    """Add to a missing-file error inside the block which official files to put where.

    hcl fetches nothing, so torchvision's ``download=True`` cannot help; with it the message
    first says so. ``where`` is the hint, e.g. "unpack cifar-100-python.tar.gz (https://...) in DIR".

    Raises:
        FileNotFoundError: ``"<dataset>: <the error>; <where>"``, chained to the error.
    """
    try:
        yield
    except FileNotFoundError as error:
        prefix = (
            f"{dataset}: download=True fetches nothing (hcl reads local files only); " if download else f"{dataset}: "
        )
        raise FileNotFoundError(f"{prefix}{error}; {where}") from error


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
