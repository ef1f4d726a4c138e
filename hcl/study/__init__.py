"""Studies: a grid of training runs (loss variants x seeds x protocols), run, aggregated, reported.

    hcl study --config configs/study_fashion_mnist.yaml [--set key=value ...] [--workers N]

or :func:`run_study`. Each cell is an ordinary run directory under ``<output_dir>/cells``; a
finished cell is skipped on a rerun and an unfinished one resumes. The study writes
``study.json`` (config, per-cell results, timing, the tables) and a self-contained
``study.html``. The top layer of hcl: it uses :mod:`hcl.train`, :mod:`hcl.metrics` and
:mod:`hcl.viz`; nothing below imports it.
"""

from hcl.study.cell import CellTask, run_cell
from hcl.study.config import HeldoutSpec, StudyConfig, load_study_config
from hcl.study.grid import Cell, StudyPlan, build_grid, cell_dir, plan_study
from hcl.study.protocols import AllClasses, HeldoutClasses
from hcl.study.report import write_study_report
from hcl.study.runner import StudyCellError, StudyResult, run_study, write_study_json
from hcl.study.stats import aggregate, cell_rows, mean_interval, paired_difference

__all__ = [
    "AllClasses",
    "Cell",
    "CellTask",
    "HeldoutClasses",
    "HeldoutSpec",
    "StudyCellError",
    "StudyConfig",
    "StudyPlan",
    "StudyResult",
    "aggregate",
    "build_grid",
    "cell_dir",
    "cell_rows",
    "load_study_config",
    "mean_interval",
    "paired_difference",
    "plan_study",
    "run_cell",
    "run_study",
    "write_study_json",
    "write_study_report",
]
