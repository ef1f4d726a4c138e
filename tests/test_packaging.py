"""Packaging: pyproject.toml and environment.yml agree; the distribution and import names."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import hcl

ROOT = Path(__file__).resolve().parents[1]
# conda spells a few packages differently from PyPI.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        elif not dep.startswith(("python=", "pip")) or dep.startswith("pip:"):
            listed.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    assert wanted == listed, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_torch_has_lower_bounds_only() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        if _name(dep) in {"torch", "torchvision"}:
            assert ">=" in dep and "<" not in dep and "==" not in dep, dep


def test_distribution_name_and_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "hcl-contrastive"
    out = subprocess.run([sys.executable, "-c", "import hcl; print(hcl.__version__)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hcl.__version__


def test_import_is_light() -> None:
    """`import hcl` must not pull in the heavy optional libraries (umap, plotly, ipywidgets)."""
    code = "import sys, hcl; print(sorted(m for m in ('umap', 'plotly', 'ipywidgets', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
