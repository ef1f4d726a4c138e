"""The import graph of hcl: no cycles, and layers that only look down.

Every ``import`` statement of every module counts, function-local ones included (a lazy import
that closes a cycle is still a cycle), and so does a string constant naming an hcl module (the
lazy ``importlib`` tables of ``hcl.viz``). ``import a.b`` depends on module ``a.b`` and
``from a import b`` on ``a.b`` when that is a module, else on ``a``; the implicit import of
parent packages is not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hcl

PACKAGE = Path(hcl.__file__).resolve().parent

# Lower layers never import higher ones. Layer 1's subpackages are independent of one another;
# modules within layer 0, and within layer 3, may import each other (the cycle test still holds).
LAYERS = (
    (
        "hcl",
        "hcl._compat",
        "hcl.atomic",
        "hcl.extras",
        "hcl.labels",
        "hcl.hierarchy",
        "hcl._hierarchy_build",
        "hcl.rundir",
        "hcl.textblock",
    ),
    ("hcl.losses", "hcl.data", "hcl.metrics", "hcl.models"),
    ("hcl.train",),
    ("hcl.study", "hcl.viz", "hcl.demo", "hcl.cli", "hcl.__main__"),
)
_MAY_IMPORT_SIBLINGS = {0, 3}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _resolve(name: str) -> str | None:
    """The hcl module that ``name`` (a module or a name inside one) lives in, or None outside hcl."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """The hcl modules that ``module`` imports, anywhere in its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
            found.add(node.value)
    resolved = {_resolve(name) for name in found if name == "hcl" or name.startswith("hcl.")}
    return {target for target in resolved if target is not None and target != module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer_unit(module: str) -> tuple[int, str]:
    """(layer, unit): the unit is the top-level module or subpackage that ``module`` belongs to."""
    unit = module if module == "hcl" else ".".join(module.split(".")[:2])
    for layer, units in enumerate(LAYERS):
        if unit in units:
            return layer, unit
    raise AssertionError(f"{module} is in no layer of tests/test_imports.py: add {unit!r} to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_walk_sees_the_imports_that_matter() -> None:
    """Guards the parser: known edges, a function-local one and a lazy-table one among them."""
    assert {"hcl.train.build", "hcl.train.loop", "hcl.rundir"} <= GRAPH["hcl.train"]
    assert "hcl.demo" in GRAPH["hcl.cli"]  # function-local: imported when the command runs
    assert "hcl.viz" in GRAPH["hcl.demo"]  # ``from hcl.viz import write_report``: the package
    assert "hcl.rundir" in GRAPH["hcl.viz"]  # a name in hcl.viz's lazy import table
    assert "hcl.losses._compiled" in GRAPH["hcl.losses._constraint"]  # ``from hcl.losses import _compiled``
    assert "hcl.losses.registry" in GRAPH["hcl.train.objectives"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_hcl_modules() -> None:
    cycles = _cycles(GRAPH)
    detail = "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{m} -> {t}" for m in c for t in sorted(GRAPH[m] & set(c))) + ")"
        for c in cycles
    )
    assert not cycles, f"import cycles: {detail}"


def test_layers_only_look_down() -> None:
    """hierarchy/labels/atomic/rundir/textblock < losses, data, metrics, models < train < study, viz, demo, cli."""
    violations = []
    for module, targets in sorted(GRAPH.items()):
        layer, unit = _layer_unit(module)
        for target in sorted(targets):
            target_layer, target_unit = _layer_unit(target)
            if target_unit == unit or target_layer < layer:
                continue
            if target_layer == layer and layer in _MAY_IMPORT_SIBLINGS:
                continue
            violations.append(f"{module} (layer {layer}) imports {target} (layer {target_layer})")
    assert not violations, "\n".join(violations)


def test_the_run_directory_module_stands_on_the_foundation_only() -> None:
    assert GRAPH["hcl.rundir"] <= {"hcl.atomic", "hcl.hierarchy", "hcl.labels"}, GRAPH["hcl.rundir"]


def test_the_report_loads_no_training_code() -> None:
    code = "import sys, hcl.viz.report; print(sorted(m for m in sys.modules if m.startswith('hcl.train')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_top_level_namespace_holds_public_names_only() -> None:
    """``import hcl`` binds its public names and the modules it loads, no helper imports
    (``Any``, ``annotations``, ``importlib``); ``dir(hcl)`` is ``__all__``."""
    code = (
        "import types, hcl\n"
        "print(sorted(n for n, v in vars(hcl).items() if not n.startswith('_') and not isinstance(v, types.ModuleType)))\n"
        "print(dir(hcl))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [str(["Hierarchy"]), str(sorted(hcl.__all__))]
    for name in hcl.__all__:
        assert getattr(hcl, name) is not None
