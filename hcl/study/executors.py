"""The executors that run a study's cells: local worker processes (the default) or SLURM jobs
through submitit. Each yields the cells' records as they finish; a cell whose worker died comes
back as a failure record. Local workers never outlive the study: they exit when it is killed;
a SIGTERM to the study is passed on to them as Ctrl-C (tested only for killed studies so far).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from hcl.study.cell import CellTask, run_cell
from hcl.study.config import StudyConfig

__all__ = ["exit_with_parent", "import_submitit", "outcome", "run_in_processes", "run_with_submitit"]


def run_in_processes(tasks: list[CellTask], study: StudyConfig) -> Iterator[dict[str, Any]]:
    workers = min(study.num_workers, len(tasks))
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    )
    with TerminateAsInterrupt(pool) as terminate:
        try:
            futures = {pool.submit(run_cell, task): task for task in tasks}
            for future in as_completed(futures):
                yield outcome(futures[future], future.result)
        except BaseException:
            # Ctrl-C reaches the workers too (one process group) and their cells checkpoint on it;
            # a SIGTERM reaches only this process, so it is passed on to them as that Ctrl-C. The
            # queued cells never start.
            if terminate.received:
                signal_workers(pool, signal.SIGINT)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    pool.shutdown(wait=True)


class TerminateAsInterrupt:
    """SIGTERM to the study, while its pool runs, raises KeyboardInterrupt (the Ctrl-C path); a
    second one also kills the workers at once. The previous handler is restored on exit; outside
    the main thread (where no handler can be installed) this does nothing."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> TerminateAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            signal_workers(self.pool, signal.SIGKILL)
        self.received = True
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def signal_workers(pool: ProcessPoolExecutor, signum: int) -> None:
    # The pool's worker table is private, but has been there since concurrent.futures began.
    for process in list((getattr(pool, "run_in_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, TypeError):  # ended meanwhile / never started
            os.kill(process.pid, signum)


def exit_with_parent(parent: int) -> None:
    """A worker's initializer: a daemon thread ends the worker as soon as the study process
    ``parent`` is gone (killed, even by SIGKILL), instead of leaving it training as an orphan
    that a rerun of the study would race. The cell resumes from its last checkpoint then."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        print(
            f"the study process {parent} is gone: stopping this cell (a rerun resumes it)", file=sys.stderr, flush=True
        )
        os._exit(1)

    threading.Thread(target=watch, name="hcl-exit-with-study", daemon=True).start()


def run_with_submitit(tasks: list[CellTask], study: StudyConfig) -> Iterator[dict[str, Any]]:
    submitit = import_submitit()
    parameters = dict(study.submitit)
    cluster = parameters.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=Path(study.output_dir) / "submitit", cluster=cluster)
    if parameters:
        executor.update_parameters(**parameters)
    jobs = executor.map_array(run_cell, tasks)
    by_job = {job.job_id: task for job, task in zip(jobs, tasks)}
    poll = 10.0 if executor.cluster == "slurm" else 0.5
    for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
        yield outcome(by_job[job.job_id], job.result)


def outcome(task: CellTask, result: Any) -> dict[str, Any]:
    """The record a finished future or job returned, or a failure record when the worker died."""
    try:
        return result()
    except Exception as error:  # noqa: BLE001 - the worker process died or the job failed
        return {
            "cell": {"variant": task.cell.variant, "protocol": task.cell.protocol, "seed": task.cell.seed},
            "key": task.cell.key,
            "run_dir": task.config["output_dir"],
            "config": task.config,
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
        }


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError as error:
        raise ImportError("study key 'executor' is 'submitit', which is not installed: pip install submitit") from error
    return submitit
