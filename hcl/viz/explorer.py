"""HierarchyExplorer: an ipywidgets view of an embedding and its label tree.

Highlight a node's subtree, colour by any level, switch UMAP / t-SNE / PCA, click a point for its
neighbours, read the subtree's per-level metrics; all through widget values, so scriptable and
testable. Tables, colours and HTML come from :mod:`hcl.viz._explorer_core`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hcl._compat import deprecated_attribute, renamed_kwargs
from hcl.hierarchy import Hierarchy
from hcl.rundir import load_embeddings
from hcl.viz._explorer_core import (
    legend_traces,
    metrics_html,
    neighbors_html,
    neighbors_table,
    point_colors,
    scatter_traces,
    subtree_mask,
    subtree_metrics_table,
    thumbnail_html,
    tree_options,
)
from hcl.viz.figures import image_getter, label_paths, resolve_level
from hcl.viz.projection import METHOD_NAMES, METHODS, as_embedding_array, project_2d

__all__ = ["HierarchyExplorer"]

# Opacity of the points while they still show the previous projection.
STALE_OPACITY = 0.25


class HierarchyExplorer:
    """Interactive explorer of embeddings in a label hierarchy (JupyterLab, ipywidgets + plotly).

    Display it by making it the last expression of a cell (or ``display(explorer)``). The parts,
    all public widgets: ``level_selector`` (colour by level), ``node_selector`` (the subtree to
    highlight; value ``None``, shown as "(everything)", or ``(level, node id)``),
    ``method_selector`` (projection; while a new one is computed it is disabled, ``busy`` is True
    and the old points stay, faded, under the title "computing UMAP…"),
    ``sample_selector`` (the query sample), ``figure`` (a plotly ``FigureWidget``; clicking a
    point selects it as the query), ``neighbors_view`` and ``metrics_view`` (HTML tables).

    Figure traces: 0 all points (colours by level, dimmed outside the subtree), 1 the query's
    neighbours (rings), 2 the query (a star), then legend-only entries for the current level.

    The names from before hcl spelled counts ``num_*`` and used American spelling in identifiers,
    ``n_neighbors=``, ``neighbours()`` and ``neighbours_view``, still work with a
    ``DeprecationWarning``.

    Args:
        embeddings: the embeddings.
        labels: their label rows (the convention of :class:`hcl.Hierarchy`).
        hierarchy: the label tree.
        images: optional images shown for the query and its neighbours (see
            :func:`hcl.viz.figures.image_getter`), indexed by row.
        method: initial projection, ``"umap"``, ``"tsne"`` or ``"pca"`` (see
            :func:`hcl.viz.project_2d`; results are cached, so switching back is instant).
        coords: precomputed 2-D positions; then the method selector is hidden.
        seed: projection seed.
        num_neighbors: how many neighbours of the query to list.
        max_metric_queries: most subtree samples used as queries for the subtree metrics (a
            seeded random subset beyond that); None: all of them (one blocked pass, each
            query against all N samples, so interactive up to about 10^4 x 10^5).
        max_legend_classes: most nodes listed in the legend.
        run_dir: also cache the projections in this run directory (``from_run`` sets it), so
            the next explorer of the same embeddings opens instantly.

    Shape:
        embeddings: (N, D). labels: (N, L). coords: (N, 2).
    """

    neighbours_view = deprecated_attribute("neighbours_view", "neighbors_view")
    neighbours = deprecated_attribute("neighbours", "neighbors")

    @renamed_kwargs(n_neighbors="num_neighbors")
    def __init__(
        self,
        embeddings: Any,
        labels: Any,
        hierarchy: Hierarchy,
        *,
        images: Any = None,
        method: str = "umap",
        coords: Any = None,
        seed: int = 0,
        num_neighbors: int = 10,
        max_metric_queries: int | None = None,
        max_legend_classes: int = 40,
        run_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._embeddings = as_embedding_array(embeddings)
        n = len(self._embeddings)
        if n < 2:
            raise ValueError(f"the explorer needs at least 2 samples, got {n}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not 1 <= num_neighbors < n:
            raise ValueError(f"num_neighbors must be in 1..{n - 1} (N - 1), got {num_neighbors}")
        if max_metric_queries is not None and max_metric_queries < 1:
            raise ValueError(f"max_metric_queries must be >= 1 or None, got {max_metric_queries}")
        self.hierarchy = hierarchy
        self.labels = hierarchy.validate(labels).cpu().numpy()
        if len(self.labels) != n:
            raise ValueError(f"got {len(self.labels)} label rows for {n} embeddings")
        self.paths = label_paths(self.labels, hierarchy)
        self._images: Callable[[int], Any] | None = image_getter(images, n) if images is not None else None
        self._seed = seed
        self._num_neighbors = num_neighbors
        self._max_metric_queries = max_metric_queries
        self._max_legend_classes = max_legend_classes
        self._fixed_coords = coords is not None
        self._run_dir = run_dir
        self.busy = False
        self.coords = (
            np.asarray(as_embedding_array(coords, name="coords"))
            if coords is not None
            else project_2d(self._embeddings, method, seed, run_dir=run_dir)
        )
        self._shown_method = method
        if self.coords.shape != (n, 2):
            raise ValueError(f"coords must have shape ({n}, 2), got {self.coords.shape}")
        self._neighbor_rows = np.empty(0, dtype=np.int64)

        L = hierarchy.num_levels
        self.level_selector = widgets.Dropdown(
            options=[(name, lv) for lv, name in enumerate(hierarchy.level_names)],
            value=L - 1,
            description="colour by",
        )
        self.node_selector = widgets.Dropdown(
            options=[("(everything)", None)] + tree_options(hierarchy),
            index=0,  # value=None would select nothing and show a blank box
            description="subtree",
            layout=widgets.Layout(width="360px"),
        )
        self.method_selector = widgets.ToggleButtons(
            options=list(METHODS),
            value=method,
            description="projection",
            style={"button_width": "60px"},
            layout=widgets.Layout(display="none" if self._fixed_coords else None),
        )
        self.sample_selector = widgets.BoundedIntText(value=0, min=0, max=n - 1, description="sample")
        self.neighbors_view = widgets.HTML()
        self.metrics_view = widgets.HTML()
        self.figure = go.FigureWidget(scatter_traces(self.coords, self.paths))
        self.figure.update_layout(
            template="plotly_white",
            width=660,
            height=560,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
            hovermode="closest",
            legend={"itemsizing": "constant"},
            uirevision="hcl-explorer",
        )
        self.figure.update_xaxes(showticklabels=False, zeroline=False, showgrid=False)
        self.figure.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
        self.figure.data[0].on_click(self._on_click)

        self.level_selector.observe(lambda _: self._refresh_colors(), names="value")
        self.node_selector.observe(lambda _: self._refresh_subtree(), names="value")
        self.node_selector.observe(self._show_everything_for_none, names="index")
        self.method_selector.observe(lambda change: self._reproject(change["new"]), names="value")
        self.sample_selector.observe(lambda _: self._refresh_sample(), names="value")

        self._refresh_colors()
        self._refresh_subtree()
        self._refresh_sample()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.level_selector, self.node_selector]),
                self.method_selector,
                widgets.HBox(
                    [
                        widgets.Box([self.figure], layout=widgets.Layout(flex="0 0 auto", width="670px")),
                        widgets.VBox(
                            [self.sample_selector, self.neighbors_view],
                            layout=widgets.Layout(flex="1 1 auto", min_width="320px"),
                        ),
                    ],
                    # In a narrow notebook the neighbours move below the plot instead of overflowing.
                    layout=widgets.Layout(flex_flow="row wrap"),
                ),
                self.metrics_view,
            ]
        )

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike[str],
        split: str = "test",
        *,
        images: Callable[[int], Any] | None = None,
        max_points: int | None = 5000,
        seed: int = 0,
        **kwargs: Any,
    ) -> HierarchyExplorer:
        """An explorer of a run directory's ``embeddings_<split>.npz``.

        Args:
            run_dir: the run directory.
            split: which embeddings file.
            images: optional ``dataset index -> PIL.Image`` (e.g. a dataset's ``get_image``);
                the npz file's ``indices`` map rows to dataset indices.
            max_points: keep a seeded random subset of this many rows (``None``: all), so the
                scatter stays responsive.
            seed: subset and projection seed.
            **kwargs: passed to the constructor.
        """
        run = load_embeddings(run_dir, split)
        rows = np.arange(len(run.labels))
        if max_points is not None and len(rows) > max_points:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
        indices = run.indices[rows]
        getter = None if images is None else (lambda i: images(int(indices[i])))
        kwargs.setdefault("run_dir", run_dir)
        return cls(run.embeddings[rows], run.labels[rows], run.hierarchy, images=getter, seed=seed, **kwargs)

    # ----------------------------------------------------------------- state
    @property
    def level(self) -> int:
        """The level the points are coloured by."""
        return int(self.level_selector.value)

    @property
    def node(self) -> tuple[int, int] | None:
        """The highlighted subtree's root as ``(level, node id)``, or ``None`` for everything."""
        return self.node_selector.value

    @property
    def sample(self) -> int:
        """The query sample's row."""
        return int(self.sample_selector.value)

    def set_level(self, level: int | str) -> None:
        """Colour by ``level`` (index or name)."""
        self.level_selector.value = resolve_level(self.hierarchy, level)

    def select_node(self, level: int | str | None, node: int | str | None = None) -> None:
        """Highlight the subtree of ``node`` (id or name) at ``level``; ``None`` clears it."""
        if level is None:
            self.node_selector.index = 0
            return
        level = resolve_level(self.hierarchy, level)
        if node is None:
            raise ValueError("select_node needs a node (id or name) when a level is given")
        idx = self.hierarchy.index(level, node) if isinstance(node, str) else int(node)
        if not 0 <= idx < self.hierarchy.num_nodes(level):
            raise ValueError(f"node id {idx} out of range at level {level} ({self.hierarchy.num_nodes(level)} nodes)")
        self.node_selector.value = (level, idx)

    def select_sample(self, row: int) -> None:
        """Make sample ``row`` the query."""
        if not 0 <= row < len(self.labels):
            raise ValueError(f"sample row {row} out of range 0..{len(self.labels) - 1}")
        self.sample_selector.value = int(row)

    def subtree_mask(self) -> np.ndarray:
        """Which samples lie in the highlighted subtree (all True when none is chosen).

        Shape:
            Returns (N,) bool.
        """
        return subtree_mask(self.labels, self.node)

    # ----------------------------------------------------------------- tables
    def neighbors(self, row: int | None = None) -> pd.DataFrame:
        """The query's nearest neighbours (cosine), with label paths and where they agree.

        Columns: ``sample``, ``similarity``, ``path``, ``shared_levels`` (how many levels, from
        the coarsest, the neighbour's label agrees with the query's) and ``agrees_down_to`` (the
        finest agreeing level's name, or ``"-"``).
        """
        row = self.sample if row is None else int(row)
        return neighbors_table(self._embeddings, self.labels, self.paths, self.hierarchy, row, self._num_neighbors)

    def subtree_metrics(self) -> pd.DataFrame:
        """Per-level retrieval metrics of the highlighted subtree's samples as queries.

        Each query searches all *other* samples (leave-one-out), exactly as
        :func:`hcl.metrics.per_level_retrieval` does for the whole set (which is what this
        returns when no subtree is chosen), through its ``query_indices``; within a subtree at
        most ``max_metric_queries`` queries (a seeded random subset) when that is set. Rows:
        levels; columns: the metrics, with ``num_queries`` counting the queries averaged at each
        level (a subtree without samples gives a table without values).
        """
        mask = None if self.node is None else self.subtree_mask()
        return subtree_metrics_table(
            self._embeddings, self.labels, self.hierarchy, mask, self._max_metric_queries, self._seed
        )

    # ----------------------------------------------------------------- updates
    def _on_click(self, trace: Any, points: Any, state: Any) -> None:
        if points.point_inds:
            self.sample_selector.value = int(points.point_inds[0])

    def _show_everything_for_none(self, change: dict[str, Any]) -> None:
        if change["new"] is None:  # value None was set: select the "(everything)" entry that has it
            self.node_selector.index = 0

    def _reproject(self, method: str) -> None:
        """Fade the points and say what is computed, compute ``method``, then move the points."""
        self._show_busy(method)
        try:
            coords = project_2d(self._embeddings, method, self._seed, run_dir=self._run_dir)
        except BaseException:
            self._show_ready()
            self.method_selector.value = self._shown_method  # the selector shows what is plotted
            raise
        self.coords, self._shown_method = coords, method
        with self.figure.batch_update():
            self.figure.data[0].x = self.coords[:, 0]
            self.figure.data[0].y = self.coords[:, 1]
            self._place_query()
        self._show_ready()

    def _show_busy(self, method: str) -> None:
        self.busy = True
        self.method_selector.disabled = True
        with self.figure.batch_update():
            for trace in self.figure.data[:3]:
                trace.opacity = STALE_OPACITY
            self.figure.layout.title.text = (
                f"computing {METHOD_NAMES[method]}… (still showing {METHOD_NAMES[self._shown_method]})"
            )

    def _show_ready(self) -> None:
        with self.figure.batch_update():
            for trace in self.figure.data[:3]:
                trace.opacity = 1.0
            self.figure.layout.title.text = self._title()
        self.method_selector.disabled = False
        self.busy = False

    def _point_colors(self) -> np.ndarray:
        return point_colors(self.hierarchy, self.labels, self.level, self.subtree_mask())

    def _refresh_colors(self) -> None:
        level = self.level
        legend = legend_traces(self.hierarchy, self.labels, level, self._max_legend_classes)
        with self.figure.batch_update():
            self.figure.data[0].marker.color = self._point_colors()
            self.figure.data = self.figure.data[:3]
            if legend:
                self.figure.add_traces(legend)
            self.figure.layout.legend.title.text = self.hierarchy.level_names[level]

    def _refresh_subtree(self) -> None:
        mask = self.subtree_mask()
        with self.figure.batch_update():
            self.figure.data[0].marker.color = self._point_colors()
            self.figure.data[0].marker.opacity = np.where(mask, 0.9, 0.35)
            self.figure.layout.title.text = self._title()
        self.metrics_view.value = self._metrics_html()

    def _title(self) -> str:
        mask = self.subtree_mask()
        if self.node is None:
            return f"all {len(mask)} samples"
        path = " / ".join(self.hierarchy.path(*self.node))
        return f"subtree {path}: {int(mask.sum())} of {len(mask)} samples"

    def _refresh_sample(self) -> None:
        table = self.neighbors()
        self._neighbor_rows = table["sample"].to_numpy()
        with self.figure.batch_update():
            self._place_query()
        self.neighbors_view.value = self._neighbors_html(table)

    def _place_query(self) -> None:
        rows = self._neighbor_rows
        self.figure.data[1].x, self.figure.data[1].y = self.coords[rows, 0], self.coords[rows, 1]
        self.figure.data[2].x, self.figure.data[2].y = self.coords[[self.sample], 0], self.coords[[self.sample], 1]

    # ----------------------------------------------------------------- rendering
    def _neighbors_html(self, table: pd.DataFrame) -> str:
        row = self.sample
        return neighbors_html(table, row, self.paths[row], lambda r, size: thumbnail_html(self._images, r, size))

    def _metrics_html(self) -> str:
        what = "all samples" if self.node is None else " / ".join(self.hierarchy.path(*self.node))
        return metrics_html(self.subtree_metrics(), what)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
