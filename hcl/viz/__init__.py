"""Visualisation: 2-D projections, plotly figures, the hierarchy explorer and the HTML report.

Every name is imported on first use, so ``import hcl.viz`` stays light; plotly, umap-learn,
scikit-learn and ipywidgets load only when a function that needs them is called. They come with
the ``notebooks`` extra (``pip install 'hcl-contrastive[notebooks]'``); without it, the first use
of a name that needs one raises an ImportError saying so (:mod:`hcl.extras`).
"""

from __future__ import annotations

import importlib
from typing import Any

from hcl.extras import requires_extra

__all__ = [
    "HierarchyExplorer",
    "class_similarity_heatmap",
    "clear_projection_cache",
    "distance_vs_tree_distance",
    "level_colors",
    "load_embeddings",
    "per_level_metric_bars",
    "project_2d",
    "read_metrics_log",
    "save_html",
    "scatter_by_level",
    "scatter_levels_grid",
    "scatter_with_level_dropdown",
    "training_curves",
    "write_report",
]

_HOME = {
    "HierarchyExplorer": "hcl.viz.explorer",
    "class_similarity_heatmap": "hcl.viz.figures",
    "clear_projection_cache": "hcl.viz.projection",
    "distance_vs_tree_distance": "hcl.viz.figures",
    "level_colors": "hcl.viz.figures",
    "load_embeddings": "hcl.rundir",
    "per_level_metric_bars": "hcl.viz.figures",
    "project_2d": "hcl.viz.projection",
    "read_metrics_log": "hcl.rundir",
    "save_html": "hcl.viz.figures",
    "scatter_by_level": "hcl.viz.figures",
    "scatter_levels_grid": "hcl.viz.figures",
    "scatter_with_level_dropdown": "hcl.viz.figures",
    "training_curves": "hcl.viz.figures",
    "write_report": "hcl.viz.report",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        with requires_extra(f"hcl.viz.{name}"):
            value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hcl.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
