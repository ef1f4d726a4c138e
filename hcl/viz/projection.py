"""2-D projections of embeddings (UMAP, t-SNE, PCA), cached per (embedding, method, parameters).

The cache is in memory and, given a run directory, on disk there (:func:`hcl.rundir.save_projection`),
so a projection computed once is instant in the next session too.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np

from hcl import rundir
from hcl.extras import requires_extra

__all__ = ["METHOD_NAMES", "MIN_POINTS_NONLINEAR", "as_embedding_array", "clear_projection_cache", "project_2d"]

METHODS = ("umap", "tsne", "pca")
METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}
# UMAP and t-SNE need a neighbourhood; below this many points PCA is used instead.
MIN_POINTS_NONLINEAR = 5
_CACHE_SIZE = 16
_TSNE_THREADED_FROM = 5000
# Up to this many points UMAP gets exact cosine neighbours from hcl.metrics (blocked matrix
# products), which spares compiling umap-learn's own neighbour search on first use.
_UMAP_EXACT_NEIGHBORS_UP_TO = 20000
_cache: OrderedDict[str, np.ndarray] = OrderedDict()


def as_embedding_array(embeddings: Any, name: str = "embeddings") -> np.ndarray:
    """Validate embeddings (numpy or torch) and return a float32 (N, D) numpy array.

    Raises:
        TypeError: a non-numeric array.
        ValueError: not two-dimensional, or a non-finite value (the row is named).

    Shape:
        embeddings: (N, D). Returns (N, D) float32.
    """
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().cpu().numpy()
    array = np.asarray(embeddings)
    if array.dtype == object or array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {array.shape}")
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name} has a non-finite value in row {row}")
    return array


def project_2d(
    embeddings: Any,
    method: str = "umap",
    seed: int = 0,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    **params: Any,
) -> np.ndarray:
    """Project embeddings to 2-D with UMAP, t-SNE or PCA.

    Results are cached (the 16 most recent) per (embedding contents, method, seed, params), so a
    notebook or the explorer can ask again for free; each call returns a fresh copy. With
    ``run_dir`` they are also cached in that run directory (``projections/``, see
    :func:`hcl.rundir.projection_path`), under a key of the same four things.

    Degenerate cases: no points raises ValueError; with fewer than ``MIN_POINTS_NONLINEAR`` (5)
    points UMAP and t-SNE are undefined, so PCA is used (with a warning). PCA of a single point,
    or of data with rank < 2, pads the missing coordinates with zeros.

    Args:
        embeddings: numpy array or torch tensor.
        method: ``"umap"`` (umap-learn; defaults ``n_neighbors=15, min_dist=0.1,
            metric="cosine", n_epochs=200``, with exact cosine neighbours up to 20,000 points),
            ``"tsne"`` (scikit-learn; defaults ``perplexity=30`` clipped to ``(N - 1) / 3``,
            ``init="pca"``, ``metric="cosine"``) or ``"pca"`` (no parameters; components' signs
            fixed so the output is deterministic).
        seed: random state of UMAP / t-SNE.
        run_dir: a run directory to keep the result in (and to read it from next time).
        **params: passed to ``umap.UMAP`` or ``sklearn.manifold.TSNE``.

    Shape:
        embeddings: (N, D). Returns (N, 2) float32.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "pca" and params:
        raise ValueError(f"PCA takes no parameters, got {sorted(params)}")
    array = as_embedding_array(embeddings)
    if len(array) == 0:
        raise ValueError("cannot project an empty set of embeddings (N = 0)")
    settings = tuple(sorted((k, repr(v)) for k, v in params.items()))
    digest = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16)
    digest.update(repr((array.shape, method, int(seed), settings)).encode())
    key = digest.hexdigest()
    coords = _cache.get(key)
    if coords is None and run_dir is not None:
        coords = rundir.load_projection(run_dir, method, key, len(array))
    if coords is None:
        coords = _compute(array, method, seed, params)
    coords = np.ascontiguousarray(coords, dtype=np.float32)
    coords.setflags(write=False)
    if run_dir is not None and not rundir.projection_path(run_dir, method, key).is_file():
        try:
            rundir.save_projection(run_dir, method, key, coords)
        except OSError as error:  # e.g. a read-only run directory: the cache is only a convenience
            warnings.warn(f"cannot cache the {method} projection in {run_dir}: {error}", stacklevel=2)
    _cache[key] = coords
    _cache.move_to_end(key)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return coords.copy()


