"""Plotly figures: embeddings coloured by level, hierarchy preservation, metrics and training curves.

Every figure function returns a ``plotly.graph_objects.Figure``; :func:`save_html` writes any of
them as one self-contained HTML file (plotly.js inlined, nothing fetched from a CDN).

- :mod:`~hcl.viz.figures.common`: levels, label paths and tree-aware colours shared by all.
- :mod:`~hcl.viz.figures.scatter`: 2-D scatter plots coloured by level.
- :mod:`~hcl.viz.figures.preservation`: distance vs tree distance, class-similarity heat map.
- :mod:`~hcl.viz.figures.training`: per-level metric bars and training curves.
- :mod:`~hcl.viz.figures.html`: hover thumbnails and self-contained HTML.
"""

from hcl.viz.figures.common import UNKNOWN_COLOR, label_paths, level_colors, resolve_level
from hcl.viz.figures.html import image_getter, save_html, thumbnail_uri, thumbnail_uris, to_html
from hcl.viz.figures.preservation import class_similarity_heatmap, distance_vs_tree_distance
from hcl.viz.figures.scatter import scatter_by_level, scatter_levels_grid, scatter_with_level_dropdown
from hcl.viz.figures.training import per_level_metric_bars, training_curves

__all__ = [
    "UNKNOWN_COLOR",
    "class_similarity_heatmap",
    "distance_vs_tree_distance",
    "image_getter",
    "label_paths",
    "level_colors",
    "per_level_metric_bars",
    "resolve_level",
    "save_html",
    "scatter_by_level",
    "scatter_levels_grid",
    "scatter_with_level_dropdown",
    "thumbnail_uri",
    "thumbnail_uris",
    "to_html",
    "training_curves",
]
