"""HierarchyExplorer, driven from Python: widget values update the figure and the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.callbacks import InputDeviceState, Points
from viz.fake_runs import toy_data, write_fake_run

from hcl.labels import prefix_ids
from hcl.metrics import per_level_retrieval, retrieval_table
from hcl.viz import HierarchyExplorer
from hcl.viz import explorer as explorer_module
from hcl.viz._explorer_core import DIMMED
from hcl.viz.figures import UNKNOWN_COLOR, level_colors
from hcl.viz.projection import project_2d


@pytest.fixture(scope="module")
def toy() -> tuple[np.ndarray, np.ndarray, object]:
    return toy_data(120, seed=5)


@pytest.fixture
def explorer(toy) -> HierarchyExplorer:
    emb, labels, h = toy
    return HierarchyExplorer(emb, labels, h, method="pca", num_neighbors=5)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_initial_view_colors_points_by_the_finest_level(explorer, toy) -> None:
    emb, labels, h = toy
    points = explorer.figure.data[0]
    assert len(points.x) == len(labels)
    np.testing.assert_allclose(np.column_stack([points.x, points.y]), project_2d(emb, "pca"), rtol=1e-6)
    assert list(points.marker.color) == list(np.asarray(level_colors(h, 2))[labels[:, 2]])
    assert explorer.level == 2 and explorer.node is None and explorer.sample == 0
    legend = [t.name for t in explorer.figure.data[3:]]
    assert legend == [h.nodes(2)[i] for i in np.unique(labels[:, 2])]


def test_changing_the_level_recolors_and_rebuilds_the_legend(explorer, toy) -> None:
    _, labels, h = toy
    explorer.level_selector.value = 0
    assert list(explorer.figure.data[0].marker.color) == list(np.asarray(level_colors(h, 0))[labels[:, 0]])
    assert [t.name for t in explorer.figure.data[3:]] == h.nodes(0)
    assert explorer.figure.layout.legend.title.text == "kingdom"
    explorer.set_level("family")
    assert explorer.level_selector.value == 1 and len(explorer.figure.data) == 3 + h.num_nodes(1)


def test_choosing_a_node_highlights_its_subtree(explorer, toy) -> None:
    _, labels, h = toy
    node = h.index(1, "B-1")
    assert (1, node) in [value for _, value in explorer.node_selector.options]
    explorer.node_selector.value = (1, node)
    inside = labels[:, 1] == node
    colors = np.asarray(explorer.figure.data[0].marker.color)
    assert (colors[~inside] == DIMMED).all()
    assert list(colors[inside]) == list(np.asarray(level_colors(h, 2))[labels[inside, 2]])
    opacity = np.asarray(explorer.figure.data[0].marker.opacity)
    assert (opacity[inside] > opacity[~inside].max()).all()
    assert f"B / B-1: {inside.sum()} of {len(labels)}" in explorer.figure.layout.title.text
    assert "queries from B / B-1" in explorer.metrics_view.value
    # Changing the level keeps the highlight.
    explorer.set_level(0)
    assert (np.asarray(explorer.figure.data[0].marker.color)[~inside] == DIMMED).all()
    explorer.select_node(None)
    assert DIMMED not in set(explorer.figure.data[0].marker.color)


def test_tree_options_list_every_node_depth_first(explorer, toy) -> None:
    _, _, h = toy
    values = [v for _, v in explorer.node_selector.options][1:]
    assert len(values) == sum(h.num_nodes(lv) for lv in range(3))
    for (lv_a, a), (lv_b, b) in zip(values, values[1:]):
        if lv_b > lv_a:  # stepping down the tree goes to a child
            assert lv_b == lv_a + 1 and h.parent(lv_b, b) == a


def _oracle_precision_at_1(emb: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> list[float]:
    """Loop oracle: leave-one-out nearest neighbour agrees on the label prefix, per level."""
    unit = _unit(emb.astype(np.float64))
    ids = prefix_ids(__import__("torch").from_numpy(labels)).numpy()
    out = []
    for level in range(labels.shape[1]):
        hits = []
        for q in queries:
            sims = unit @ unit[q]
            sims[q] = -np.inf
            hits.append(ids[int(np.argmax(sims)), level] == ids[q, level])
        out.append(float(np.mean(hits)))
    return out


def test_subtree_metrics_are_leave_one_out_over_the_subtree(toy) -> None:
    emb, labels, h = toy
    emb = emb + np.random.default_rng(0).normal(size=emb.shape).astype(np.float32) * 2.0  # make it imperfect
    explorer = HierarchyExplorer(emb, labels, h, method="pca")
    everything = explorer.subtree_metrics()
    expected = retrieval_table(per_level_retrieval(emb, labels, (1, 5, 10)), h)
    np.testing.assert_allclose(everything.to_numpy(float), expected.to_numpy(float))
    node = h.index(0, "C")
    explorer.select_node("kingdom", "C")
    table = explorer.subtree_metrics()
    members = np.flatnonzero(labels[:, 0] == node)
    assert list(table.index) == h.level_names
    assert (table["num_queries"] == len(members)).all()
    np.testing.assert_allclose(table["precision@1"], _oracle_precision_at_1(emb, labels, members))


def test_subtree_without_samples_gives_a_table_without_values(toy) -> None:
    emb, labels, h = toy
    keep = labels[:, 0] != h.index(0, "C")
    explorer = HierarchyExplorer(emb[keep], labels[keep], h, method="pca")
    explorer.select_node("kingdom", "C")
    table = explorer.subtree_metrics()
    assert list(table.index) == h.level_names and "map@r" in table.columns and table.isna().all().all()


def test_subtree_metrics_cap_the_number_of_queries(toy) -> None:
    emb, labels, h = toy
    explorer = HierarchyExplorer(emb, labels, h, method="pca", max_metric_queries=7)
    explorer.select_node(0, 0)
    assert (explorer.subtree_metrics()["num_queries"] == 7).all()


def test_neighbors_match_brute_force_and_report_agreement(explorer, toy) -> None:
    emb, labels, h = toy
    explorer.sample_selector.value = 17
    table = explorer.neighbors()
    sims = _unit(emb) @ _unit(emb)[17]
    sims[17] = -np.inf
    expected = np.argsort(-sims)[:5]
    assert list(table["sample"]) == list(expected)
    np.testing.assert_allclose(table["similarity"], sims[expected], atol=1e-5)
    for row in table.itertuples():
        shared = h.lca(labels[row.sample].tolist(), labels[17].tolist()) + 1
        assert row.shared_levels == shared
        assert row.agrees_down_to == (h.level_names[shared - 1] if shared else "-")
    neighbors, query = explorer.figure.data[1], explorer.figure.data[2]
    np.testing.assert_allclose(neighbors.x, explorer.coords[expected, 0])
    assert list(query.x) == [explorer.coords[17, 0]]
    assert str(expected[0]) in explorer.neighbors_view.value


def test_clicking_a_point_selects_it(explorer) -> None:
    trace = explorer.figure.data[0]
    points = Points(point_inds=[42], xs=[trace.x[42]], ys=[trace.y[42]], trace_name=trace.name, trace_index=0)
    trace._dispatch_on_click(points, InputDeviceState())
    assert explorer.sample == 42
    assert list(explorer.figure.data[2].x) == [explorer.coords[42, 0]]


def test_switching_projection_moves_the_points(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    emb, labels, h = toy
    explorer = HierarchyExplorer(emb, labels, h, method="pca", num_neighbors=3)
    explorer.select_sample(3)
    coords = np.random.default_rng(1).normal(size=(len(emb), 2)).astype(np.float32)
    asked = []
    monkeypatch.setattr(
        explorer_module, "project_2d", lambda e, method, seed, run_dir=None: asked.append(method) or coords
    )
    explorer.method_selector.value = "tsne"
    assert asked == ["tsne"]
    np.testing.assert_allclose(np.column_stack([explorer.figure.data[0].x, explorer.figure.data[0].y]), coords)
    assert list(explorer.figure.data[2].x) == [coords[3, 0]]
    np.testing.assert_allclose(explorer.figure.data[1].x, coords[explorer.neighbors()["sample"], 0])


def test_while_a_projection_is_computed_the_old_points_stay_faded_under_a_busy_title(
    toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb, labels, h = toy
    explorer = HierarchyExplorer(emb, labels, h, method="pca")
    old = np.column_stack([explorer.figure.data[0].x, explorer.figure.data[0].y])
    during = []

    def slow_projection(e, method, seed, run_dir=None) -> np.ndarray:
        points = explorer.figure.data[0]
        during.append(
            {
                "busy": explorer.busy,
                "disabled": explorer.method_selector.disabled,
                "title": explorer.figure.layout.title.text,
                "opacity": [t.opacity for t in explorer.figure.data[:3]],
                "xy": np.column_stack([points.x, points.y]),
            }
        )
        return np.zeros((len(e), 2), dtype=np.float32)

    monkeypatch.setattr(explorer_module, "project_2d", slow_projection)
    ready_title = explorer.figure.layout.title.text
    assert not explorer.busy and explorer.figure.data[0].opacity in (None, 1.0)
    explorer.method_selector.value = "umap"
    (state,) = during
    assert state["busy"] and state["disabled"]
    assert state["title"] == "computing UMAP\u2026 (still showing PCA)"
    assert all(o == explorer_module.STALE_OPACITY for o in state["opacity"])
    np.testing.assert_allclose(state["xy"], old)  # the old plot is kept while computing
    assert not explorer.busy and not explorer.method_selector.disabled
    assert explorer.figure.layout.title.text == ready_title
    assert [t.opacity for t in explorer.figure.data[:3]] == [1.0, 1.0, 1.0]
    assert np.allclose(explorer.figure.data[0].x, 0.0)
    explorer.method_selector.value = "tsne"
    assert during[1]["title"] == "computing t-SNE\u2026 (still showing UMAP)"


def test_a_failed_projection_restores_the_view_and_the_selector(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    emb, labels, h = toy
    explorer = HierarchyExplorer(emb, labels, h, method="pca")
    old_x = list(explorer.figure.data[0].x)

    def failing(e, method, seed, run_dir=None) -> np.ndarray:
        if method == "umap":
            raise MemoryError("too big")
        return project_2d(e, method, seed)

    monkeypatch.setattr(explorer_module, "project_2d", failing)
    with pytest.raises(MemoryError):
        explorer.method_selector.value = "umap"
    assert explorer.method_selector.value == "pca" and not explorer.busy
    assert not explorer.method_selector.disabled and explorer.figure.data[0].opacity == 1.0
    assert list(explorer.figure.data[0].x) == old_x
    assert explorer.figure.layout.title.text == f"all {len(labels)} samples"


def test_the_subtree_drop_down_starts_at_everything(explorer) -> None:
    assert explorer.node_selector.index == 0 and explorer.node_selector.label == "(everything)"
    assert explorer.node is None
    explorer.select_node(0, 1)
    explorer.select_node(None)
    assert explorer.node_selector.label == "(everything)" and explorer.node is None
    explorer.select_node(0, 1)
    explorer.node_selector.value = None  # ipywidgets would select nothing: the explorer shows "(everything)"
    assert explorer.node_selector.label == "(everything)" and explorer.node is None
    assert f"all {len(explorer.labels)} samples" == explorer.figure.layout.title.text


def test_a_reopened_run_takes_its_projection_from_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hcl.viz import projection

    run = write_fake_run(tmp_path / "run", n=60)
    calls = []
    monkeypatch.setattr(projection, "_tsne", lambda a, seed, params: calls.append(1) or a[:, :2] * 2.0)
    first = HierarchyExplorer.from_run(run, method="tsne", num_neighbors=3)
    projection.clear_projection_cache()  # as in a new session
    second = HierarchyExplorer.from_run(run, method="tsne", num_neighbors=3)
    assert len(calls) == 1 and len(list((run / "projections").glob("tsne-*.npy"))) == 1
    np.testing.assert_array_equal(second.coords, first.coords)
    second.method_selector.value = "pca"
    assert len(list((run / "projections").glob("*.npy"))) == 2


def test_given_coords_hide_the_projection_choice(toy) -> None:
    emb, labels, h = toy
    coords = np.random.default_rng(0).normal(size=(len(emb), 2))
    explorer = HierarchyExplorer(emb, labels, h, coords=coords)
    assert explorer.method_selector.layout.display == "none"
    np.testing.assert_allclose(explorer.figure.data[0].x, coords[:, 0], rtol=1e-6)


def test_unknown_labels_are_grey(toy) -> None:
    emb, labels, h = toy
    labels = labels.copy()
    labels[:4, 2] = -1
    explorer = HierarchyExplorer(emb, labels, h, method="pca")
    assert set(np.asarray(explorer.figure.data[0].marker.color)[:4]) == {UNKNOWN_COLOR}


def test_images_show_for_the_query_and_neighbors(toy) -> None:
    emb, labels, h = toy
    images = np.random.default_rng(0).integers(0, 256, (len(emb), 12, 12), dtype=np.uint8)
    explorer = HierarchyExplorer(emb, labels, h, method="pca", images=images, num_neighbors=4)
    assert explorer.neighbors_view.value.count("data:image/png;base64,") == 5


def test_from_run_subsamples_and_maps_images_to_dataset_indices(tmp_path: Path) -> None:
    from PIL import Image

    run = write_fake_run(tmp_path / "run", n=60)
    asked = []

    def get_image(index: int) -> Image.Image:
        asked.append(index)
        return Image.new("L", (8, 8))

    explorer = HierarchyExplorer.from_run(run, images=get_image, max_points=25, method="pca", num_neighbors=3)
    assert len(explorer.labels) == 25
    assert asked and all(i % 2 == 0 for i in asked)  # the fake run's indices are 0, 2, 4, ...


def test_display_goes_through_the_widget(explorer) -> None:
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert explorer.figure in explorer.widget.children[2].children[0].children


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_neighbors": 120}, "num_neighbors"),
        ({"method": "mds"}, "method"),
        ({"max_metric_queries": 0}, "max_metric"),
    ],
)
def test_invalid_arguments_are_rejected(toy, kwargs: dict, match: str) -> None:
    emb, labels, h = toy
    with pytest.raises(ValueError, match=match):
        HierarchyExplorer(emb, labels, h, **({"method": "pca"} | kwargs))


def test_selection_methods_validate(explorer) -> None:
    with pytest.raises(ValueError, match="out of range"):
        explorer.select_sample(500)
    with pytest.raises(ValueError, match="unknown node"):
        explorer.select_node(0, "Z")
    with pytest.raises(ValueError, match="needs a node"):
        explorer.select_node(0)


def test_the_pre_rename_names_still_work_with_a_deprecation_warning(toy) -> None:
    emb, labels, h = toy
    with pytest.warns(DeprecationWarning, match="'n_neighbors' is deprecated, use 'num_neighbors'"):
        explorer = HierarchyExplorer(emb, labels, h, method="pca", n_neighbors=3)
    with pytest.warns(DeprecationWarning, match="'neighbours' is deprecated, use 'neighbors'"):
        table = explorer.neighbours()
    assert len(table) == 3
    pd.testing.assert_frame_equal(table, explorer.neighbors())
    with pytest.warns(DeprecationWarning, match="'neighbours_view' is deprecated"):
        assert explorer.neighbours_view is explorer.neighbors_view
