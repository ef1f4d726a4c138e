"""The label hierarchy: the one owner of how hierarchical labels are encoded."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

from hcl.atomic import write_text_atomic
from hcl.labels import as_label_tensor, prefix_ids, shared_prefix_length

__all__ = ["Hierarchy"]

_FORMAT_VERSION = 1


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

    Node names are unique within a level and every node below level 0 has exactly one parent.
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
        self._nodes = [[str(name) for name in names] for names in level_nodes]
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
            n_above = len(self._nodes[level - 1]) if level else 0
            if level == 0 and np.any(parents != -1):
                raise ValueError("level-0 nodes have no parent (parent id -1)")
            if level > 0 and len(parents) and (parents.min() < 0 or parents.max() >= n_above):
                bad = int(np.flatnonzero((parents < 0) | (parents >= n_above))[0])
                raise ValueError(
                    f"node {names[bad]!r} at level {level} has parent id {int(parents[bad])}, "
                    f"outside 0..{n_above - 1}"
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
        parent_of: list[dict[str, str | None]] = []
        for path in paths:
            if isinstance(path, str):
                raise TypeError(f"each path must be a sequence of names, got the string {path!r}")
            path = [str(p) for p in path]
            if not path:
                raise ValueError("a label path must name at least one node")
            for level, name in enumerate(path):
                if level == len(parent_of):
                    parent_of.append({})
                parent = path[level - 1] if level else None
                known = parent_of[level].setdefault(name, parent)
                if known != parent:
                    raise ValueError(
                        f"node {name!r} at level {level} appears under two parents: {known!r} and {parent!r}"
                    )
        if not parent_of:
            raise ValueError("no label paths given")
        return cls._from_parent_dicts(parent_of, level_names)

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
        pairs = child_to_parent.items() if isinstance(child_to_parent, Mapping) else child_to_parent
        parent: dict[str, str | None] = {}
        for child, par in pairs:
            child, par = str(child), (None if par is None else str(par))
            if child in parent and parent[child] != par:
                raise ValueError(f"node {child!r} has two parents: {parent[child]!r} and {par!r}")
            if par == child:
                raise ValueError(f"node {child!r} is its own parent")
            parent[child] = par
        if not parent:
            raise ValueError("the parent map is empty")
        for par in list(parent.values()):
            if par is not None and par not in parent:
                parent[par] = None
        depth: dict[str, int] = {}
        for node in parent:
            chain = []
            cur: str | None = node
            while cur is not None and cur not in depth:
                if cur in chain:
                    cycle = " -> ".join(chain[chain.index(cur) :] + [cur])
                    raise ValueError(f"the parent map has a cycle: {cycle}")
                chain.append(cur)
                cur = parent[cur]
            base = -1 if cur is None else depth[cur]
            for offset, name in enumerate(reversed(chain), start=1):
                depth[name] = base + offset
        parent_of: list[dict[str, str | None]] = [{} for _ in range(max(depth.values()) + 1)]
        for node, d in depth.items():
            parent_of[d][node] = parent[node]
        return cls._from_parent_dicts(parent_of, level_names)

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
        raw = as_label_tensor(labels).cpu()
        ids = prefix_ids(raw)
        level_nodes, level_parents = [], []
        for level in range(raw.shape[1]):
            known = ids[:, level] >= 0
            if not bool(known.any()):
                break
            node_ids, first = _first_occurrence(ids[known, level])
            rows = known.nonzero().squeeze(1)[first]
            raw_ids = raw[rows, level].tolist()
            parents = ids[rows, level - 1].tolist() if level else [-1] * len(rows)
            repeated = {r for r in raw_ids if raw_ids.count(r) > 1}
            names = [
                f"{level_nodes[level - 1][p]}/{r}" if r in repeated else str(r)
                for r, p in zip(raw_ids, parents)
            ]
            order = node_ids.argsort().tolist()
            level_nodes.append([names[i] for i in order])
            level_parents.append([parents[i] for i in order])
        names = list(level_names) if level_names is not None else None
        if names is not None and len(names) != raw.shape[1]:
            raise ValueError(f"got {len(names)} level names for {raw.shape[1]} label columns")
        # Levels never used by any sample still count, so encode_array keeps the column count.
        while len(level_nodes) < raw.shape[1]:
            level_nodes.append([])
            level_parents.append([])
        return cls(level_nodes, level_parents, names)

    @classmethod
    def _from_parent_dicts(
        cls, parent_of: list[dict[str, str | None]], level_names: Sequence[str] | None
    ) -> Hierarchy:
        level_nodes: list[list[str]] = []
        level_parents: list[list[int]] = []
        paths_above: list[tuple[str, ...]] = []
        for level, parents in enumerate(parent_of):
            above = {name: i for i, name in enumerate(level_nodes[-1])} if level else {}
            entries = []
            for name, par in parents.items():
                if level == 0:
                    if par is not None:
                        raise ValueError(f"root {name!r} cannot have a parent ({par!r})")
                    entries.append(((name,), name, -1))
                else:
                    if par not in above:
                        raise ValueError(f"node {name!r} at level {level} has unknown parent {par!r}")
                    entries.append((paths_above[above[par]] + (name,), name, above[par]))
            entries.sort(key=lambda e: e[0])
            paths_above = [e[0] for e in entries]
            level_nodes.append([e[1] for e in entries])
            level_parents.append([e[2] for e in entries])
        return cls(level_nodes, level_parents, level_names)

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
            return self._index[self._check_level(level)][str(name)]
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
        levels = []
        for level, names in enumerate(self._nodes):
            above = self._nodes[level - 1] if level else None
            levels.append(
                {
                    "name": self._level_names[level],
                    "nodes": [
                        [name, None if above is None else above[int(p)]]
                        for name, p in zip(names, self._parents[level])
                    ],
                }
            )
        return {"format": "hcl.Hierarchy", "version": _FORMAT_VERSION, "levels": levels}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "hierarchy") -> Hierarchy:
        """Inverse of :meth:`to_dict`; ``source`` names the origin in error messages."""
        try:
            if data.get("format") != "hcl.Hierarchy":
                raise ValueError(f"'format' is {data.get('format')!r}, expected 'hcl.Hierarchy'")
            level_names, level_nodes, level_parents = [], [], []
            for level, lv in enumerate(data["levels"]):
                # Names must be strings as written: a null or a number is an error, not a node "None".
                if not isinstance(lv["name"], str):
                    raise TypeError(f"the name of level {level} must be a string, got {lv['name']!r}")
                above = {name: i for i, name in enumerate(level_nodes[-1])} if level else {}
                names, parents = [], []
                for node in lv["nodes"]:
                    well_formed = isinstance(node, list) and len(node) == 2 and isinstance(node[0], str)
                    if not well_formed or (node[1] is not None if level == 0 else not isinstance(node[1], str)):
                        expected = "[name, null]" if level == 0 else "[name, parent name]"
                        raise TypeError(f"a node of level {level} must be {expected}, got {node!r}")
                    if level and node[1] not in above:
                        raise ValueError(f"node {node[0]!r} of level {level} has unknown parent {node[1]!r}")
                    names.append(node[0])
                    parents.append(above[node[1]] if level else -1)
                level_names.append(lv["name"])
                level_nodes.append(names)
                level_parents.append(parents)
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


def folder_path(file_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The folder names of a file path (relative to ``root``), coarse to fine."""
    path = PurePath(file_path)
    if root is not None:
        path = path.relative_to(root)
    parts = path.parts[:-1]
    if not parts:
        raise ValueError(f"{file_path} is not inside any class folder")
    return tuple(parts)


def _first_occurrence(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct values of ``ids`` and the position of each one's first occurrence."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((len(unique),), len(ids), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    return unique, first
