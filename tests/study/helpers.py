"""Shared pieces of the study tests: the FAST study config and whether the held-out parts exist.
Imported as ``study.helpers`` (tests/ is on sys.path)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = REPO / "configs" / "study_fast.yaml"


def heldout_available() -> bool:
    """The held-out protocol needs hcl.metrics' held-out functions and TrainConfig.heldout_classes."""
    import hcl.metrics
    from hcl.train import TrainConfig

    functions = ("choose_heldout_classes", "check_heldout_classes", "heldout_metrics")
    return all(hasattr(hcl.metrics, f) for f in functions) and "heldout_classes" in {
        f.name for f in dataclasses.fields(TrainConfig)
    }


def fast_overrides(output_dir: Path, *extra: str) -> list[str]:
    """Overrides of configs/study_fast.yaml into ``output_dir`` (the protocols hcl has so far)."""
    protocols = "[all, heldout]" if heldout_available() else "[all]"
    return [f"output_dir={output_dir}", f"protocols={protocols}", *extra]
