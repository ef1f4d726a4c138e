"""hcl: hierarchical multi-label contrastive learning.

Subpackages: ``hcl.losses``, ``hcl.data``, ``hcl.models``, ``hcl.train``, ``hcl.metrics`` and
``hcl.viz`` (imported on first use, so ``import hcl`` stays fast).
"""

from __future__ import annotations

import importlib
from typing import Any

from hcl.hierarchy import Hierarchy

__version__ = "0.1.0"
__all__ = ["Hierarchy", "__version__", "data", "losses", "metrics", "models", "train", "viz"]

_SUBPACKAGES = {"data", "losses", "metrics", "models", "train", "viz"}


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"hcl.{name}")
    raise AttributeError(f"module 'hcl' has no attribute {name!r}")
