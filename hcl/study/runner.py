"""Running a study: check it, skip finished cells, run the rest through an executor, aggregate.

Cells run through an existing executor rather than a scheduler of our own:
:class:`concurrent.futures.ProcessPoolExecutor` (spawned processes, each limited to
``threads_per_worker`` threads) by default, or `submitit <https://github.com/facebookincubator/submitit>`_
for SLURM (``executor: submitit``; ``pip install submitit``)::

    executor: submitit
    submitit: {cluster: null, slurm_partition: gpu, gpus_per_node: 1, cpus_per_task: 8,
               timeout_min: 120}

``cluster`` is passed to ``submitit.AutoExecutor`` (null = SLURM when available, else local
processes; "local" or "debug" for trying it out), every other key to its ``update_parameters``.
The cells are submitted as one job array; the study waits for them, so run it where it may keep
running (a login node's tmux). A killed study loses nothing: rerun it and it submits the cells
without ``cell.json`` again, which resume from their checkpoints.

The worker processes never outlive the study: each stops within a second of the study process
dying (even by SIGKILL), so that a rerun never trains a cell that an orphaned worker is still
training. A SIGTERM to the study is passed on to its workers as Ctrl-C; whether their cells then
stop at once is not yet reliable under load (SIGKILL is the tested way to stop a study).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hcl.atomic import write_text_atomic
from hcl.extras import requires_extra
from hcl.study.cell import CellTask, provenance
from hcl.study.config import StudyConfig, load_study_config
from hcl.study.executors import import_submitit, run_in_processes, run_with_submitit
from hcl.study.grid import CELL_FILE, Cell, StudyPlan, cell_dir, plan_study
from hcl.study.stats import aggregate, cell_rows
from hcl.train.config_io import upgrade_keys

__all__ = ["STUDY_FILE", "StudyCellError", "StudyResult", "read_study", "run_study", "write_study_json"]

STUDY_FILE = "study.json"
_SCHEMA = 1


@dataclass
class StudyResult:
    """What :func:`run_study` returns (and ``study.json`` holds).

    Attributes:
        output_dir: the study folder.
        records: one record per cell in grid order: status ``"ok"`` (finished now or before),
            ``"failed"`` (with ``error``), ``"interrupted"`` or ``"pending"`` (not run).
        summary, paired: the tables of :func:`hcl.study.stats.aggregate`.
        ran: the cells run by this call (the rest were skipped as finished, or not reached).
    """

    output_dir: Path
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]] = field(default_factory=list)
    paired: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The records of failed cells."""
        return [r for r in self.records if r["status"] == "failed"]


class StudyCellError(RuntimeError):
    """Some cells failed (or were interrupted on their own); the others ran and the study files were
    written. ``result`` holds the :class:`StudyResult`."""

    def __init__(self, message: str, result: StudyResult) -> None:
        super().__init__(message)
        self.result = result


def run_study(
    config: StudyConfig | str | Path,
    *,
    overrides: Iterable[str] = (),
    workers: int | None = None,
    progress: bool = True,
    report: bool = True,
) -> StudyResult:
    """Run every unfinished cell of a study, then write ``study.json`` and ``study.html``.

    Everything is checked before anything trains (:func:`hcl.study.plan_study`). A cell with a
    ``cell.json`` is finished and skipped; any other cell runs, its training resuming from a
    checkpoint it left. A progress bar counts the cells of the whole grid, with the time left
    estimated from the cells finished so far.

    Args:
        config: a :class:`StudyConfig` or the path of a study YAML.
        overrides: dotted ``key=value`` overrides (see :func:`hcl.study.load_study_config`); with
            a StudyConfig, applied to it.
        workers: cells run at once (overrides the config's ``workers``).
        progress: show the progress bar.
        report: write ``study.html`` (plotly) besides ``study.json``.

    Returns:
        The :class:`StudyResult`.

    Raises:
        ValueError / TypeError / FileNotFoundError: a bad config, named, before any training; a
            finished cell that was run with another config.
        ImportError: ``executor: submitit`` without submitit installed; ``report`` without the
            ``notebooks`` extra (plotly); both before any training.
        StudyCellError: some cells failed or were interrupted (after all others ran and the files
            were written); a rerun retries them.
        KeyboardInterrupt: Ctrl-C; the running cells checkpoint and ``study.json`` is written.
    """
    study = _resolve(config, overrides)
    if workers is not None:
        study = replace(study, workers=workers)
    if study.executor == "submitit":
        import_submitit()
    if report:  # study.html needs plotly: fail now, not after the cells
        with requires_extra("the study's report, study.html (hcl study --no-report skips it)"):
            import plotly  # noqa: F401
    plan = plan_study(study)
    records = {cell: _finished_record(plan, cell) for cell in plan.cells}
    todo = [cell for cell in plan.cells if records[cell] is None]
    ran: list[str] = []
    cells = _execute(plan, todo, progress=progress, already=len(plan.cells) - len(todo))
    try:
        for record in cells:
            cell = Cell(**record["cell"])
            records[cell] = record
            ran.append(cell.key)
    finally:
        # Closed at once: a generator left suspended by an interrupt would stop its workers only
        # when collected, after the pool's exit handler had waited for their cells to finish.
        cells.close()
        result = _result(plan, records, ran)
        write_study_json(result, study, command=_command_line(config, overrides, workers))
    if report:
        from hcl.study.report import write_study_report

        write_study_report(Path(study.output_dir) / STUDY_FILE)
    unfinished = [r for r in result.records if r["status"] in ("failed", "interrupted")]
    if unfinished:
        lines = "; ".join(f"{r['key']} {r['status']}: {r['error']}" for r in unfinished)
        raise StudyCellError(f"{len(unfinished)} of {len(plan.cells)} cells did not finish ({lines})", result)
    return result


