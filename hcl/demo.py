"""``make demo``: HiMulConE against the SupCon baseline on Fashion-MNIST's 3-level hierarchy.

Both runs use the configs ``configs/fashion_mnist_himulcone.yaml`` and
``configs/fashion_mnist_supcon.yaml`` (same data, backbone, batches and budget; only the loss
differs), are evaluated per level on the test subset, and are summarised in
``<out>/metrics.json`` and ``<out>/report.html``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hcl.atomic import write_text_atomic
from hcl.train import evaluate_run, fit, load_config
from hcl.train.faults import check_output_dir

__all__ = ["DEMO_LOSSES", "find_configs_dir", "run_demo"]

DEMO_LOSSES = ("himulcone", "supcon")


def find_configs_dir() -> Path:
    """The repository's ``configs/`` folder (the demo runs from a checkout).

    Raises:
        FileNotFoundError: no ``configs/`` next to the installed package or in the working folder.
    """
    candidates = [Path(__file__).resolve().parents[1] / "configs", Path.cwd() / "configs"]
    for candidate in candidates:
        if (candidate / "fashion_mnist_himulcone.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "cannot find the demo configs (configs/fashion_mnist_himulcone.yaml) in "
        + " or ".join(str(c) for c in candidates)
        + "; run the demo from a checkout of the repository or pass --configs"
    )


def run_demo(
    out: str | Path,
    *,
    configs_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    report: bool = True,
    print_table: Callable[[dict[str, dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and compare the demo losses; write ``metrics.json`` and ``report.html``.

    Args:
        out: the demo folder; each loss trains into ``<out>/<loss>/`` (replacing earlier runs).
        configs_dir: where the demo configs are (default :func:`find_configs_dir`).
        overrides: ``key=value`` overrides applied to both configs (``output_dir`` is set here).
        report: write ``report.html`` with :func:`hcl.viz.write_report`.
        print_table: called with ``{loss: results}`` to print the per-level table.

    Returns:
        The content of ``metrics.json``.

    Raises:
        RuntimeError: the run was interrupted, or ``hcl.viz.write_report`` is unavailable
            (``metrics.json`` and the run directories are written before the report).
    """
    out = Path(out)
    configs_dir = Path(configs_dir) if configs_dir is not None else find_configs_dir()
    check_output_dir(out)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    run_dirs: dict[str, Path] = {}
    for loss in DEMO_LOSSES:
        cfg = load_config(configs_dir / f"fashion_mnist_{loss}.yaml", [*overrides, f"output_dir={out / loss}"])
        print(f"== training {loss} ({cfg.backbone}, {cfg.train_subset or 'all'} images, {cfg.epochs} epochs) "
              f"into {cfg.output_dir}", file=sys.stderr, flush=True)
        run_started = time.perf_counter()
        result = fit(cfg, overwrite=True)
        if result.interrupted:
            raise RuntimeError(f"the demo was interrupted during {loss}; rerun `make demo` to start again")
        outcome = result.results if result.results is not None else evaluate_run(cfg.output_dir, cfg=cfg)
        seconds[loss] = time.perf_counter() - run_started
        results[loss] = outcome
        run_dirs[loss] = Path(cfg.output_dir)

    summary = _summary(results, run_dirs, seconds, time.perf_counter() - started)
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    if print_table is not None:
        print_table(results)
    print(f"wrote {out / 'metrics.json'}", file=sys.stderr)
    if report:
        try:
            from hcl.viz import write_report
        except (ImportError, AttributeError) as error:
            raise RuntimeError(
                f"hcl.viz.write_report is not available ({error}); the runs and {out / 'metrics.json'} are written, "
                "report.html is not"
            ) from error
        path = write_report(
            {loss: run_dirs[loss] for loss in DEMO_LOSSES},
            out / "report.html",
            title="hcl demo: HiMulConE vs SupCon on Fashion-MNIST (3 levels)",
        )
        print(f"wrote {path}", file=sys.stderr)
    summary["seconds_total"] = time.perf_counter() - started
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    print(f"demo finished in {summary['seconds_total']:.0f} s", file=sys.stderr)
    return summary


def _summary(
    results: dict[str, dict[str, Any]], run_dirs: dict[str, Path], seconds: dict[str, float], total: float
) -> dict[str, Any]:
    """The content of ``metrics.json``: per run, its folder, time and metrics keyed by level name."""
    level_names = results[DEMO_LOSSES[0]]["levels"]

    def by_name(per_level: dict[str, Any]) -> dict[str, Any]:
        return {level_names[int(level)]: value for level, value in per_level.items()}

    return {
        "dataset": "fashion_mnist",
        "levels": level_names,
        "seconds_total": total,
        "runs": {
            loss: {
                "run_dir": str(run_dirs[loss]),
                "train_and_eval_seconds": seconds[loss],
                "cpcc": results[loss]["cpcc"],
                "retrieval": by_name(results[loss]["retrieval"]),
                "knn_accuracy": by_name(results[loss]["knn_accuracy"]),
            }
            for loss in DEMO_LOSSES
        },
    }
