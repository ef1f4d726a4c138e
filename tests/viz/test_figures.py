"""Figure functions: data in the traces checked against brute-force oracles; HTML saving; run files."""

from __future__ import annotations

import base64
import colorsys
import io
import json
import os
import re
import stat
from itertools import combinations
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image
from plotly.colors import hex_to_rgb
from viz.fake_runs import LEVEL_NAMES, toy_data, toy_hierarchy, write_fake_run

from hcl.rundir import load_embeddings, read_metrics_log
from hcl.viz import figures as F


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    emb, labels, h = toy_data(60)
    coords = emb[:, :2] * 1.0
    return emb, labels, coords, h


def _points(trace: go.Scatter) -> set[int]:
    return {int(c[0]) for c in trace.customdata}


# --------------------------------------------------------------------------- helpers
def test_label_paths_join_names_and_mark_unknown() -> None:
    h = toy_hierarchy()
    labels = np.array([h.node_labels(2)[5].tolist(), [h.index(0, "B"), -1, -1], [-1, -1, -1]])
    paths = F.label_paths(labels, h)
    assert list(paths) == [" / ".join(h.path(2, 5)), "B", "(unknown)"]


def test_level_colors_are_distinct_and_follow_the_tree() -> None:
    h = toy_hierarchy()
    for level in range(3):
        colors = F.level_colors(h, level)
        assert len(colors) == h.num_nodes(level) == len(set(colors))
    roots = F.level_colors(h, 0)
    leaves = F.level_colors(h, 2)

    def hue(color: str) -> float:
        return colorsys.rgb_to_hls(*(c / 255 for c in hex_to_rgb(color)))[0]

    for leaf, color in enumerate(leaves):
        root = int(h.node_labels(2)[leaf, 0])
        gaps = [min(abs(hue(color) - hue(r)), 1 - abs(hue(color) - hue(r))) for r in roots]
        assert int(np.argmin(gaps)) == root, f"leaf {h.path(2, leaf)} is closest in hue to another root"


def test_resolve_level_accepts_names_and_negative_indices() -> None:
    h = toy_hierarchy()
    assert F.resolve_level(h, "family") == 1 and F.resolve_level(h, -1) == 2
    with pytest.raises(ValueError, match="unknown level 'genus'"):
        F.resolve_level(h, "genus")
    with pytest.raises(ValueError, match="out of range"):
        F.resolve_level(h, 3)
    with pytest.raises(TypeError):
        F.resolve_level(h, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["uint8", "float", "pil", "callable"])
def test_thumbnails_are_png_data_uris_of_the_right_size(kind: str) -> None:
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (3, 20, 10), dtype=np.uint8)
    images = {
        "uint8": arrays,
        "float": arrays / 255.0,
        "pil": [Image.fromarray(a) for a in arrays],
        "callable": lambda i: Image.fromarray(arrays[i]),
    }[kind]
    uris = F.thumbnail_uris(images, 3, size=8)
    for uri in uris:
        assert uri.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert image.size == (4, 8)  # aspect ratio kept, longest side 8
    with pytest.raises(ValueError, match="2 images for 3 points"):
        F.thumbnail_uris(arrays[:2], 3)


# --------------------------------------------------------------------------- scatter plots
@pytest.mark.parametrize("level", [0, 1, "species"])
def test_scatter_by_level_has_one_trace_per_present_node(data, level) -> None:
    emb, labels, coords, h = data
    lv = F.resolve_level(h, level)
    fig = F.scatter_by_level(coords, labels, h, level)
    present = np.unique(labels[:, lv])
    assert [t.name for t in fig.data] == [h.nodes(lv)[i] for i in present]
    colors = F.level_colors(h, lv)
    paths = F.label_paths(labels, h)
    seen: set[int] = set()
    for trace, node in zip(fig.data, present):
        members = np.flatnonzero(labels[:, lv] == node)
        assert _points(trace) == set(members.tolist())
        assert trace.marker.color == colors[node]
        np.testing.assert_allclose(np.column_stack([trace.x, trace.y]), coords[members], rtol=1e-6)
        assert list(trace.hovertext) == list(paths[members])
        seen |= _points(trace)
    assert seen == set(range(len(labels)))
    assert fig.layout.meta is None  # no thumbnails, no hover script


