"""The run directory: the files a training run leaves, and the one module that writes and reads them.

::

    <run_dir>/config.json             the TrainConfig, a JSON object (indent 2)
    <run_dir>/hierarchy.json          the label hierarchy (:meth:`hcl.Hierarchy.to_json`)
    <run_dir>/checkpoint.pt           {model, optimizer, scaler, step, epoch, rng, config, ...}
    <run_dir>/checkpoint.prev.pt      the checkpoint before it, resumed from when the latest is damaged
    <run_dir>/metrics.jsonl           one JSON object a line: {"kind": "train", ...}, {"kind": "eval", ...}
    <run_dir>/results.json            the final evaluation, a JSON object (indent 2)
    <run_dir>/embeddings_<split>.npz  embeddings, labels, hierarchy (its JSON string), indices
    <run_dir>/projections/<method>-<key>.npy  a cached 2-D projection (N, 2) float32 (safe to delete)

``hcl.train`` writes them, ``hcl.viz``, the explorer and the command line read them. Every whole
file is written atomically (:mod:`hcl.atomic`), so readers and crashes never see half a file;
``metrics.jsonl`` grows a line at a time, so a crash can tear its last line, which readers skip.
The checkpoint's own format belongs to :mod:`hcl.train.checkpoint`; only the names are kept here.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hcl.atomic import atomic_write, write_text_atomic
from hcl.hierarchy import Hierarchy

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "HIERARCHY_FILE",
    "METRICS_FILE",
    "PREVIOUS_CHECKPOINT_FILE",
    "PROJECTIONS_DIR",
    "RESULTS_FILE",
    "RunEmbeddings",
    "append_metrics",
    "clear_evaluation",
    "embedding_splits",
    "embeddings_path",
    "load_embeddings",
    "load_projection",
    "projection_path",
    "read_config",
    "read_hierarchy",
    "read_metrics_log",
    "read_results",
    "run_files",
    "save_embeddings",
    "save_projection",
    "start_metrics_log",
    "truncate_metrics_log",
    "write_config",
    "write_hierarchy",
    "write_results",
]

CONFIG_FILE = "config.json"
HIERARCHY_FILE = "hierarchy.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PROJECTIONS_DIR = "projections"

PathLike = str | os.PathLike[str]


def run_files(run_dir: PathLike) -> list[Path]:
    """The files of a run that ``run_dir`` holds (those listed above), sorted; [] for no run at all."""
    run_dir = Path(run_dir)
    names = (CONFIG_FILE, HIERARCHY_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, METRICS_FILE, RESULTS_FILE)
    found = [run_dir / name for name in names if (run_dir / name).exists()]
    return sorted(found + [embeddings_path(run_dir, split) for split in embedding_splits(run_dir)])


def write_config(run_dir: PathLike, config: Mapping[str, Any]) -> Path:
    """Write the run's config (``TrainConfig.to_dict()``) to ``config.json``; returns the path."""
    return write_text_atomic(Path(run_dir) / CONFIG_FILE, json.dumps(dict(config), indent=2) + "\n")


def read_config(run_dir: PathLike) -> dict[str, Any]:
    """The run's ``config.json`` as a dict (unvalidated: ``TrainConfig.from_dict`` checks the keys).

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.json`` (it is not a run directory).
        ValueError: the file is not a JSON object (named).
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {path} does not exist")
    return _read_json_object(path, "config")


def write_hierarchy(run_dir: PathLike, hierarchy: Hierarchy) -> Path:
    """Write the run's label hierarchy to ``hierarchy.json``; returns the path."""
    path = Path(run_dir) / HIERARCHY_FILE
    hierarchy.to_json(path)
    return path


def read_hierarchy(run_dir: PathLike) -> Hierarchy:
    """The run's ``hierarchy.json``.

    Raises:
        FileNotFoundError: the run has none.
        ValueError: the file is malformed (named).
    """
    path = Path(run_dir) / HIERARCHY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {HIERARCHY_FILE}")
    return Hierarchy.from_json(path)


def start_metrics_log(run_dir: PathLike) -> Path:
    """Create an empty ``metrics.jsonl`` (a fresh run), replacing an earlier run's; returns the path."""
    path = Path(run_dir) / METRICS_FILE
    path.write_text("")
    return path


