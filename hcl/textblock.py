"""Generated blocks inside hand-written text files (the README's measured tables).

A block is whatever lies between two marker lines that name it::

    <!-- demo-table:start -->
    ... written by a program, never by hand ...
    <!-- demo-table:end -->

:func:`replace_marked_block` swaps that content for new text and leaves every other byte of the
file as it was (:func:`read_marked_block` reads it); the file is rewritten atomically
(:mod:`hcl.atomic`), so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hcl.atomic import write_text_atomic

__all__ = ["block_markers", "read_marked_block", "replace_marked_block"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def block_markers(name: str) -> tuple[str, str]:
    """The start and end markers of block ``name``: ``<!-- name:start -->``, ``<!-- name:end -->``.

    Raises:
        ValueError: ``name`` is empty or holds characters other than letters, digits, ``_.-``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"a block name is letters, digits and '_.-' (starting with a letter or digit), got {name!r}")
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_marked_block(path: str | os.PathLike[str], name: str) -> str:
    """The content between the markers of block ``name`` in the file ``path``, as it stands.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: as :func:`replace_marked_block`.
    """
    _, block, _ = _split(Path(path), name)
    return block


def replace_marked_block(path: str | os.PathLike[str], name: str, text: str) -> Path:
    """Replace the content between the markers of block ``name`` in the file ``path`` with ``text``.

    The markers stay; between them the file then holds ``text`` (its leading and trailing blank
    lines dropped) on lines of its own. Everything outside the markers is kept byte for byte, and
    replacing a block with the text it holds leaves the file unchanged.

    Args:
        path: a UTF-8 text file holding each marker exactly once, the start before the end.
        name: the block's name (see :func:`block_markers`).
        text: the new content.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a marker is missing or repeated, or the end comes before the start; the
            message names the file and the marker. The file is then left untouched.
    """
    path = Path(path)
    head, _, tail = _split(path, name)
    body = text.strip("\n")
    return write_text_atomic(path, head + (f"\n{body}\n" if body else "\n") + tail)


def _split(path: Path, name: str) -> tuple[str, str, str]:
    """``(head, block, tail)`` of the file: up to and including the start marker, between the
    markers, from the end marker on."""
    start, end = block_markers(name)
    content = path.read_bytes().decode("utf-8")  # not read_text: its newline translation would rewrite CRLFs
    for marker in (start, end):
        count = content.count(marker)
        if count != 1:
            found = "does not contain" if count == 0 else f"contains {count} times"
            raise ValueError(
                f"{path} {found} the marker {marker!r}; it needs {start!r} and {end!r} once each, on lines of "
                "their own around the generated block"
            )
    head, rest = content.split(start)
    if end not in rest:
        raise ValueError(f"{path}: the marker {end!r} comes before {start!r}; the end must follow the start")
    block, tail = rest.split(end)
    return head + start, block, end + tail
