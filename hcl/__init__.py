"""hcl: hierarchical multi-label contrastive learning.

Subpackages: ``hcl.losses``, ``hcl.data``, ``hcl.models``, ``hcl.train``, ``hcl.metrics`` and
``hcl.viz`` (imported on first use, so ``import hcl`` stays fast).
"""

import importlib as _importlib

from hcl.hierarchy import Hierarchy

__version__ = "0.1.0"
__all__ = ["Hierarchy", "__version__", "data", "losses", "metrics", "models", "train", "viz"]

_SUBPACKAGES = {"data", "losses", "metrics", "models", "train", "viz"}


def __getattr__(name: str) -> object:
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"hcl.{name}")
    raise AttributeError(f"module 'hcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
