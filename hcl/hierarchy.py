"""The label hierarchy: the one owner of how hierarchical labels are encoded."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hcl._hierarchy_build import (
    folder_path,
    levels_from_array,
    levels_from_dict,
    levels_from_parent_dicts,
    levels_to_dict,
    node_name,
    parent_dicts_from_parent_map,
    parent_dicts_from_paths,
)
from hcl.atomic import write_text_atomic
from hcl.labels import as_label_tensor, shared_prefix_length

__all__ = ["Hierarchy"]


class Hierarchy:
    """A rooted label tree with L levels, and the encoding of samples' labels in it.

    **The label convention** (every part of hcl relies on it): a batch of labels is an (N, L)
    int64 tensor. Column 0 is the COARSEST level, column L-1 the finest. Entry ``[n, l]`` is the
    id of sample n's node at level l, an index into ``nodes(l)``. ``-1`` means "unknown at this
    level and below", so a sample may stop early (ragged depth); a known label below an unknown
    one is an error. Two samples share level l when columns 0..l are equal and known (the label
    *prefix*); code that only has raw ids, whose values may repeat under different parents, should
    compare prefixes (:func:`hcl.labels.prefix_ids`), which this encoding makes equivalent to
    comparing column l.

    Node names are non-empty strings, kept in Unicode NFC (a composed and a decomposed "é" name
    one node), unique within a level, and every node below level 0 has exactly one parent.
    Node ids at each level are assigned in sorted order of the node's path, never in input or
    file-system order, so the same tree always gets the same ids.

    Args:
        level_nodes: for each level, the node names.
        level_parents: for each level, each node's parent index in the level above (level 0: -1).
        level_names: one name per level (default ``"level0"``, ...).
    """

    def __init__(
        self,
        level_nodes: Sequence[Sequence[str]],
        level_parents: Sequence[Sequence[int]],
        level_names: Sequence[str] | None = None,
    ) -> None:
        if len(level_nodes) == 0:
            raise ValueError("a Hierarchy needs at least one level")
        if len(level_parents) != len(level_nodes):
            raise ValueError(f"got {len(level_nodes)} levels of nodes but {len(level_parents)} of parents")
        level_names = list(level_names) if level_names is not None else [f"level{i}" for i in range(len(level_nodes))]
        if len(level_names) != len(level_nodes):
            raise ValueError(f"got {len(level_names)} level names for {len(level_nodes)} levels: {level_names}")
        self._nodes = [
            [node_name(name, f"a node of level {level}") for name in names] for level, names in enumerate(level_nodes)
        ]
        self._parents = [np.asarray(p, dtype=np.int64).reshape(-1) for p in level_parents]
        self._level_names = [str(n) for n in level_names]
        self._index = []
        for level, names in enumerate(self._nodes):
            index = {}
            for i, name in enumerate(names):
                if name in index:
                    raise ValueError(f"node name {name!r} appears twice at level {level}")
                index[name] = i
            self._index.append(index)
            parents = self._parents[level]
            if len(parents) != len(names):
                raise ValueError(f"level {level} has {len(names)} nodes but {len(parents)} parent ids")
            num_parent_nodes = len(self._nodes[level - 1]) if level else 0
            if level == 0 and np.any(parents != -1):
                raise ValueError("level-0 nodes have no parent (parent id -1)")
            if level > 0 and len(parents) and (parents.min() < 0 or parents.max() >= num_parent_nodes):
                bad = int(np.flatnonzero((parents < 0) | (parents >= num_parent_nodes))[0])
                raise ValueError(
                    f"node {names[bad]!r} at level {level} has parent id {int(parents[bad])}, "
                    f"outside 0..{num_parent_nodes - 1}"
                )
        self._children = [
            [np.flatnonzero(self._parents[level + 1] == i).tolist() for i in range(len(self._nodes[level]))]
            if level + 1 < self.num_levels
            else [[] for _ in self._nodes[level]]
            for level in range(self.num_levels)
        ]

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_paths(cls, paths: Iterable[Sequence[str]], level_names: Sequence[str] | None = None) -> Hierarchy:
        """Build from label paths of names, coarse to fine, e.g. ``("clothes", "tops", "shirt")``.

        Paths may be shorter than the deepest one (ragged); repeated paths are fine. A name that
        appears under two different parents at the same level is rejected.
        """
        return cls(*levels_from_parent_dicts(parent_dicts_from_paths(paths)), level_names)

    @classmethod
    def from_parent_map(
        cls,
        child_to_parent: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
        level_names: Sequence[str] | None = None,
    ) -> Hierarchy:
        """Build from a child -> parent map (a dict, or (child, parent) pairs).

        Roots are nodes whose parent is ``None`` or never appears as a child. A node's level is its
        depth below the roots. Pairs that give one child two parents, and cycles, are rejected.
        """
        return cls(*levels_from_parent_dicts(parent_dicts_from_parent_map(child_to_parent)), level_names)

    @classmethod
    def from_folders(
        cls,
        file_paths: Iterable[str | os.PathLike[str]],
        root: str | os.PathLike[str] | None = None,
        level_names: Sequence[str] | None = None,
    ) -> Hierarchy:
        """Build from files in nested folders, e.g. ``animal/dog/beagle/img.jpg``.

        Each file's folders (relative to ``root`` when given) form its label path; the file name
        itself is not a level. Folder names must be unique per level (as in any taxonomy).
        """
        return cls.from_paths(folder_path(p, root) for p in file_paths)  # type: ignore[arg-type]

    @classmethod
    def from_array(cls, labels: Any, level_names: Sequence[str] | None = None) -> Hierarchy:
        """Build from raw integer labels of shape (N, L) whose ids may repeat under different parents.

        Each distinct label prefix becomes a node, named by its raw id, or by ``"parent/id"`` when
        the same raw id occurs under several parents at that level. Encode the same array with
        :meth:`encode_array`.
        """
        level_nodes, level_parents = levels_from_array(labels)
        names = list(level_names) if level_names is not None else None
        if names is not None and len(names) != len(level_nodes):
            raise ValueError(f"got {len(names)} level names for {len(level_nodes)} label columns")
        return cls(level_nodes, level_parents, names)

    # ----------------------------------------------------------------- structure
    @property
    def num_levels(self) -> int:
        """L, the number of levels (the depth of the deepest leaf)."""
        return len(self._nodes)

    @property
    def depth(self) -> int:
        """Alias of :attr:`num_levels`."""
        return self.num_levels

    @property
    def level_names(self) -> list[str]:
        """One name per level, coarse to fine."""
        return list(self._level_names)

    def nodes(self, level: int) -> list[str]:
        """The node names at ``level``, in id order."""
        return list(self._nodes[self._check_level(level)])

    def num_nodes(self, level: int) -> int:
        """How many nodes ``level`` has."""
        return len(self._nodes[self._check_level(level)])

    def index(self, level: int, name: str) -> int:
        """The id of node ``name`` at ``level``."""
        try:
            return self._index[self._check_level(level)][unicodedata.normalize("NFC", str(name))]
        except KeyError:
            raise ValueError(f"unknown node {name!r} at level {level} ({self._level_names[level]})") from None

    def parent(self, level: int, idx: int) -> int:
        """Parent id (at ``level - 1``) of node ``idx`` at ``level``; -1 at level 0."""
        return int(self._parents[self._check_level(level)][self._check_node(level, idx)])

    def children(self, level: int, idx: int) -> list[int]:
        """Ids (at ``level + 1``) of the children of node ``idx`` at ``level``."""
        return list(self._children[self._check_level(level)][self._check_node(level, idx)])

    def path(self, level: int, idx: int) -> tuple[str, ...]:
        """Names from the root down to node ``idx`` at ``level``."""
        ids = self._ancestor_ids(level, idx)
        return tuple(self._nodes[lv][i] for lv, i in enumerate(ids))

    def node_labels(self, level: int) -> torch.Tensor:
        """Label rows of every node at ``level`` (their ancestors' ids, -1 below).

        Shape:
            Returns (num_nodes(level), L) int64.
        """
        self._check_level(level)
        rows = torch.full((self.num_nodes(level), self.num_levels), -1, dtype=torch.int64)
        ids = torch.arange(self.num_nodes(level))
        for lv in range(level, -1, -1):
            rows[:, lv] = ids
            if lv:
                ids = torch.as_tensor(self._parents[lv])[ids]
        return rows

    def leaves(self) -> torch.Tensor:
        """Label rows of all leaves (nodes without children), deepest level last.

        Shape:
            Returns (num_leaves, L) int64 with -1 below a shallow leaf.
        """
        rows = [self.node_labels(lv)[[not c for c in self._children[lv]]] for lv in range(self.num_levels)]
        return torch.cat(rows)

    # ----------------------------------------------------------------- encoding
    def encode(self, paths: Iterable[Sequence[str]]) -> torch.Tensor:
        """Label rows for paths of names, padded with -1 (a path may stop early).

        Raises ValueError naming an unknown node or a node under the wrong parent.

        Shape:
            Returns (N, L) int64.
        """
        rows = []
        for path in paths:
            if isinstance(path, str):
                raise TypeError(f"each path must be a sequence of names, got the string {path!r}")
            if len(path) > self.num_levels:
                raise ValueError(f"path {tuple(path)} is deeper than the hierarchy's {self.num_levels} levels")
            row = [-1] * self.num_levels
            for level, name in enumerate(path):
                row[level] = self.index(level, name)
                if level and self.parent(level, row[level]) != row[level - 1]:
                    raise ValueError(
                        f"node {name!r} is not a child of {path[level - 1]!r} (its parent is "
                        f"{self._nodes[level - 1][self.parent(level, row[level])]!r})"
                    )
            rows.append(row)
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, self.num_levels)

    def encode_leaf(self, names: Iterable[str], level: int | None = None) -> torch.Tensor:
        """Label rows for node names at one level (default: the finest), with their ancestors.

        Shape:
            Returns (N, L) int64.
        """
        level = self.num_levels - 1 if level is None else self._check_level(level)
        ids = torch.tensor([self.index(level, n) for n in names], dtype=torch.int64)
        return self.node_labels(level)[ids]

    def encode_array(self, labels: Any) -> torch.Tensor:
        """Re-encode raw integer labels with the ids of a hierarchy made by :meth:`from_array`.

        Shape:
            labels: (N, L). Returns (N, L) int64.
        """
        raw = as_label_tensor(labels, num_levels=self.num_levels).cpu()
        out = torch.full_like(raw, -1)
        for level in range(self.num_levels):
            known = raw[:, level] >= 0
            if not bool(known.any()):
                break
            prev = self._nodes[level - 1] if level else None
            names = set(self._index[level])
            for row in known.nonzero().squeeze(1).tolist():
                r = int(raw[row, level])
                name = str(r)
                if name not in names and prev is not None:
                    name = f"{prev[int(out[row, level - 1])]}/{r}"
                out[row, level] = self.index(level, name)
        return self.validate(out)

    def decode(self, labels: Any) -> list[tuple[str, ...]]:
        """Paths of names for label rows (stopping at the first -1)."""
        labels = self.validate(labels)
        return [tuple(self._nodes[lv][i] for lv, i in enumerate(row) if i >= 0) for row in labels.tolist()]

    def validate(self, labels: Any) -> torch.Tensor:
        """Check that label rows are valid in this hierarchy (ids in range, consistent parents).

        Shape:
            labels: (N, L). Returns (N, L) int64 on the same device.
        """
        labels = as_label_tensor(labels, num_levels=self.num_levels)
        cpu = labels.cpu()
        for level in range(self.num_levels):
            col = cpu[:, level]
            known = col >= 0
            if bool((col >= self.num_nodes(level)).any()):
                row = int((col >= self.num_nodes(level)).nonzero()[0])
                raise ValueError(
                    f"label {int(col[row])} at level {level} is out of range (the level has "
                    f"{self.num_nodes(level)} nodes), row {row}: {cpu[row].tolist()}"
                )
            if level and bool(known.any()):
                parents = torch.as_tensor(self._parents[level])[col[known]]
                wrong = parents != cpu[known, level - 1]
                if bool(wrong.any()):
                    row = int(known.nonzero()[wrong.nonzero()[0]].squeeze())
                    raise ValueError(
                        f"label row {row} {cpu[row].tolist()} is inconsistent: node {int(col[row])} at "
                        f"level {level} is not a child of {int(cpu[row, level - 1])}"
                    )
        return labels

    # ----------------------------------------------------------------- distances
    def lca(self, a: Sequence[int], b: Sequence[int]) -> int:
        """Level of the lowest common ancestor of two label rows (-1: only the virtual root)."""
        return int(shared_prefix_length(self._row(a), self._row(b))) - 1

    def tree_distance(self, a: Sequence[int], b: Sequence[int]) -> int:
        """Number of edges between two nodes given by label rows, through their common ancestor."""
        a_row, b_row = self._row(a), self._row(b)
        shared = int(shared_prefix_length(a_row, b_row))
        return int((a_row >= 0).sum()) + int((b_row >= 0).sum()) - 2 * shared

    def tree_distance_matrix(self, level: int | None = None) -> torch.Tensor:
        """Tree distances between all nodes of one level (default: the finest).

        Shape:
            Returns (n_l, n_l) int64.
        """
        rows = self.node_labels(self.num_levels - 1 if level is None else level)
        depth = (rows >= 0).sum(dim=1)
        shared = shared_prefix_length(rows[:, None, :], rows[None, :, :])
        return depth[:, None] + depth[None, :] - 2 * shared

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: level names and, per level, node names with parent names."""
        return levels_to_dict(self._level_names, self._nodes, self._parents)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "hierarchy") -> Hierarchy:
        """Inverse of :meth:`to_dict`; ``source`` names the origin in error messages."""
        try:
            level_names, level_nodes, level_parents = levels_from_dict(data)
            # The stored order is the id order: keep it, so ids survive a save/load round trip.
            return cls(level_nodes, level_parents, level_names)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{source}: not a valid hcl hierarchy description ({err})") from err

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the hierarchy as JSON atomically (a crash never leaves a torn file)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Hierarchy:
        """Read a hierarchy written by :meth:`to_json`; a malformed file raises ValueError naming it."""
        try:
            with open(path) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise ValueError(f"{path}: malformed hierarchy JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a hierarchy JSON must hold an object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    save = to_json
    load = from_json

    # ----------------------------------------------------------------- misc
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(nodes)}" for n, nodes in zip(self._level_names, self._nodes))
        return f"Hierarchy({sizes})"

    def _check_level(self, level: int) -> int:
        if not isinstance(level, (int, np.integer)) or not -self.num_levels <= level < self.num_levels:
            raise ValueError(f"level must be an int in 0..{self.num_levels - 1}, got {level!r}")
        return int(level) % self.num_levels

    def _check_node(self, level: int, idx: int) -> int:
        if not 0 <= idx < len(self._nodes[level]):
            raise ValueError(f"node id {idx} out of range at level {level} ({len(self._nodes[level])} nodes)")
        return int(idx)

    def _ancestor_ids(self, level: int, idx: int) -> list[int]:
        level = self._check_level(level)
        ids = [self._check_node(level, idx)]
        for lv in range(level, 0, -1):
            ids.append(int(self._parents[lv][ids[-1]]))
        return ids[::-1]

    def _row(self, row: Sequence[int]) -> torch.Tensor:
        return self.validate(torch.as_tensor(row).reshape(1, -1))[0]
