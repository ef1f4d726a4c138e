"""Shared test set-up: tests/ on sys.path (for oracles), deterministic seeds, the FAST switch."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))

# HCL_FAST=1 (the default in `make test` and CI) keeps slow parametrisations small.
FAST = os.environ.get("HCL_FAST", "1") != "0"


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the test: on tiny tensors and a shared CPU, a pool of spinning
    OpenMP threads only waits on itself. Directories with tiny models request it for every test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
