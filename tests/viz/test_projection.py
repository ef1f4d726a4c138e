"""project_2d: PCA against exact geometry, UMAP/t-SNE on separated clusters, the cache, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from viz.fake_runs import toy_data

from hcl.viz import projection
from hcl.viz.projection import clear_projection_cache, project_2d


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    clear_projection_cache()


def _pairwise(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)


def test_pca_preserves_all_distances_of_planar_data() -> None:
    rng = np.random.default_rng(1)
    plane = rng.normal(size=(40, 2)) * [5.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(7, 2)))
    data = plane @ basis.T + rng.normal(size=7)
    coords = project_2d(data, "pca")
    assert coords.shape == (40, 2) and coords.dtype == np.float32
    np.testing.assert_allclose(_pairwise(coords), _pairwise(plane), atol=1e-4)
    # The first component carries the larger variance.
    assert coords[:, 0].var() > coords[:, 1].var()


def test_pca_is_deterministic_and_sign_fixed() -> None:
    emb, _, _ = toy_data(50)
    a = project_2d(emb, "pca")
    clear_projection_cache()
    b = project_2d(emb[::-1].copy(), "pca")[::-1]
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(("shape", "rank"), [((1, 4), 0), ((6, 1), 1)])
def test_pca_pads_missing_components_with_zeros(shape: tuple[int, int], rank: int) -> None:
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    coords = project_2d(data, "pca")
    assert coords.shape == (shape[0], 2)
    np.testing.assert_array_equal(coords[:, rank:], 0.0)


def test_torch_input_matches_numpy() -> None:
    emb, _, _ = toy_data(30)
    np.testing.assert_allclose(project_2d(torch.from_numpy(emb), "pca"), project_2d(emb, "pca"))


def test_cache_returns_copies_and_skips_recomputation(monkeypatch: pytest.MonkeyPatch) -> None:
    emb, _, _ = toy_data(30)
    calls = []
    real = projection._pca
    monkeypatch.setattr(projection, "_pca", lambda a: calls.append(1) or real(a))
    first = project_2d(emb, "pca")
    first[:] = 99.0  # mutating a result must not poison the cache
    second = project_2d(emb, "pca")
    assert len(calls) == 1
    assert not np.allclose(second, 99.0)
    emb2 = emb.copy()
    emb2[0, 0] += 1.0
    project_2d(emb2, "pca")
    assert len(calls) == 2
    clear_projection_cache()
    project_2d(emb, "pca")
    assert len(calls) == 3


def _nearest_neighbor_agreement(coords: np.ndarray, groups: np.ndarray) -> float:
    dist = _pairwise(coords)
    np.fill_diagonal(dist, np.inf)
    return float((groups[dist.argmin(axis=1)] == groups).mean())


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_nonlinear_methods_keep_clusters_and_are_seeded(method: str) -> None:
    emb, labels, _ = toy_data(90, seed=3)
    params = {"max_iter": 500} if method == "tsne" else {}  # half the default: keeps CI fast
    coords = project_2d(emb, method, seed=0, **params)
    assert coords.shape == (90, 2) and np.isfinite(coords).all()
    assert _nearest_neighbor_agreement(coords, labels[:, 0]) > 0.95
    clear_projection_cache()
    np.testing.assert_allclose(project_2d(emb, method, seed=0, **params), coords, atol=1e-5)


def test_nonlinear_method_parameters_reach_the_reducer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_tsne(array: np.ndarray, seed: int, params: dict) -> np.ndarray:
        seen.update(params, seed=seed)
        return np.zeros((len(array), 2))

    monkeypatch.setattr(projection, "_tsne", fake_tsne)
    emb, _, _ = toy_data(20)
    project_2d(emb, "tsne", seed=4, perplexity=7.0)
    assert seen == {"perplexity": 7.0, "seed": 4}
    # Different parameters are a different cache entry.
    project_2d(emb, "tsne", seed=4, perplexity=8.0)
    assert seen["perplexity"] == 8.0


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_too_few_points_fall_back_to_pca(method: str) -> None:
    data = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.warns(UserWarning, match="using PCA"):
        coords = project_2d(data, method)
    np.testing.assert_allclose(coords, project_2d(data, "pca"))


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "match"),
    [
        (np.zeros((5, 3)), {"method": "mds"}, ValueError, "method must be one of"),
        (np.zeros((5, 3)), {"method": "pca", "n_neighbors": 3}, ValueError, "PCA takes no parameters"),
        (np.zeros((0, 3)), {"method": "pca"}, ValueError, "empty"),
        (np.zeros(5), {"method": "pca"}, ValueError, r"shape \(N, D\)"),
        (np.array([["a", "b"]]), {"method": "pca"}, TypeError, "numeric"),
        (np.array([[0.0, 1.0], [np.nan, 1.0]]), {"method": "pca"}, ValueError, "row 1"),
    ],
)
def test_invalid_input_is_rejected(data: np.ndarray, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        project_2d(data, **kwargs)


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(projection, name)
    monkeypatch.setattr(projection, name, lambda *args: calls.append(1) or real(*args))
    return calls


def test_a_run_directory_keeps_projections_for_the_next_session(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    emb, _, _ = toy_data(30)
    calls = _counting(monkeypatch, "_pca")
    first = project_2d(emb, "pca", run_dir=tmp_path)
    (cached,) = (tmp_path / "projections").glob("pca-*.npy")
    clear_projection_cache()  # a new session: only the file remains
    np.testing.assert_array_equal(project_2d(emb, "pca", run_dir=tmp_path), first)
    assert len(calls) == 1
    # Other embeddings, method or parameters are other files.
    project_2d(emb[:20], "pca", run_dir=tmp_path)
    fake = lambda array, seed, params: np.zeros((len(array), 2))  # noqa: E731
    monkeypatch.setattr(projection, "_tsne", fake)
    project_2d(emb, "tsne", run_dir=tmp_path, perplexity=5.0)
    project_2d(emb, "tsne", run_dir=tmp_path, perplexity=6.0)
    project_2d(emb, "tsne", seed=1, run_dir=tmp_path, perplexity=6.0)
    assert len(calls) == 2 and len(list((tmp_path / "projections").glob("*.npy"))) == 5
    assert not list((tmp_path / "projections").glob(".*"))  # no temporary files left behind
    assert cached.exists()


def test_a_projection_computed_before_is_written_when_a_run_directory_is_given(tmp_path) -> None:
    emb, _, _ = toy_data(30)
    project_2d(emb, "pca")
    project_2d(emb, "pca", run_dir=tmp_path)
    assert len(list((tmp_path / "projections").glob("pca-*.npy"))) == 1


@pytest.mark.parametrize("damage", ["garbage", "wrong shape", "nan"])
def test_an_unusable_cache_file_is_computed_again(tmp_path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    emb, _, _ = toy_data(30)
    expected = project_2d(emb, "pca", run_dir=tmp_path)
    (path,) = (tmp_path / "projections").glob("pca-*.npy")
    if damage == "garbage":
        path.write_bytes(b"not an npy file")
    else:
        np.save(path, np.zeros((29, 2)) if damage == "wrong shape" else np.full((30, 2), np.nan))
    clear_projection_cache()
    calls = _counting(monkeypatch, "_pca")
    with pytest.warns(UserWarning, match="unusable cached projection"):
        again = project_2d(emb, "pca", run_dir=tmp_path)
    assert len(calls) == 1
    np.testing.assert_allclose(again, expected)


def test_a_read_only_run_directory_only_warns(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(projection.rundir, "save_projection", refuse)
    emb, _, _ = toy_data(30)
    with pytest.warns(UserWarning, match="cannot cache the pca projection"):
        coords = project_2d(emb, "pca", run_dir=tmp_path)
    assert coords.shape == (30, 2)


def test_umap_neighbours_are_exact_cosine_neighbours_with_the_point_first() -> None:
    emb, _, _ = toy_data(50, seed=2)
    indices, distances, index = projection._cosine_neighbors(emb, 6)
    unit = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    for i in range(len(emb)):
        dist = 1.0 - unit @ unit[i]
        dist[i] = -1.0  # the point itself comes first
        order = np.argsort(dist, kind="stable")[:6]
        assert set(indices[i]) == set(order) and indices[i, 0] == i
        np.testing.assert_allclose(distances[i], np.clip(np.sort(dist)[:6], 0, None), atol=1e-5)
    assert index is None and indices.shape == distances.shape == (50, 6)


def test_umap_gets_the_exact_neighbours_only_for_the_cosine_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    import umap

    seen: list[dict] = []

    class FakeUMAP:
        def __init__(self, **kwargs) -> None:
            seen.append(kwargs)

        def fit_transform(self, array: np.ndarray) -> np.ndarray:
            return np.zeros((len(array), 2))

    monkeypatch.setattr(umap, "UMAP", FakeUMAP)
    emb, _, _ = toy_data(30)
    project_2d(emb, "umap")
    project_2d(emb, "umap", metric="euclidean")
    assert seen[0]["precomputed_knn"][0].shape == (30, 15) and seen[0]["n_epochs"] == 200
    assert "precomputed_knn" not in seen[1]
