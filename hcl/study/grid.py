"""The grid of a study: its cells, their run directories and their checked TrainConfigs.

Each cell is one ordinary training run directory::

    <output_dir>/cells/<variant>/<protocol>/seed<k>/

holding what :func:`hcl.train.fit` writes there, plus ``cell.json`` (the cell's evaluation,
written last and atomically: a cell is finished exactly when it has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcl.study.config import StudyConfig
from hcl.study.protocols import AllClasses, EvaluationProtocol, HeldoutClasses

__all__ = ["CELL_FILE", "Cell", "StudyPlan", "build_grid", "cell_dir", "plan_study"]

CELL_FILE = "cell.json"


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of the grid."""

    variant: str
    protocol: str
    seed: int

    @property
    def key(self) -> str:
        """``"<variant>/<protocol>/seed<k>"``, also the cell's folder under ``<output_dir>/cells``."""
        return f"{self.variant}/{self.protocol}/seed{self.seed}"


def build_grid(study: StudyConfig) -> list[Cell]:
    """Every cell, seed by seed: a study stopped early has whole seeds of every variant."""
    return [
        Cell(variant, protocol, seed)
        for seed in study.seeds
        for protocol in study.protocols
        for variant in study.variants
    ]


def cell_dir(output_dir: str | Path, cell: Cell) -> Path:
    """The run directory of ``cell`` in the study at ``output_dir``."""
    return Path(output_dir) / "cells" / cell.key


@dataclass
class StudyPlan:
    """A checked study: its protocols, cells and each cell's TrainConfig."""

    study: StudyConfig
    protocols: dict[str, EvaluationProtocol]
    cells: list[Cell]
    configs: dict[Cell, Any]  # Cell -> hcl.train.TrainConfig


def plan_study(study: StudyConfig) -> StudyPlan:
    """Check everything a study needs before anything trains, and build every cell's config.

    Each cell's TrainConfig is ``base``, then the variant's keys, then the protocol's keys, then
    ``seed``, ``output_dir`` (the cell's folder) and ``progress=False`` (the study shows one bar).

    Raises:
        ValueError / TypeError: a bad TrainConfig key or value, naming the variant and key (e.g.
            an unknown loss); a bad held-out class (named).
        FileNotFoundError: a missing ``data_root`` (named), when the held-out protocol needs the
            hierarchy.
    """
    from hcl.train import TrainConfig

    first = next(iter(study.variants))
    variant_configs = {name: _train_config(TrainConfig, study, name, {}) for name in study.variants}
    protocols: dict[str, EvaluationProtocol] = {}
    for name in study.protocols:
        if name == "all":
            protocols[name] = AllClasses()
        else:
            train = _training_split(variant_configs[first])
            protocols[name] = HeldoutClasses.resolve(study.heldout, train.labels, train.hierarchy, study.seeds)
    cells = build_grid(study)
    configs = {}
    for cell in cells:
        extra = {
            **protocols[cell.protocol].overrides(cell.seed),
            "seed": cell.seed,
            "output_dir": str(cell_dir(study.output_dir, cell)),
            "progress": False,
        }
        configs[cell] = _train_config(TrainConfig, study, cell.variant, extra, where=f", protocol {cell.protocol!r}")
    return StudyPlan(study, protocols, cells, configs)


def _train_config(config_type: Any, study: StudyConfig, variant: str, extra: dict[str, Any], where: str = "") -> Any:
    data = {**study.base, **study.variants[variant], **extra}
    try:
        return config_type.from_dict(data)
    except (TypeError, ValueError) as error:
        raise type(error)(f"variant {variant!r}{where}: {error}") from error


def _training_split(cfg: Any) -> Any:
    from hcl.train import build_split

    return build_split(cfg, cfg.train_split)