def test_scatter_unknown_labels_are_grey(data) -> None:
    _, labels, coords, h = data
    labels = labels.copy()
    labels[:5, 1:] = -1
    fig = F.scatter_by_level(coords, labels, h, 2)
    unknown = fig.data[-1]
    assert unknown.name == "(unknown)" and unknown.marker.color == F.UNKNOWN_COLOR
    assert _points(unknown) == set(range(5))


def test_scatter_with_many_classes_uses_one_trace(data) -> None:
    _, labels, coords, h = data
    fig = F.scatter_by_level(coords, labels, h, 2, max_legend_classes=3)
    assert len(fig.data) == 1 and fig.data[0].showlegend is False
    colors = np.asarray(F.level_colors(h, 2))
    assert list(fig.data[0].marker.color) == list(colors[labels[:, 2]])


def test_scatter_with_images_carries_thumbnails(data) -> None:
    _, labels, coords, h = data
    images = np.zeros((len(labels), 6, 6), dtype=np.uint8)
    fig = F.scatter_by_level(coords, labels, h, 0, images=images)
    assert fig.layout.meta == {"hcl_thumbnails": True}
    assert all(str(c[1]).startswith("data:image/png") for t in fig.data for c in t.customdata)


def test_level_dropdown_shows_each_level_exactly_once(data) -> None:
    _, labels, coords, h = data
    fig = F.scatter_with_level_dropdown(coords, labels, h, level="family")
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == LEVEL_NAMES
    assert fig.layout.updatemenus[0].active == 1
    assert [t.visible for t in fig.data] == list(buttons[1].args[0]["visible"])
    for level, button in enumerate(buttons):
        visible = [t for t, v in zip(fig.data, button.args[0]["visible"]) if v]
        assert [t.name for t in visible] == [h.nodes(level)[i] for i in np.unique(labels[:, level])]
        counts = np.bincount([p for t in visible for p in _points(t)], minlength=len(labels))
        np.testing.assert_array_equal(counts, 1)
        assert button.args[1] == {"legend.title.text": LEVEL_NAMES[level]}


def test_levels_grid_labels_nodes_at_their_median(data) -> None:
    _, labels, coords, h = data
    fig = F.scatter_levels_grid(coords, labels, h, levels=[0, "species"])
    assert len(fig.data) == 2 and all(len(t.x) == len(labels) for t in fig.data)
    texts = [a.text for a in fig.layout.annotations]
    assert texts[:2] == ["coloured by kingdom", "coloured by species"]
    root_b = h.index(0, "B")
    (ann,) = [a for a in fig.layout.annotations if a.text == "B" and a.xref == "x"]
    np.testing.assert_allclose([ann.x, ann.y], np.median(coords[labels[:, 0] == root_b], axis=0), rtol=1e-5)
    leaf_names = {a.text for a in fig.layout.annotations if a.xref == "x2"}
    assert leaf_names == {h.nodes(2)[i] for i in np.unique(labels[:, 2])}
    many = F.scatter_levels_grid(coords, labels, h, levels=[2], max_labels=3)
    assert [a.text for a in many.layout.annotations] == ["coloured by species"]


def test_levels_grid_moves_labels_that_would_cover_each_other(data) -> None:
    _, labels, coords, h = data
    coords = np.zeros_like(coords)  # every node's median on one spot, in the middle of the plot
    coords[0], coords[1] = (1.0, 1.0), (-1.0, -1.0)
    fig = F.scatter_levels_grid(coords, labels, h, levels=["species"], panel_width=400)
    labels_drawn = [a for a in fig.layout.annotations if a.xref == "x"]
    assert len(labels_drawn) == len(np.unique(labels[:, 2])) > 1
    spots = {(a.ax if a.showarrow else 0.0, a.ay if a.showarrow else 0.0) for a in labels_drawn}
    assert len(spots) == len(labels_drawn)  # each at its own place, with a line to the median
    assert sum(not a.showarrow for a in labels_drawn) == 1  # the largest node stays on its median
    assert fig.layout.width == 400 + 40 and fig.layout.height == 480
    assert F.scatter_levels_grid(coords, labels, h).layout.width is None  # the container's width