def _resolve(config: StudyConfig | str | Path, overrides: Iterable[str]) -> StudyConfig:
    overrides = list(overrides)
    if isinstance(config, StudyConfig):
        if not overrides:
            return config
        from hcl.study.config import apply_study_overrides

        return StudyConfig.from_dict(apply_study_overrides(config.to_dict(), overrides))
    return load_study_config(config, overrides)


def _command_line(config: StudyConfig | str | Path, overrides: Iterable[str], workers: int | None) -> str | None:
    """The ``hcl study`` command that runs the study as :func:`run_study` was called; None for a
    StudyConfig object, which no command line names."""
    if isinstance(config, StudyConfig):
        return None
    parts = ["hcl", "study", "--config", str(config)]
    overrides = list(overrides)
    if overrides:
        parts += ["--set", *overrides]
    if workers is not None:
        parts += ["--workers", str(workers)]
    return shlex.join(parts)


def _finished_record(plan: StudyPlan, cell: Cell) -> dict[str, Any] | None:
    """The cell's ``cell.json``, or None when it has none or lacks an embedding the study now
    evaluates (the rerun then only evaluates: its training is complete); an error when its config
    is not the plan's (the study changed under a finished cell)."""
    path = cell_dir(plan.study.output_dir, cell) / CELL_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it to run the cell again") from error
    if not set(plan.study.embeddings) <= set(record.get("metrics", {})):
        return None
    current = plan.configs[cell].to_dict()
    saved = upgrade_keys(record.get("config", {}), warn=False)
    # output_dir differs when the study folder was moved; keys new to TrainConfig are not compared
    changed = sorted(k for k in current if k in saved and k != "output_dir" and saved[k] != current[k])
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed)
        raise ValueError(
            f"cell {cell.key} in {plan.study.output_dir} finished with another config ({detail}); "
            "choose another output_dir, or delete that cell's folder to run it again"
        )
    return {**record, "status": "ok", "run_dir": str(path.parent)}


def _execute(plan: StudyPlan, todo: list[Cell], *, progress: bool, already: int) -> Iterator[dict[str, Any]]:
    """Run ``todo`` and yield each cell's record as it completes, advancing the bar."""
    from tqdm.auto import tqdm

    study = plan.study
    tasks = [
        CellTask(
            cell,
            plan.configs[cell].to_dict(),
            plan.protocols[cell.protocol],
            tuple(study.embeddings),
            study.threads_per_worker,
        )
        for cell in todo
    ]
    # tqdm's rate counts only the cells finished by this call (n - initial): the time left is
    # estimated from them, not from the skipped ones; parallel workers show as a higher rate.
    bar = tqdm(
        total=len(plan.cells),
        initial=already,
        desc="study",
        unit="cell",
        disable=not progress,
        file=sys.stderr,
        smoothing=0,
    )  # the average over all cells finished, not the last few
    unfinished: dict[str, int] = {}
    try:
        if tasks:
            completions = (
                run_with_submitit(tasks, study) if study.executor == "submitit" else run_in_processes(tasks, study)
            )
            for record in completions:
                bar.update(1)
                if record["status"] != "ok":
                    unfinished[record["status"]] = unfinished.get(record["status"], 0) + 1
                    bar.set_postfix(unfinished)
                    bar.write(f"cell {record['key']} {record['status']}: {record.get('error')}")
                yield record
    finally:
        if tasks:
            completions.close()
        bar.close()


def _result(plan: StudyPlan, records: dict[Cell, dict[str, Any] | None], ran: list[str]) -> StudyResult:
    ordered = []
    for cell in plan.cells:
        record = records[cell]
        if record is None:
            record = {
                "cell": {"variant": cell.variant, "protocol": cell.protocol, "seed": cell.seed},
                "key": cell.key,
                "run_dir": str(cell_dir(plan.study.output_dir, cell)),
                "status": "pending",
            }
        ordered.append(record)
    rows = [row for record in ordered if record["status"] == "ok" for row in cell_rows(record)]
    tables = aggregate(rows, plan.study.baseline)
    return StudyResult(Path(plan.study.output_dir), ordered, tables["summary"], tables["paired"], ran)


def write_study_json(result: StudyResult, study: StudyConfig, *, command: str | None = None) -> Path:
    """Write ``<output_dir>/study.json`` atomically: the config, the command that ran it (None when
    unknown), every cell's record (config, metrics, timing, environment, error) and the aggregated
    tables. NaN is written as null."""
    counts = {
        status: sum(r["status"] == status for r in result.records)
        for status in ("ok", "failed", "interrupted", "pending")
    }
    document = {
        "schema": _SCHEMA,
        "config": study.to_dict(),
        "command": command,
        "environment": provenance(),
        "counts": counts,
        "complete": counts["ok"] == len(result.records),
        "cells": result.records,
        "summary": result.summary,
        "paired": result.paired,
    }
    text = json.dumps(_nan_to_none(document), indent=1, allow_nan=False)
    return write_text_atomic(result.output_dir / STUDY_FILE, text + "\n")


def read_study(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The document :func:`write_study_json` wrote: ``path`` is the study folder or its ``study.json``.

    NaN was written as null and is read as None.

    Raises:
        FileNotFoundError: no study.json there (the path named).
        ValueError: the file is not valid JSON, or not a study's (the file named).
    """
    path = Path(path)
    if path.is_dir():
        path = path / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no study file at {path}")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    missing = [
        k for k in ("config", "cells", "summary", "paired") if not isinstance(document, dict) or k not in document
    ]
    if missing:
        raise ValueError(f"{path} is not a study.json (it lacks {', '.join(missing)})")
    return document


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value
