"""Reading what a training run leaves on disk, for plotting.

The run-directory contract (written by ``hcl.train``): ``metrics.jsonl`` (JSON lines with
``"kind": "train"`` and ``"kind": "eval"`` records), ``hierarchy.json``,
``embeddings_<split>.npz`` (``embeddings``, ``labels``, ``hierarchy`` as a JSON string,
``indices``) and ``results.json``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hcl.hierarchy import Hierarchy

__all__ = ["RunEmbeddings", "load_embeddings", "read_metrics_log", "read_results"]


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


def read_metrics_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a run's ``metrics.jsonl`` (or the run directory holding it) into a list of records.

    A malformed *last* line is what a crash mid-write leaves: it is skipped with a warning. A
    malformed line anywhere else raises ValueError naming the file and line number.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}")
    lines = path.read_text().splitlines()
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
                warnings.warn(f"{path}:{number + 1}: skipping a torn last line ({err})", stacklevel=2)
                continue
            raise ValueError(f"{path}:{number + 1}: malformed metrics record ({err})") from err
        records.append(record)
    return records


def read_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's ``results.json`` as a dict ({} when the run has none yet)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed results JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_embeddings(run_dir: str | os.PathLike[str], split: str | None = "test") -> RunEmbeddings:
    """Load ``embeddings_<split>.npz`` of a run.

    Args:
        run_dir: the run directory.
        split: which split; ``None`` takes ``test`` if present, else the first file found.

    Raises:
        FileNotFoundError: the run has no embeddings for that split (the available ones are named).
        ValueError: the file is inconsistent (row counts, or labels invalid in its hierarchy).
    """
    run_dir = Path(run_dir)
    available = sorted(p.name[len("embeddings_") : -len(".npz")] for p in run_dir.glob("embeddings_*.npz"))
    if split is None:
        if not available:
            raise FileNotFoundError(f"{run_dir} has no embeddings_<split>.npz files")
        split = "test" if "test" in available else available[0]
    path = run_dir / f"embeddings_{split}.npz"
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
    hierarchy_json = str(stored["hierarchy"]) if "hierarchy" in stored else None
    if hierarchy_json is not None:
        hierarchy = Hierarchy.from_dict(json.loads(hierarchy_json), source=str(path))
    elif (run_dir / "hierarchy.json").is_file():
        hierarchy = Hierarchy.from_json(run_dir / "hierarchy.json")
    else:
        raise ValueError(f"{path} has no 'hierarchy' entry and {run_dir} no hierarchy.json")
    if not len(embeddings) == len(labels) == len(indices):
        raise ValueError(
            f"{path}: row counts differ: embeddings {len(embeddings)}, labels {len(labels)}, indices {len(indices)}"
        )
    labels = hierarchy.validate(labels).numpy()
    return RunEmbeddings(embeddings, labels, hierarchy, indices, split)