def test_scatter_rejects_mismatched_inputs(data) -> None:
    _, labels, coords, h = data
    with pytest.raises(ValueError, match="label rows for"):
        F.scatter_by_level(coords[:-1], labels, h)
    with pytest.raises(ValueError, match=r"coords must have shape \(N, 2\)"):
        F.scatter_by_level(np.zeros((len(labels), 3)), labels, h)
    bad = labels.copy()
    bad[0, 2] = h.num_nodes(2)
    with pytest.raises(ValueError, match="out of range"):
        F.scatter_by_level(coords, bad, h)


# --------------------------------------------------------------------------- hierarchy preservation
def test_distance_vs_tree_distance_matches_a_loop_oracle() -> None:
    emb, labels, h = toy_data(14, seed=2)
    fig = F.distance_vs_tree_distance(emb, labels, h)
    expected: dict[int, list[float]] = {}
    for i, j in combinations(range(len(emb)), 2):
        d_tree = h.tree_distance(labels[i].tolist(), labels[j].tolist())
        cos = emb[i] @ emb[j] / np.linalg.norm(emb[i]) / np.linalg.norm(emb[j])
        expected.setdefault(d_tree, []).append(1.0 - cos)
    assert [int(t.name) for t in fig.data] == sorted(expected)
    for trace in fig.data:
        np.testing.assert_allclose(sorted(trace.y), sorted(expected[int(trace.name)]), atol=1e-5)
    assert fig.layout.meta["pairs"] == 14 * 13 // 2


def test_distance_vs_tree_distance_rank_correlation_tracks_structure() -> None:
    emb, labels, h = toy_data(200, seed=1)
    good = F.distance_vs_tree_distance(emb, labels, h, max_pairs=3000, metric="euclidean")
    shuffled = F.distance_vs_tree_distance(emb, labels[np.random.default_rng(0).permutation(200)], h, max_pairs=3000)
    assert good.layout.meta["pairs"] == 3000
    assert good.layout.meta["spearman"] > 0.6
    assert abs(shuffled.layout.meta["spearman"]) < 0.15


def test_class_similarity_heatmap_matches_class_means_in_tree_order() -> None:
    emb, labels, h = toy_data(80, seed=4)
    fig = F.class_similarity_heatmap(emb, labels, h, "species")
    present = np.unique(labels[:, 2])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    means = np.stack([unit[labels[:, 2] == c].mean(0) for c in present])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), means @ means.T, atol=1e-6)
    assert list(fig.data[0].x) == [h.nodes(2)[c] for c in present] == sorted(h.nodes(2)[c] for c in present)
    ancestors = h.node_labels(2).numpy()[present]
    boundaries = sum(int((np.diff(ancestors[:, c]) != 0).sum()) for c in range(2))
    assert len(fig.layout.shapes) == 2 * boundaries
    assert F.class_similarity_heatmap(emb, labels, h, 0).layout.shapes == ()


def test_preservation_plots_reject_degenerate_input() -> None:
    emb, labels, h = toy_data(10)
    emb[3] = 0.0
    with pytest.raises(ValueError, match="row 3 is all zeros"):
        F.class_similarity_heatmap(emb, labels, h)
    with pytest.raises(ValueError, match="at least 2 samples"):
        F.distance_vs_tree_distance(emb[:1], labels[:1], h)
    with pytest.raises(ValueError, match="metric must be"):
        F.distance_vs_tree_distance(emb, labels, h, metric="l1")


