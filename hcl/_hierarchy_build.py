"""Building a :class:`hcl.Hierarchy` from its sources (label paths, parent maps, folders, raw
integer arrays) and writing and reading its JSON description.

The readers return the constructor's arguments (per level, the node names and each node's parent
index), so the checks that every hierarchy must pass stay in ``Hierarchy.__init__``.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

from hcl.labels import as_label_tensor, prefix_ids

__all__ = [
    "folder_path",
    "node_name",
    "levels_from_array",
    "levels_from_dict",
    "levels_from_parent_dicts",
    "levels_to_dict",
    "parent_dicts_from_parent_map",
    "parent_dicts_from_paths",
]

_FORMAT_VERSION = 1

# Per level, each node name mapped to its parent's name (None at level 0).
ParentDicts = list[dict[str, str | None]]
# Per level: the node names, and each node's parent index in the level above (-1 at level 0).
Levels = tuple[list[list[str]], list[list[int]]]


def node_name(name: Any, where: str = "a node") -> str:
    """``name`` in Unicode NFC, so that a composed and a decomposed "é" are one node.

    Raises:
        TypeError: ``name`` is not a string (None, a number, a list: ``str()`` of them would
            silently make a node "None" or "['b']").
        ValueError: ``name`` is empty or blank.
    """
    if not isinstance(name, str):
        raise TypeError(f"the name of {where} must be a string, got {name!r} ({type(name).__name__})")
    if not name.strip():
        raise ValueError(f"the name of {where} must not be empty or blank, got {name!r}")
    return unicodedata.normalize("NFC", name)


def parent_dicts_from_paths(paths: Iterable[Sequence[str]]) -> ParentDicts:
    """The parent of every node named in label paths (see :meth:`hcl.Hierarchy.from_paths`)."""
    parent_of: list[dict[str, str | None]] = []
    for path in paths:
        if isinstance(path, str):
            raise TypeError(f"each path must be a sequence of names, got the string {path!r}")
        path = [node_name(p, f"the level-{level} node of path {tuple(path)!r}") for level, p in enumerate(path)]
        if not path:
            raise ValueError("a label path must name at least one node")
        for level, name in enumerate(path):
            if level == len(parent_of):
                parent_of.append({})
            parent = path[level - 1] if level else None
            known = parent_of[level].setdefault(name, parent)
            if known != parent:
                raise ValueError(f"node {name!r} at level {level} appears under two parents: {known!r} and {parent!r}")
    if not parent_of:
        raise ValueError("no label paths given")
    return parent_of


def parent_dicts_from_parent_map(
    child_to_parent: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
) -> ParentDicts:
    """Nodes of a child -> parent map placed at their depth (see :meth:`hcl.Hierarchy.from_parent_map`)."""
    pairs = child_to_parent.items() if isinstance(child_to_parent, Mapping) else child_to_parent
    parent: dict[str, str | None] = {}
    for child, par in pairs:
        child = node_name(child, "a child in the parent map")
        par = None if par is None else node_name(par, f"the parent of {child!r}")
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
    return parent_of


def levels_from_parent_dicts(parent_of: ParentDicts) -> Levels:
    """Node names and parent indices per level, ids in sorted order of each node's path."""
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
    return level_nodes, level_parents


def levels_from_array(labels: Any) -> Levels:
    """One node per distinct label prefix of raw integer labels (see :meth:`hcl.Hierarchy.from_array`).

    Shape:
        labels: (N, L). Returns L levels, empty ones included.
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
        names = [f"{level_nodes[level - 1][p]}/{r}" if r in repeated else str(r) for r, p in zip(raw_ids, parents)]
        order = node_ids.argsort().tolist()
        level_nodes.append([names[i] for i in order])
        level_parents.append([parents[i] for i in order])
    # Levels never used by any sample still count, so encode_array keeps the column count.
    while len(level_nodes) < raw.shape[1]:
        level_nodes.append([])
        level_parents.append([])
    return level_nodes, level_parents


def levels_from_dict(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]], list[list[int]]]:
    """Level names, node names and parent indices of a :meth:`hcl.Hierarchy.to_dict` description.

    Raises:
        KeyError, TypeError, ValueError, AttributeError: a malformed part, named in the message.
    """
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
    return level_names, level_nodes, level_parents


def levels_to_dict(
    level_names: Sequence[str], level_nodes: Sequence[Sequence[str]], level_parents: Sequence[np.ndarray]
) -> dict[str, Any]:
    """The JSON-ready description that :func:`levels_from_dict` reads (see :meth:`hcl.Hierarchy.to_dict`)."""
    levels = []
    for level, names in enumerate(level_nodes):
        above = level_nodes[level - 1] if level else None
        levels.append(
            {
                "name": level_names[level],
                "nodes": [
                    [name, None if above is None else above[int(p)]] for name, p in zip(names, level_parents[level])
                ],
            }
        )
    return {"format": "hcl.Hierarchy", "version": _FORMAT_VERSION, "levels": levels}


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
