"""Shared pieces of the study tests: the FAST study config and its overrides.
Imported as ``study.helpers`` (tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = REPO / "configs" / "study_fast.yaml"


def fast_overrides(output_dir: Path, *extra: str) -> list[str]:
    """Overrides of configs/study_fast.yaml into ``output_dir``, with both protocols."""
    return [f"output_dir={output_dir}", "protocols=[all, heldout]", *extra]