# --------------------------------------------------------------------------- metrics and training
def test_per_level_metric_bars_compare_runs() -> None:
    results = {
        "HiMulConE": {"kingdom": {"map@r": 0.9, "precision@1": 0.95}, "species": {"map@r": 0.4, "precision@1": 0.6}},
        "SupCon": {"kingdom": {"map@r": 0.7, "precision@1": 0.9}, "species": {"map@r": 0.5, "precision@1": 0.65}},
    }
    fig = F.per_level_metric_bars(results, ["map@r", "precision@1"])
    assert [(t.name, t.xaxis) for t in fig.data] == [
        ("HiMulConE", "x"),
        ("HiMulConE", "x2"),
        ("SupCon", "x"),
        ("SupCon", "x2"),
    ]
    assert list(fig.data[2].y) == [0.7, 0.5] and list(fig.data[1].y) == [0.95, 0.6]
    assert [t.showlegend for t in fig.data] == [True, False, True, False]
    with pytest.raises(ValueError, match="run 'SupCon', level 'kingdom' has no metric 'recall@5'"):
        F.per_level_metric_bars({"SupCon": results["SupCon"]}, "recall@5")
    with pytest.raises(ValueError, match="empty"):
        F.per_level_metric_bars({})


def _ema_oracle(values: list[float], s: float) -> list[float]:
    out = []
    for k in range(len(values)):
        weights = [(1 - s) * s ** (k - i) for i in range(k + 1)]
        out.append(sum(w * v for w, v in zip(weights, values[: k + 1])) / sum(weights))
    return out