def append_metrics(run_dir: PathLike, record: Mapping[str, Any]) -> None:
    """Append one record to ``metrics.jsonl`` as a line of JSON."""
    with open(Path(run_dir) / METRICS_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_metrics_log(run_dir: PathLike, last_step: int) -> None:
    """Drop the records written after ``last_step``, the step a run resumes from (they will be redone).

    A torn last line (what a crash mid-append leaves) is dropped too. The file is rewritten
    atomically: a kill during the rewrite keeps every line it had.

    Raises:
        ValueError: the log is not UTF-8 text, or a line before the last is not a JSON object with
            a numeric ``step`` (named with its line); the file is left as it was.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for number, line, record in _metrics_lines(path):
        step = record.get("step", 0)
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            raise ValueError(f"{path}:{number}: malformed metrics record ('step' must be a number, got {step!r})")
        if step <= last_step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def read_metrics_log(path: PathLike) -> list[dict[str, Any]]:
    """Read a run's ``metrics.jsonl`` (or the run directory holding it) into a list of records.

    A malformed *last* line is what a crash mid-write leaves: it is skipped with a warning. A
    malformed line anywhere else raises ValueError naming the file and line number.

    Raises:
        FileNotFoundError: there is no log at ``path``.
        ValueError: the log is not UTF-8 text, or a line before the last is not a JSON object.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}")
    return [record for _, _, record in _metrics_lines(path)]


def _metrics_lines(path: Path) -> list[tuple[int, str, dict[str, Any]]]:
    """``(line number, line, record)`` of every record of the log ``path`` (see :func:`read_metrics_log`)."""
    data = path.read_bytes()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except ValueError as err:
            if number == last:
                warnings.warn(f"{path}:{number + 1}: skipping a torn last line ({err})", stacklevel=3)
                continue
            raise ValueError(f"{path}:{number + 1}: malformed metrics record ({err})") from None
        records.append((number + 1, line, record))
    return records


def write_results(run_dir: PathLike, results: Mapping[str, Any]) -> Path:
    """Write the final evaluation to ``results.json``; returns the path."""
    return write_text_atomic(Path(run_dir) / RESULTS_FILE, json.dumps(dict(results), indent=2) + "\n")


def read_results(run_dir: PathLike) -> dict[str, Any]:
    """A run's ``results.json`` as a dict ({} when the run has none yet).

    Raises:
        ValueError: the file is not a JSON object (named).
    """
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return {}
    return _read_json_object(path, "results")


