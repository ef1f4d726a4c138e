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
