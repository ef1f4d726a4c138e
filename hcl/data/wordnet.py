"""WordNet hypernym paths for ImageNet-style synset ids (``wnids`` such as ``"n02084071"``).

Reads the WordNet 3.0 database files (``data.noun``) shipped by Debian's ``wordnet-base``
(``/usr/share/wordnet``); ImageNet's wnids are WordNet 3.0 noun offsets, so each wnid is a byte
offset into ``data.noun``. Optional: :func:`wordnet_available` tells whether the files are present.

A synset with several hypernyms (WordNet is a DAG) follows the first one listed, so every wnid
has exactly one path and the result is a tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEFAULT_WORDNET_ROOT", "WordNet", "wordnet_available", "wordnet_paths"]

DEFAULT_WORDNET_ROOT = Path("/usr/share/wordnet")
_WNID = re.compile(r"^n(\d{8})$")


class WordNet:
    """Random access to the noun synsets of a WordNet 3.0 database directory.

    Args:
        root: directory holding ``data.noun`` (default ``/usr/share/wordnet``).

    Raises:
        FileNotFoundError: ``data.noun`` is not there.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(root if root is not None else DEFAULT_WORDNET_ROOT) / "data.noun"
        if not self.path.is_file():
            raise FileNotFoundError(f"WordNet noun database not found: {self.path} (Debian package wordnet-base)")
        self._size = self.path.stat().st_size
        self._cache: dict[str, tuple[list[str], str | None]] = {}

    def synset(self, wnid: str) -> tuple[list[str], str | None]:
        """``(lemmas, first hypernym wnid or None)`` of a noun synset."""
        if wnid not in self._cache:
            match = _WNID.match(wnid) if isinstance(wnid, str) else None
            if match is None:
                raise ValueError(f"{wnid!r} is not a WordNet noun id like 'n02084071'")
            offset = int(match.group(1))
            line = b""
            if offset < self._size:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    line = f.readline()
            fields = line.decode("utf-8", errors="replace").split()
            if not fields or fields[0] != match.group(1) or len(fields) < 4 or fields[2] not in ("n",):
                raise ValueError(f"unknown synset {wnid!r}: no noun entry at offset {offset} of {self.path}")
            self._cache[wnid] = _parse_synset(fields, wnid, self.path)
        return self._cache[wnid]

    def lemma(self, wnid: str) -> str:
        """The synset's first lemma, e.g. ``"dog"`` (underscores for spaces, as in WordNet)."""
        return self.synset(wnid)[0][0]

    def hypernym_chain(self, wnid: str) -> list[str]:
        """wnids from the root (``entity``) down to ``wnid``, following first hypernyms."""
        chain = [wnid]
        while True:
            parent = self.synset(chain[-1])[1]
            if parent is None:
                return chain[::-1]
            if parent in chain:
                raise ValueError(f"hypernym cycle at {parent} while climbing from {wnid} in {self.path}")
            chain.append(parent)


def _parse_synset(fields: list[str], wnid: str, path: Path) -> tuple[list[str], str | None]:
    """Lemmas and first hypernym from one ``data.noun`` line split on whitespace."""
    try:
        word_count = int(fields[3], 16)
        lemmas = [fields[4 + 2 * i] for i in range(word_count)]
        at = 4 + 2 * word_count
        pointer_count = int(fields[at])
        pointers = [fields[at + 1 + 4 * i : at + 5 + 4 * i] for i in range(pointer_count)]
    except (ValueError, IndexError) as err:
        raise ValueError(f"{path}: malformed entry for {wnid} ({err})") from err
    hypernyms = [f"n{p[1]}" for p in pointers if len(p) == 4 and p[0] == "@" and p[2] == "n"]
    instance_of = [f"n{p[1]}" for p in pointers if len(p) == 4 and p[0] == "@i" and p[2] == "n"]
    parents = hypernyms or instance_of
    return lemmas, (parents[0] if parents else None)


def wordnet_available(root: str | os.PathLike[str] | None = None) -> bool:
    """Whether a WordNet noun database is installed at ``root`` (default ``/usr/share/wordnet``)."""
    return (Path(root if root is not None else DEFAULT_WORDNET_ROOT) / "data.noun").is_file()


def wordnet_paths(
    wnids: Sequence[str],
    depth: int | None = None,
    root: str | os.PathLike[str] | None = None,
) -> list[tuple[str, ...]]:
    """Hypernym paths of synsets, coarse to fine, cut to at most ``depth`` levels.

    The levels shared by every given wnid (``entity``, ``physical_entity``, ... for most sets)
    carry no information and are dropped, except that each path keeps at least its own wnid.
    Then a path longer than ``depth`` keeps its ``depth - 1`` coarsest ancestors and the wnid
    itself, so every wnid stays the finest node of its own path (shorter paths stay ragged).

    Args:
        wnids: synset ids such as ``"n02084071"``.
        depth: maximum number of levels (``None``: keep whole paths).
        root: WordNet directory (default ``/usr/share/wordnet``).

    Returns:
        One tuple of wnids per input wnid (feed to :meth:`hcl.Hierarchy.from_paths`).
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be an int >= 1 or None, got {depth!r}")
    wordnet = WordNet(root)
    chains = [wordnet.hypernym_chain(w) for w in wnids]
    if not chains:
        return []
    shared = 0
    while all(len(c) > shared + 1 for c in chains) and len({c[shared] for c in chains}) == 1:
        shared += 1
    paths = []
    for chain in chains:
        chain = chain[shared:]
        if depth is not None and len(chain) > depth:
            chain = chain[: depth - 1] + [chain[-1]]
        paths.append(tuple(chain))
    return paths