def test_training_curves_from_a_run_directory(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run", epochs=3)
    records = read_metrics_log(run)
    fig = F.training_curves(run, smoothing=0.5)
    train = [r for r in records if r["kind"] == "train"]
    (loss,) = [t for t in fig.data if t.name == "loss"]
    np.testing.assert_allclose(loss.y, _ema_oracle([r["loss"] for r in train], 0.5))
    assert list(loss.x) == [r["step"] for r in train]
    species = next(t for t in fig.data if t.name == "species")  # level names from hierarchy.json
    assert list(species.x) == [0, 1, 2] and species.xaxis == "x2"
    np.testing.assert_allclose(species.y, [0.2, 0.3, 0.4])
    (cpcc,) = [t for t in fig.data if t.name == "CPCC"]
    assert cpcc.xaxis == "x3" and list(cpcc.y) == [0.0, 0.2, 0.4]
    assert sum(1 for t in fig.data if str(t.name).startswith("loss ")) == 3


def test_training_curves_overlay_runs_and_accept_records(tmp_path: Path) -> None:
    a = write_fake_run(tmp_path / "a", seed=0)
    records = read_metrics_log(write_fake_run(tmp_path / "b", seed=1))
    fig = F.training_curves({"HiMulConE": a, "SupCon": records}, smoothing=0.0, metric="r_precision")
    names = {t.name for t in fig.data}
    assert {"HiMulConE · loss", "SupCon · loss", "HiMulConE · kingdom", "SupCon · CPCC"} <= names
    (raw,) = [t for t in fig.data if t.name == "SupCon · loss"]
    assert list(raw.y) == [r["loss"] for r in records if r["kind"] == "train"]
    with pytest.raises(ValueError, match="smoothing"):
        F.training_curves(a, smoothing=1.0)


def test_training_curves_show_a_run_that_logged_one_step(tmp_path: Path) -> None:
    """A line through a single point draws nothing: a run with one logged step gets a marker."""
    records = read_metrics_log(write_fake_run(tmp_path / "a"))
    first = next(r for r in records if r["kind"] == "train")
    fig = F.training_curves({"short": [first], "long": records}, smoothing=0.5)
    assert {t.name: t.mode for t in fig.data if str(t.name).endswith("· loss")} == {
        "short · loss": "markers",
        "long · loss": "lines",
    }


def _one_evaluation(records: list[dict]) -> list[dict]:
    """The log of a run evaluated once, after its last epoch."""
    evals = [r for r in records if r["kind"] == "eval"]
    return [r for r in records if r["kind"] == "train"] + evals[-1:]


def test_each_run_has_its_loss_on_its_own_labelled_axis(tmp_path: Path) -> None:
    a = read_metrics_log(write_fake_run(tmp_path / "a", seed=0))
    b = [
        dict(r, loss=r["loss"] / 4) if r["kind"] == "train" else r
        for r in read_metrics_log(write_fake_run(tmp_path / "b"))
    ]
    fig = F.training_curves({"HiMulConE": a, "SupCon": b}, smoothing=0.0)
    losses = {t.name: t for t in fig.data if str(t.name).endswith("· loss")}
    axes = {name: trace.yaxis for name, trace in losses.items()}
    assert len(set(axes.values())) == 2
    for name, axis in axes.items():
        layout_axis = fig.layout["yaxis" + axis[1:]]
        assert layout_axis.title.text == f"{name.split(' · ')[0]} loss"
    for trace in fig.data:
        if trace.yaxis is not None:
            assert fig.layout["yaxis" + trace.yaxis[1:]].title.text, f"{trace.name} is on an unlabelled axis"


def test_one_evaluation_is_drawn_as_bars_and_several_as_lines(tmp_path: Path) -> None:
    records = {name: read_metrics_log(write_fake_run(tmp_path / name, seed=s)) for s, name in enumerate(["A", "B"])}
    once = F.training_curves({n: _one_evaluation(r) for n, r in records.items()}, level_names=LEVEL_NAMES)
    bars = [t for t in once.data if t.type == "bar"]
    assert [t.name for t in bars] == ["A", "A · CPCC", "B", "B · CPCC"]
    assert list(bars[0].x) == LEVEL_NAMES
    np.testing.assert_allclose(bars[0].y, [0.5, 0.45, 0.4])  # map@r of the last epoch, per level
    assert list(bars[1].x) == ["A"] and list(bars[1].y) == [0.4]
    assert all(t.type == "scatter" for t in once.data if t not in bars)  # the losses
    assert "one evaluation" in once.layout.annotations[2].text
    several = F.training_curves(records, level_names=LEVEL_NAMES)
    assert not [t for t in several.data if t.type == "bar"]
    assert {t.name for t in several.data} >= {"A · kingdom", "B · CPCC"}


# --------------------------------------------------------------------------- files
def test_save_html_is_self_contained_and_atomic(tmp_path: Path, data) -> None:
    _, labels, coords, h = data
    path = F.save_html(F.scatter_by_level(coords, labels, h), tmp_path / "sub" / "fig.html")
    text = path.read_text()
    assert re.findall(r"<script\b[^>]*\bsrc=", text) == []  # nothing loaded from elsewhere
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js itself is inlined
    assert "hcl: thumbnail on hover" not in text
    assert sorted(p.name for p in path.parent.iterdir()) == ["fig.html"]
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o044  # readable by others, like open() makes it
    thumbs = F.save_html(
        F.scatter_by_level(coords, labels, h, images=np.zeros((len(labels), 4, 4), np.uint8)), tmp_path / "t.html"
    )
    assert "hcl: thumbnail on hover" in thumbs.read_text()
    with pytest.raises(TypeError, match="plotly figure"):
        F.save_html({"data": []}, tmp_path / "x.html")  # type: ignore[arg-type]


def test_read_metrics_log_skips_only_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n\n{"kind": "eval", "epoch": 0}\n{"kind": "tra')
    with pytest.warns(UserWarning, match="torn last line"):
        assert [r["kind"] for r in read_metrics_log(tmp_path)] == ["train", "eval"]
    path.write_text('{"kind": "train"}\nnot json\n{"kind": "eval"}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: malformed"):
        read_metrics_log(path)
    with pytest.raises(FileNotFoundError):
        read_metrics_log(tmp_path / "missing")


def test_load_embeddings_round_trip_and_errors(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run", n=30)
    loaded = load_embeddings(run)
    emb, labels, h = toy_data(30)
    np.testing.assert_array_equal(loaded.embeddings, emb)
    np.testing.assert_array_equal(loaded.labels, labels)
    np.testing.assert_array_equal(loaded.indices, np.arange(30) * 2)
    assert loaded.hierarchy == h and loaded.split == "test"
    with pytest.raises(FileNotFoundError, match=r"available splits: \['test'\]"):
        load_embeddings(run, "val")
    np.savez(run / "embeddings_val.npz", embeddings=emb[:3], labels=labels, hierarchy=np.array(json.dumps(h.to_dict())))
    with pytest.raises(ValueError, match="row counts differ"):
        load_embeddings(run, "val")
