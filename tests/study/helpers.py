"""Shared pieces of the study tests: the FAST study config and its overrides, and a fabricated
study.json. Imported as ``study.helpers`` (tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

from hcl.study import aggregate, cell_rows

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = REPO / "configs" / "study_fast.yaml"


def fast_overrides(output_dir: Path, *extra: str) -> list[str]:
    """Overrides of configs/study_fast.yaml into ``output_dir``, with both protocols."""
    return [f"output_dir={output_dir}", "protocols=[all, heldout]", *extra]


LEVELS = ["group", "category", "class"]
SEEDS = [0, 1, 2, 3, 4]
# Per seed: Deep helps CPCC (+0.05 +- noise), Flat hurts class MAP@R (-0.04 +- noise), everything else
# moves by noise only.
NOISE = [0.003, -0.002, 0.001, -0.004, 0.002]


def _metrics(variant: str, seed: int, protocol: str) -> dict:
    noise = NOISE[seed]
    cpcc = 0.70 + (0.05 if variant == "Deep" else 0.0) + (noise if variant != "Base" else -noise / 2)
    maps = [0.90 + noise / 3, 0.60 + noise, 0.40 + (-0.04 if variant == "Flat" else 0.0) + noise * (variant != "Base")]
    results = {
        "levels": LEVELS,
        "retrieval": {str(i): {"map@r": m, "precision@1": m + 0.2} for i, m in enumerate(maps)},
        "knn_accuracy": {str(i): m + 0.3 for i, m in enumerate(maps)},
        "cpcc": cpcc,
    }
    if protocol == "heldout":
        # Flat places the held-out classes 0.05 worse on every seed; the rest is noise
        results["heldout"] = {
            "map@r": {"2": 0.2 + noise - 0.05 * (variant == "Flat")},
            "seen_knn_accuracy": {"2": 0.8 + noise * (variant == "Deep")},
            "classes": ["P", "S"],
        }
    return results


def fabricated_study(tmp: Path) -> dict:
    """A study.json document (not written) of 3 variants x 5 seeds x 2 protocols, features only:
    Deep helps CPCC, Flat hurts class MAP@R, every other headline difference is noise or none."""
    config = {
        "base": {},
        "variants": {"Base": {}, "Deep": {}, "Flat": {}},
        "baseline": "Base",
        "seeds": SEEDS,
        "protocols": ["all", "heldout"],
        "heldout": {"classes": ["Pullover", "Sandal"], "count": 2, "seed": 0, "per_seed": False},
        "embeddings": ["features"],
        "workers": 4,
        "threads_per_worker": 2,
        "executor": "process",
        "submitit": {},
        "output_dir": str(tmp),
        "title": "A fabricated study",
    }
    cells = []
    for i, (seed, protocol, variant) in enumerate(
        (s, p, v) for s in SEEDS for p in config["protocols"] for v in config["variants"]
    ):
        env = {
            "hcl": "0.1.0",
            "git_commit": ("a" if i < 20 else "b") * 40,
            "git_dirty": i >= 20,
            "python": "3.11.7",
            "torch": "2.14.1",
            "machine": "x86_64",
            "cpus": 16,
            "gpu": None,
            "torch_threads": 2,
            "host": "node1",
        }
        cells.append(
            {
                "cell": {"variant": variant, "protocol": protocol, "seed": seed},
                "key": f"{variant}/{protocol}/seed{seed}",
                "run_dir": str(tmp / "cells" / variant / protocol / f"seed{seed}"),
                "status": "ok",
                "error": None,
                "metrics": {"features": _metrics(variant, seed, protocol)},
                "absent": {},
                "timing": {"train_s": 50.0, "eval_s": 10.0, "total_s": 60.0 + i},
                "started": f"2026-01-01T10:{i:02d}:00",
                "finished": f"2026-01-01T10:{i:02d}:30",
                "environment": env,
            }
        )
    rows = [row for cell in cells for row in cell_rows(cell)]
    return {
        "schema": 1,
        "config": config,
        "command": "hcl study --config configs/x.yaml --workers 4",
        "environment": cells[0]["environment"],
        "counts": {"ok": len(cells), "failed": 0, "interrupted": 0, "pending": 0},
        "complete": True,
        "cells": cells,
        **aggregate(rows, "Base"),
    }
