"""Packaging: pyproject.toml and environment.yml agree; the distribution and import names; package data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

import hcl

ROOT = Path(__file__).resolve().parents[1]
# conda spells a few packages differently from PyPI.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject() -> None:
    """environment.yml installs everything: the dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for extra in project["optional-dependencies"].values() for r in extra]
    wanted = {_name(r) for r in [*project["dependencies"], *extras]} - {project["name"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        elif not dep.startswith(("python=", "pip")) or dep.startswith("pip:"):
            listed.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    assert wanted == listed, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_the_dev_extra_installs_every_other_extra() -> None:
    """`make setup` and CI install ".[dev]": it must bring the notebook stack, numba and submitit."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (itself,) = [r for r in extras["dev"] if _name(r) == project["name"]]
    assert set(itself.partition("[")[2].rstrip("]").split(",")) == set(extras) - {"dev"}
    core = {_name(r) for r in project["dependencies"]}
    assert not core & {"umap-learn", "plotly", "pandas", "ipywidgets", "anywidget", "numba", "jupyterlab"}


def test_torch_has_lower_bounds_only() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        if _name(dep) in {"torch", "torchvision"}:
            assert ">=" in dep and "<" not in dep and "==" not in dep, dep


def test_distribution_name_and_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "hcl-contrastive"
    out = subprocess.run(
        [sys.executable, "-c", "import hcl; print(hcl.__version__)"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == hcl.__version__


def test_import_is_light() -> None:
    """`import hcl` must not pull in the heavy optional libraries (umap, plotly, ipywidgets)."""
    code = "import sys, hcl; print(sorted(m for m in ('umap', 'plotly', 'ipywidgets', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources, so the build leaves nothing in the repository."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "hcl", source / "hcl", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*pip, "-w", str(out), str(source)], check=True, capture_output=True)
    (built,) = out.glob("*.whl")
    return built


def test_wheel_ships_the_fashion_mnist_hierarchy(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert "hcl/data/fashion_mnist_hierarchy.json" in archive.namelist()


def test_installed_wheel_loads_the_hierarchy_without_the_repository(wheel: Path, tmp_path: Path) -> None:
    """The unpacked wheel alone, run from elsewhere: no repository data/ folder to fall back on."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = (
        "import hcl\n"
        "from hcl import Hierarchy\n"
        "from hcl.data.fashion_mnist import HIERARCHY_FILE\n"
        "print(hcl.__file__)\n"
        "print(Hierarchy.from_json(HIERARCHY_FILE).level_names)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    module_file, level_names = out.stdout.splitlines()
    assert Path(module_file).is_relative_to(site)  # the wheel's copy, not the editable install
    assert level_names == "['group', 'category', 'class']"


def test_wheel_ships_every_config(wheel: Path) -> None:
    """The configs live once, in hcl/configs/ (the top-level configs is a link to it), and ship in the wheel."""
    assert (ROOT / "configs").resolve() == ROOT / "hcl" / "configs"
    shipped = sorted(path.name for path in (ROOT / "hcl" / "configs").glob("*.yaml"))
    assert len(shipped) >= 10
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = sorted(Path(name).name for name in archive.namelist() if name.startswith("hcl/configs/"))
    assert in_wheel == shipped


def test_the_demo_finds_its_configs_in_a_venv_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    """`pip install` of the wheel into a fresh venv, run from an empty folder: `hcl demo --help` works and the
    demo's configs are the installed package's. The venv reuses this interpreter's torch (a .pth file added
    after the install, so pip never sees the editable hcl here); nothing is downloaded."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q"]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    (site_packages,) = (env_dir / "lib").glob("python*/site-packages")
    (site_packages / "reuse_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = {"cwd": elsewhere, "env": env, "capture_output": True, "text": True, "timeout": 120}
    helped = subprocess.run([str(env_dir / "bin" / "hcl"), "demo", "--help"], **run)
    assert helped.returncode == 0 and "--update-readme" in helped.stdout, helped.stderr
    code = (
        "from hcl.demo import find_configs_dir\n"
        "from hcl.train import load_config\n"
        "configs = find_configs_dir()\n"
        "print(configs)\n"
        "print(load_config(configs / 'fashion_mnist_himulcone.yaml').loss)\n"
    )
    found = subprocess.run([str(python), "-c", code], **run)
    assert found.returncode == 0, found.stderr
    configs, loss = found.stdout.splitlines()
    assert Path(configs).is_relative_to(site_packages) and loss == "himulcone"
