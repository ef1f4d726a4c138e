"""Studies: a grid of training runs (loss variants x seeds x protocols), run, aggregated, reported.

    hcl study --config configs/study_fashion_mnist.yaml [--set key=value ...] [--workers N]

or :func:`run_study`. Each cell is an ordinary run directory under ``<output_dir>/cells``; a
finished cell is skipped on a rerun and an unfinished one resumes. The study writes
``study.json`` (config, per-cell results, timing, the tables) and a self-contained
``study.html``. The top layer of hcl: it uses :mod:`hcl.train`, :mod:`hcl.metrics` and
:mod:`hcl.viz`; nothing below imports it.
"""

from typing import Any

from hcl.extras import requires_extra
from hcl.study.cell import CellTask, run_cell
from hcl.study.choice import CHOICE_RULE, choice_sentence, choose_variant
from hcl.study.config import HeldoutSpec, StudyConfig, load_study_config
from hcl.study.findings import (
    FINDINGS_RULE,
    headline_metrics,
    metric_label,
    study_findings,
    study_levels,
)
from hcl.study.grid import Cell, StudyPlan, build_grid, cell_dir, plan_study
from hcl.study.markdown import study_effects_table, study_headline, study_markdown, write_study_markdown
from hcl.study.protocols import AllClasses, HeldoutClasses
from hcl.study.report import write_study_report
from hcl.study.runner import (
    StudyCellError,
    StudyResult,
    read_study,
    run_study,
    write_study_json,
)
from hcl.study.stats import (
    aggregate,
    cell_rows,
    mean_interval,
    paired_difference,
    verdict,
)

# The figures need plotly: imported on first use, so a study's workers never load it.
_FIGURES = ("paired_difference_figure", "tradeoff_figure", "variant_colors")

__all__ = [
    "CHOICE_RULE",
    "FINDINGS_RULE",
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
    "choice_sentence",
    "choose_variant",
    "headline_metrics",
    "load_study_config",
    "mean_interval",
    "metric_label",
    "paired_difference",
    "paired_difference_figure",
    "plan_study",
    "read_study",
    "run_cell",
    "run_study",
    "study_findings",
    "study_effects_table",
    "study_headline",
    "study_levels",
    "study_markdown",
    "tradeoff_figure",
    "variant_colors",
    "verdict",
    "write_study_json",
    "write_study_markdown",
    "write_study_report",
]


def __getattr__(name: str) -> Any:
    if name in _FIGURES:
        with requires_extra(f"hcl.study.{name}"):
            from hcl.study import figures

        return getattr(figures, name)
    raise AttributeError(f"module 'hcl.study' has no attribute {name!r}")