def clear_evaluation(run_dir: PathLike) -> None:
    """Remove ``results.json``, every ``embeddings_<split>.npz`` and the cached projections: an
    earlier run's, stale for a fresh one."""
    run_dir = Path(run_dir)
    (run_dir / RESULTS_FILE).unlink(missing_ok=True)
    for split in embedding_splits(run_dir):
        embeddings_path(run_dir, split).unlink(missing_ok=True)
    for path in (run_dir / PROJECTIONS_DIR).glob("*.npy"):
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunEmbeddings:
    """Embeddings of one split of a run, with their labels and hierarchy.

    Shape:
        embeddings: (N, D) float32. labels: (N, L) int64. indices: (N,) int64, the rows'
        positions in the dataset split.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    hierarchy: Hierarchy
    indices: np.ndarray
    split: str


def embeddings_path(run_dir: PathLike, split: str) -> Path:
    """Where a run keeps the embeddings of ``split``: ``<run_dir>/embeddings_<split>.npz``."""
    return Path(run_dir) / f"embeddings_{split}.npz"


def embedding_splits(run_dir: PathLike) -> list[str]:
    """The splits whose embeddings the run holds, sorted."""
    return sorted(p.name[len("embeddings_") : -len(".npz")] for p in Path(run_dir).glob("embeddings_*.npz"))


def save_embeddings(
    path: PathLike,
    embeddings: np.ndarray,
    labels: np.ndarray,
    hierarchy: Hierarchy,
    indices: np.ndarray | None = None,
) -> Path:
    """Write ``embeddings``, ``labels``, ``hierarchy`` (its JSON string) and ``indices`` to .npz.

    In a run directory the file is :func:`embeddings_path`; any other path works too (``.npz`` is
    appended when missing, as ``numpy.savez`` does). Written atomically; returns the path.

    Shape:
        embeddings: (N, D), stored float32; labels: (N, L), stored int64; indices: (N,), default
        ``arange(N)``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} label rows")
    if indices is None:
        indices = np.arange(len(embeddings))
    buffer = io.BytesIO()
    np.savez(
        buffer,
        embeddings=np.asarray(embeddings, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        hierarchy=np.array(json.dumps(hierarchy.to_dict())),
        indices=np.asarray(indices, dtype=np.int64),
    )
    return atomic_write(path, buffer.getvalue())


def load_embeddings(run_dir: PathLike, split: str | None = "test") -> RunEmbeddings:
    """Load ``embeddings_<split>.npz`` of a run.

    Files are read with ``allow_pickle=False``. A file without a ``hierarchy`` entry takes the
    run's ``hierarchy.json``; one without ``indices`` numbers its rows ``0..N-1``.

    Args:
        run_dir: the run directory.
        split: which split; ``None`` takes ``test`` if present, else the first file found.

    Raises:
        FileNotFoundError: the run has no embeddings for that split (the available ones are named).
        ValueError: the file is unreadable or inconsistent (row counts, or labels invalid in its
            hierarchy).
    """
    run_dir = Path(run_dir)
    available = embedding_splits(run_dir)
    if split is None:
        if not available:
            raise FileNotFoundError(f"{run_dir} has no embeddings_<split>.npz files")
        split = "test" if "test" in available else available[0]
    path = embeddings_path(run_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (available splits: {available or 'none'})")
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {name: data[name] for name in data.files}
    except Exception as error:  # damaged, not an npz, or object arrays (never unpickled)
        raise ValueError(f"cannot read embeddings file {path}: {error}") from error
    missing = {"embeddings", "labels"} - set(stored)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)} (has {sorted(stored)})")
    embeddings = np.asarray(stored["embeddings"], dtype=np.float32)
    labels = np.asarray(stored["labels"], dtype=np.int64)
    indices = np.asarray(stored["indices"], dtype=np.int64) if "indices" in stored else np.arange(len(labels))
    if "hierarchy" in stored:
        hierarchy = Hierarchy.from_dict(json.loads(str(stored["hierarchy"])), source=str(path))
    elif (run_dir / HIERARCHY_FILE).is_file():
        hierarchy = read_hierarchy(run_dir)
    else:
        raise ValueError(f"{path} has no 'hierarchy' entry and {run_dir} no {HIERARCHY_FILE}")
    if not len(embeddings) == len(labels) == len(indices):
        raise ValueError(
            f"{path}: row counts differ: embeddings {len(embeddings)}, labels {len(labels)}, indices {len(indices)}"
        )
    labels = hierarchy.validate(labels).numpy()
    return RunEmbeddings(embeddings, labels, hierarchy, indices, split)


def projection_path(run_dir: PathLike, method: str, key: str) -> Path:
    """Where a run caches a 2-D projection: ``<run_dir>/projections/<method>-<key>.npy``.

    ``key`` identifies the projected embeddings and the projection's parameters (see
    :func:`hcl.viz.project_2d`); it must be hexadecimal, so it cannot leave the folder.
    """
    if not (method.isidentifier() and key and all(c in "0123456789abcdef" for c in key)):
        raise ValueError(f"a projection needs a method name and a lowercase hexadecimal key, got {method!r}, {key!r}")
    return Path(run_dir) / PROJECTIONS_DIR / f"{method}-{key}.npy"


def save_projection(run_dir: PathLike, method: str, key: str, coords: np.ndarray) -> Path:
    """Cache ``coords`` at :func:`projection_path`, atomically; returns the path.

    Shape:
        coords: (N, 2), stored float32.
    """
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(coords, dtype=np.float32), allow_pickle=False)
    return atomic_write(projection_path(run_dir, method, key), buffer.getvalue())


def load_projection(run_dir: PathLike, method: str, key: str, num_points: int) -> np.ndarray | None:
    """The projection cached by :func:`save_projection`, or None when there is none or it is unusable.

    A damaged file, or one that is not ``(num_points, 2)`` finite values, counts as no cache (with
    a warning) and is computed again.

    Shape:
        Returns (num_points, 2) float32.
    """
    path = projection_path(run_dir, method, key)
    if not path.is_file():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
    except Exception as error:  # damaged, or not an npy file
        problem = str(error)
    else:
        if coords.shape == (num_points, 2) and coords.dtype.kind == "f" and np.isfinite(coords).all():
            return coords.astype(np.float32, copy=False)
        problem = f"{coords.dtype} {coords.shape}, expected ({num_points}, 2) finite floats"
    warnings.warn(f"ignoring the unusable cached projection {path} ({problem}); computing it again", stacklevel=2)
    return None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: malformed {what} JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