def _compute(array: np.ndarray, method: str, seed: int, params: dict[str, Any]) -> np.ndarray:
    if method != "pca" and len(array) < MIN_POINTS_NONLINEAR:
        warnings.warn(
            f"{method} needs at least {MIN_POINTS_NONLINEAR} points, got {len(array)}; using PCA",
            stacklevel=3,
        )
        return _pca(array)
    if method == "umap":
        return _umap(array, seed, params)
    if method == "tsne":
        return _tsne(array, seed, params)
    return _pca(array)


def clear_projection_cache() -> None:
    """Forget every cached projection."""
    _cache.clear()


def _pca(array: np.ndarray) -> np.ndarray:
    centred = array.astype(np.float64) - array.mean(axis=0, dtype=np.float64)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(s))
    coords = np.zeros((len(array), 2))
    coords[:, :k] = u[:, :k] * s[:k]
    # SVD signs are arbitrary: make each component's largest loading positive.
    for c in range(k):
        if vt[c, np.argmax(np.abs(vt[c]))] < 0:
            coords[:, c] = -coords[:, c]
    return coords


def _umap(array: np.ndarray, seed: int, params: dict[str, Any]) -> np.ndarray:
    with requires_extra("hcl.viz.project_2d(method='umap')"):
        import umap

    settings = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "n_epochs": 200} | params
    settings["n_neighbors"] = max(2, min(int(settings["n_neighbors"]), len(array) - 1))
    if settings["metric"] == "cosine" and len(array) <= _UMAP_EXACT_NEIGHBORS_UP_TO and "precomputed_knn" not in params:
        settings["precomputed_knn"] = _cosine_neighbors(array, settings["n_neighbors"])
    reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1, **settings)
    with warnings.catch_warnings():
        # umap-learn warns that a fixed random_state disables parallelism (that is the point), and
        # that precomputed neighbours leave it no index to transform new points with (never used).
        warnings.filterwarnings("ignore", message=".*random_state.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*knn_search_index.*", category=UserWarning)
        return reducer.fit_transform(array)


def _cosine_neighbors(array: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, None]:
    """Each point's ``k`` nearest by cosine distance, itself first: umap-learn's ``precomputed_knn``.

    Shape:
        array: (N, D). Returns (N, k) int64 indices and (N, k) float32 distances ``1 - cos``.
    """
    from hcl.metrics import nearest_neighbors

    sims, idx = nearest_neighbors(array, k - 1)
    rows = np.arange(len(array))[:, None]
    indices = np.concatenate([rows, idx.numpy()], axis=1)
    distances = np.concatenate([np.zeros_like(rows, dtype=np.float32), np.clip(1.0 - sims.numpy(), 0.0, 2.0)], axis=1)
    return indices, distances.astype(np.float32), None


def _tsne(array: np.ndarray, seed: int, params: dict[str, Any]) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    settings = {"perplexity": 30.0, "init": "pca", "metric": "cosine"} | params
    settings["perplexity"] = float(min(settings["perplexity"], max(1.0, (len(array) - 1) / 3)))
    reducer = TSNE(n_components=2, random_state=seed, **settings)
    if len(array) >= _TSNE_THREADED_FROM:
        return reducer.fit_transform(array)
    # Below a few thousand points each of t-SNE's 1000 OpenMP-parallel gradient steps is too
    # small to share out, and on a busy machine the threads mostly wait for each other (216
    # points: 36 s with the default threads, 10 s with one, on a loaded 2-core machine).
    with threadpool_limits(limits=1, user_api="openmp"):
        return reducer.fit_transform(array)
