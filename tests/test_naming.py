"""One spelling per concept in hcl's identifiers: ``num_*`` for counts, American ``color``/``neighbor``.

Scanned: every name the code binds or reads (variables, attributes, functions, classes,
arguments, keyword arguments, import aliases) and the string keys it writes or reads (dict
literals, subscripts, ``__all__``), since those become JSON keys and public names. Prose in
docstrings and comments is not scanned.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hcl

PACKAGE = Path(hcl.__file__).resolve().parent

# ``n_foo`` (a count), ``colour``, ``neighbour``; ``num_foo`` and ``color``/``neighbor`` instead.
BANNED = re.compile(r"(?:^|_)n_[a-z]|colour|neighbour", re.IGNORECASE)

# (path under hcl/, name): why it stays. Remove an entry once its name is gone (a test checks).
ALLOWED = {
    # Deprecated aliases of renamed public names (hcl._compat), kept for callers.
    ("data/transforms.py", "n_views"): "MultiViewTransform(n_views=) and .n_views, deprecated",
    ("train/config_io.py", "n_views"): "config key n_views (old YAML files, --set, run folders), deprecated",
    ("train/config.py", "n_views"): "TrainConfig(n_views=) and .n_views, deprecated",
    ("metrics/clustering.py", "n_init"): "clustering_per_level(n_init=), deprecated; KMeans(n_init=)",
    ("viz/explorer.py", "n_neighbors"): "HierarchyExplorer(n_neighbors=), deprecated",
    ("viz/explorer.py", "neighbours"): "HierarchyExplorer.neighbours(), deprecated",
    ("viz/explorer.py", "neighbours_view"): "HierarchyExplorer.neighbours_view, deprecated",
    # Third-party parameter names, spelled as their libraries spell them.
    ("metrics/clustering.py", "n_clusters"): "sklearn KMeans(n_clusters=)",
    ("viz/projection.py", "n_neighbors"): "umap.UMAP(n_neighbors=), a user-facing UMAP parameter",
    ("viz/projection.py", "n_components"): "umap / sklearn (n_components=)",
    ("viz/projection.py", "n_jobs"): "umap (n_jobs=)",
    ("viz/projection.py", "n_epochs"): "umap.UMAP(n_epochs=), a user-facing UMAP parameter",
}


def _names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every identifier and string key in ``tree``."""
    found: list[tuple[int, str]] = []

    def key(node: ast.AST | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))

    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            found.append((node.lineno, node.arg))
        elif isinstance(node, ast.keyword) and node.arg is not None:
            found.append((node.value.lineno, node.arg))
        elif isinstance(node, ast.alias):
            found.append((node.lineno, node.asname or node.name.rpartition(".")[2]))
        elif isinstance(node, ast.Dict):
            for k in node.keys:
                key(k)
        elif isinstance(node, ast.Subscript):
            key(node.slice)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            for element in getattr(node.value, "elts", []):
                key(element)
    return found


def _offenders() -> dict[tuple[str, str], list[int]]:
    """{(path under hcl/, banned name): lines} over the whole package."""
    result: dict[tuple[str, str], list[int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for line, name in _names(ast.parse(path.read_text(), str(path))):
            if BANNED.search(name):
                result.setdefault((relative, name), []).append(line)
    return result


def test_identifiers_use_one_spelling_per_concept() -> None:
    bad = {entry: lines for entry, lines in _offenders().items() if entry not in ALLOWED}
    listing = "\n".join(f"hcl/{path}:{min(lines)}: {name}" for (path, name), lines in sorted(bad.items()))
    assert not bad, f"use num_* for counts and color/neighbor in identifiers:\n{listing}"


def test_every_allowed_name_still_occurs() -> None:
    stale = sorted(set(ALLOWED) - set(_offenders()))
    assert not stale, f"renamed already; drop from ALLOWED in tests/test_naming.py: {stale}"


def test_the_scan_finds_each_kind_of_name() -> None:
    """The scanner itself can fail: every place a banned name can hide is reported."""
    source = (
        "import x as n_alias\n"
        "n_local = 1\n"
        "obj.point_colours = 2\n"
        "def neighbours(n_arg, *, num_ok): pass\n"
        "class Colour: pass\n"
        "f(n_kw=1)\n"
        "d = {'n_key': 1}\n"
        "d['neighbour_rows']\n"
        "__all__ = ['n_public']\n"
        "ok = {'num_views': 1, 'color': 2, 'in_channels': 3, 'train_x': 4}\n"
    )
    banned = sorted(name for _, name in _names(ast.parse(source)) if BANNED.search(name))
    assert banned == [
        "Colour",
        "n_alias",
        "n_arg",
        "n_key",
        "n_kw",
        "n_local",
        "n_public",
        "neighbour_rows",
        "neighbours",
        "point_colours",
    ]
