"""Where data sets and the synthetic cache live when no root is given: a source checkout keeps
them in its data/, an installed package never writes beside itself in site-packages."""

from __future__ import annotations

from pathlib import Path

import pytest

import hcl.data.files as files
from hcl.data import CIFAR100, DeepFashionInShop


def fake_module(root: Path, checkout: bool) -> Path:
    module = root / "hcl" / "data" / "files.py"
    module.parent.mkdir(parents=True)
    module.touch()
    (root / "hcl" / "__init__.py").touch()
    if checkout:
        (root / "pyproject.toml").touch()
    return module


def test_checkout_root_tells_a_source_tree_from_an_installed_package(tmp_path: Path) -> None:
    assert files.checkout_root(fake_module(tmp_path / "repo", checkout=True)) == (tmp_path / "repo").resolve()
    assert files.checkout_root(fake_module(tmp_path / "site-packages", checkout=False)) is None
    assert files.checkout_root() == Path(__file__).resolve().parents[2]


def test_installed_package_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "checkout_root", lambda: None)
    monkeypatch.delenv("HCL_DATA_DIR", raising=False)
    monkeypatch.delenv("HCL_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.default_data_dir() == tmp_path / "data"
    assert files.default_cache_dir() == tmp_path / "xdg" / "hcl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.default_cache_dir() == tmp_path / "home" / ".cache" / "hcl"


def test_environment_variables_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCL_DATA_DIR", str(tmp_path / "sets"))
    monkeypatch.setenv("HCL_CACHE_DIR", str(tmp_path / "cache"))
    assert files.default_data_dir() == tmp_path / "sets"
    assert files.default_cache_dir() == tmp_path / "cache"
    # Without a root, the loaders look there and say so when the files are missing.
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "sets" / "deepfashion")):
        DeepFashionInShop()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "sets")):
        CIFAR100()


def test_checkout_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HCL_DATA_DIR", raising=False)
    monkeypatch.delenv("HCL_CACHE_DIR", raising=False)
    repository = Path(__file__).resolve().parents[2]
    assert files.default_data_dir() == repository / "data"
    assert files.default_cache_dir() == repository / "data" / "cache"
