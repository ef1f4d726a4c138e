"""The notebooks are committed clean: no outputs, no widget state, kernelspec python3, FAST switch."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = [
    "01_quick_tour.ipynb",
    "02_losses_explained.ipynb",
    "03_training.ipynb",
    "04_hierarchy_in_2d.ipynb",
    "05_per_level_metrics.ipynb",
    "06_explorer.ipynb",
    "07_does_the_hierarchy_help.ipynb",
]
FAST_SWITCH = 'FAST = os.environ.get("HCL_FAST", "0") != "0"'  # FAST only where CI or `make test` sets it
# Cell metadata that only records a past execution or a UI state.
_VOLATILE_CELL_METADATA = {"execution", "collapsed", "scrolled", "jupyter", "ExecuteTime"}


def test_the_series_is_complete() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.fixture(params=EXPECTED)
def notebook(request: pytest.FixtureRequest) -> nbformat.NotebookNode:
    path = NOTEBOOKS / request.param
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    nb.metadata["_name"] = request.param
    return nb


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_outputs_and_widget_state_are_stripped(notebook: nbformat.NotebookNode) -> None:
    name = notebook.metadata["_name"]
    assert "widgets" not in notebook.metadata, f"{name} holds widget state; strip it"
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
        assert not (_VOLATILE_CELL_METADATA & set(cell.metadata)), f"{name} cell {i} metadata {dict(cell.metadata)}"
        assert "attachments" not in cell or not cell.attachments, f"{name} cell {i} has attachments"


def test_kernelspec_is_python3(notebook: nbformat.NotebookNode) -> None:
    assert notebook.metadata.kernelspec.name == "python3"
    assert notebook.metadata.kernelspec.language == "python"


def test_narrated_with_a_fast_switch_and_checks(notebook: nbformat.NotebookNode) -> None:
    name = notebook.metadata["_name"]
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {name[:2]} ·"), name
    assert sum(c.cell_type == "markdown" for c in notebook.cells) >= 4, f"{name}: tell the story in markdown"
    code = "\n".join(_code(notebook))
    assert FAST_SWITCH in code, f"{name} lacks the FAST switch"
    assert re.search(r"^\s*assert ", code, re.MULTILINE), f"{name} checks none of its results"


def test_notebooks_hold_no_library_logic(notebook: nbformat.NotebookNode) -> None:
    """Public API only: no private hcl modules, no functions or classes defined in a notebook."""
    name = notebook.metadata["_name"]
    for source in _code(notebook):
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), (
                f"{name} defines {node.name!r}; library code belongs in hcl/"
            )
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hcl"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not any(p.startswith("_") for p in node.module.split(".")) and not private, (
                    f"{name} imports private names from {node.module}"
                )


def test_notebooks_import_only_public_names(notebook: nbformat.NotebookNode) -> None:
    """Notebooks hold no library logic and reach hcl through its public names only: ``hcl`` or
    one of its top-level modules and subpackages (``hcl.losses``, not ``hcl.losses.functional``),
    no leading underscore, and each imported name in that module's ``__all__``."""
    import importlib

    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(
            "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        )
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hcl"):
                parts = node.module.split(".")
                assert len(parts) <= 2 and not any(part.startswith("_") for part in parts), node.module
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert alias.name in getattr(module, "__all__", ()), (
                        f"{notebook.metadata['_name']} imports {alias.name} from {node.module}, not in its __all__"
                    )


def test_temporary_folders_are_removed_by_the_last_code_cell(notebook: nbformat.NotebookNode) -> None:
    """A kernel stopped by nbval or Jupyter does not run the finalisers that would remove a
    ``TemporaryDirectory``: the notebook removes its own, or /tmp fills with ``hcl-*`` folders."""
    name = notebook.metadata["_name"]
    code = _code(notebook)
    every = "\n".join(code)
    if "mkdtemp(" in every:
        assert "rmtree(" in code[-1], f"{name} leaves its mkdtemp folder behind"
    if "TemporaryDirectory(" in every:
        assert ".cleanup()" in code[-1], f"{name} leaves its TemporaryDirectory behind"
