"""Small synthetic hierarchies, embeddings and run directories for the visualisation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hcl import Hierarchy

LEVEL_NAMES = ["kingdom", "family", "species"]


def toy_hierarchy() -> Hierarchy:
    """3 roots x 2 families x 2 species = 12 leaves, named like ``"B-1-0"``."""
    paths = [(a, f"{a}-{f}", f"{a}-{f}-{s}") for a in "ABC" for f in range(2) for s in range(2)]
    return Hierarchy.from_paths(paths, level_names=LEVEL_NAMES)


def toy_data(n: int = 120, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Hierarchy]:
    """Embeddings whose geometry follows the tree: root, family and species offsets add up.

    Shape:
        Returns embeddings (n, dim) float32 and labels (n, 3) int64.
    """
    h = toy_hierarchy()
    rng = np.random.default_rng(seed)
    leaves = h.node_labels(2).numpy()
    labels = leaves[rng.integers(0, len(leaves), n)]
    offsets = [rng.normal(size=(h.num_nodes(lv), dim)) * scale for lv, scale in enumerate((3.0, 1.5, 0.7))]
    emb = sum(offsets[lv][labels[:, lv]] for lv in range(3)) + rng.normal(size=(n, dim)) * 0.2
    return emb.astype(np.float32), labels.astype(np.int64), h


def write_fake_run(run_dir: Path, *, seed: int = 0, n: int = 120, epochs: int = 3, embeddings: bool = True) -> Path:
    """A run directory as ``hcl.train`` leaves it: config, hierarchy, log, results, embeddings."""
    run_dir.mkdir(parents=True, exist_ok=True)
    emb, labels, h = toy_data(n, seed=seed)
    h.to_json(run_dir / "hierarchy.json")
    (run_dir / "config.json").write_text(json.dumps({"loss": "himulcone", "seed": seed}))
    rng = np.random.default_rng(seed)
    lines = []
    step = 0
    for epoch in range(epochs):
        for _ in range(5):
            step += 1
            loss_levels = [float(4.0 / step + rng.random() * 0.1) for _ in range(3)]
            lines.append(
                {
                    "kind": "train",
                    "step": step,
                    "epoch": epoch,
                    "loss": sum(loss_levels),
                    "loss_levels": loss_levels,
                    "lr": 0.1,
                    "images_per_s": 1000.0,
                }
            )
        retrieval = {
            str(lv): {
                "precision@1": 0.5 + 0.1 * epoch,
                "recall@1": 0.5 + 0.1 * epoch,
                "r_precision": 0.4 + 0.1 * epoch,
                "map@r": 0.3 + 0.1 * epoch - 0.05 * lv,
                "num_queries": n,
            }
            for lv in range(3)
        }
        lines.append({"kind": "eval", "epoch": epoch, "step": step, "retrieval": retrieval, "cpcc": 0.2 * epoch})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    results = {
        "split": "test",
        "levels": LEVEL_NAMES,
        "retrieval": lines[-1]["retrieval"],
        "cpcc": 0.45,
        "knn_accuracy": {str(lv): 0.9 - 0.1 * lv for lv in range(3)},
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    if embeddings:
        np.savez(
            run_dir / "embeddings_test.npz",
            embeddings=emb,
            labels=labels,
            hierarchy=np.array(json.dumps(h.to_dict())),
            indices=np.arange(n) * 2,
        )
    return run_dir
