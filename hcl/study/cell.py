"""One cell of a study, as a worker runs it: train, evaluate every embedding, write ``cell.json``.

The standard evaluation of each embedding is :func:`hcl.train.evaluate_embeddings` (the demo's
too); the cell adds its protocol's metrics to each.

:func:`run_cell` is what the executors call (in a spawned process, or a SLURM job through
submitit). It never raises for a failed cell: the error comes back in the record, so one bad cell
does not stop the others. A cell whose ``cell.json`` is missing is simply run again; its training
continues from its checkpoint through ``fit(cfg, resume=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcl.atomic import write_text_atomic
from hcl.study.grid import CELL_FILE, Cell
from hcl.study.protocols import EvaluationProtocol

__all__ = ["CellTask", "cpu_model", "provenance", "run_cell"]


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs for one cell (picklable)."""

    cell: Cell
    config: dict[str, Any]  # the cell's TrainConfig as a mapping
    protocol: EvaluationProtocol
    embeddings: tuple[str, ...]
    threads: int


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    """torch (and with it numba's loss kernels) and BLAS/OpenMP limited to ``count`` threads for
    the call, restored afterwards: in a worker process this is the worker's setting, and an
    in-process executor (submitit's "debug") leaves the caller's as it was."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(before)


def run_cell(task: CellTask) -> dict[str, Any]:
    """Train and evaluate one cell; on success write ``<run_dir>/cell.json`` atomically.

    The cell's output (fit's messages, warnings) goes to ``<run_dir>/cell.log``.

    Returns:
        ``{"cell", "status": "ok" | "failed" | "interrupted", "run_dir", "config", "metrics":
        {embedding: evaluation or None}, "absent": {embedding: reason}, "timing", "environment",
        "error"}``.
    """
    run_dir = Path(task.config["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "cell": dataclasses.asdict(task.cell),
        "key": task.cell.key,
        "run_dir": str(run_dir),
        "config": task.config,
        "started": _now(),
    }
    start = time.perf_counter()
    threads = None
    with open(run_dir / "cell.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            with _threads(task.threads):
                import torch

                threads = torch.get_num_threads()
                record.update(_train_and_evaluate(task))
        except Exception as error:  # noqa: BLE001 - a failed cell is recorded, the others go on
            traceback.print_exc()
            record.update(status="failed", error=f"{type(error).__name__}: {error}")
    record["timing"] = {**record.get("timing", {}), "total_s": time.perf_counter() - start}
    record["finished"] = _now()
    record["environment"] = {**provenance(), "torch_threads": threads, "host": platform.node(), "pid": os.getpid()}
    if record["status"] == "ok":
        write_text_atomic(run_dir / CELL_FILE, json.dumps(record, indent=1, allow_nan=True) + "\n")
    return record


def _train_and_evaluate(task: CellTask) -> dict[str, Any]:
    from hcl.train import TrainConfig, evaluate_embeddings, fit

    cfg = TrainConfig.from_dict(task.config)
    start = time.perf_counter()
    # The cell's folder is the study's: without a checkpoint to resume (killed before its first
    # one), what it holds is an unfinished start, which a fresh run replaces.
    result = fit(cfg, resume=True, overwrite=True)
    train_s = time.perf_counter() - start
    if result.interrupted:
        return {"status": "interrupted", "error": f"interrupted at step {result.step}; rerun the study to continue"}
    model = result.model
    device = next(model.parameters()).device
    start = time.perf_counter()
    evaluated = evaluate_embeddings(
        result.run_dir,
        embeddings=task.embeddings,
        cfg=cfg,
        model=model,
        step=result.step,
        fit_results=result.results,
        device=device,
    )
    metrics = evaluated["metrics"]
    for which, results in metrics.items():
        if results is not None:
            extra = task.protocol.evaluate(results)
            metrics[which] = {**results, task.protocol.name: extra} if extra else results
    eval_s = time.perf_counter() - start
    return {
        "status": "ok",
        "step": result.step,
        "metrics": metrics,
        "absent": evaluated["absent"],
        "timing": {"train_s": train_s, "eval_s": eval_s},
    }


def cpu_model() -> str | None:
    """The CPU's model name (Linux's ``/proc/cpuinfo``, else :func:`platform.processor`), None if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def provenance() -> dict[str, Any]:
    """hcl's version, the git commit of its checkout and whether hcl/ has uncommitted changes
    there (both None outside a checkout), python's and torch's versions, and the machine: its
    architecture, CPU count and first CUDA device (None without one)."""
    import torch

    import hcl

    package = Path(hcl.__file__).resolve().parent
    commit = None
    try:
        lines = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        lines = []
    # Only hcl's own checkout counts, not a repository that merely holds an installed copy.
    dirty = None
    if len(lines) == 2 and Path(lines[0]).resolve() / "hcl" == package:
        commit = lines[1]
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "hcl"],
            cwd=lines[0],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "hcl": hcl.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "gpu": gpu,
    }


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
