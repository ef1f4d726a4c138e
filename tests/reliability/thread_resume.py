"""SIGKILL and resume a training run under the thread count the process was started with.

``python -m reliability.thread_resume OUTPUT_DIR SEED`` (tests/ on the path) trains once
uninterrupted, then trains again, killing the process at random steps and inside checkpoint
writes (:data:`KILL_POINTS`) and resuming each time, and prints a JSON report on its last line:
the kills, the thread counts every process had when it started and ended, and which parts of the
final state (model, optimizer, scaler, RNG, logged losses) differ from the uninterrupted run.

It is a process of its own because ``OMP_NUM_THREADS`` takes effect only when OpenMP loads, at
``import torch``; it forks the training processes (which leave torch's thread count alone) from
its own imports. It never computes with torch before its last fork: a fork inherits no OpenMP
thread pool. The test is tests/reliability/test_thread_resume.py.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from reliability.test_fault_injection import Child, _assert_same_state, _checkpoint_step, _config, _train_records
from reliability.training_child import run_fit

from hcl.train import load_checkpoint

# Every kind of point where a kill can land, the checkpoint writes included; one kill each.
KILL_POINTS = ("torn_write", "inside_step", "before_rename", "inside_step", "after_rename", "inside_step")
# The fault-injection test's tiny run (40 images of 16 px, batch 8: 5 steps per epoch), 20 steps.
SETTINGS = {"epochs": 4}


def train(config: dict[str, Any], conn: Connection, pause_at: tuple[str, int] | None = None) -> None:
    """:func:`reliability.training_child.run_fit` on the process's own thread count, reporting
    torch's thread count (``("threads", n)``) before and after."""
    conn.send(("threads", torch.get_num_threads()))
    run_fit(config, conn, pause_at, None)
    conn.send(("threads", torch.get_num_threads()))


def _kill_once(context: Any, config: dict[str, Any], point: str, rng: random.Random, start: int) -> Child:
    if point == "inside_step":
        child = Child(context, train, config, None)
        child.receive_until("step", start + rng.randint(0, 3))
        child.wait_quietly(rng.uniform(0.0, 0.3))  # in a step, its log line or its checkpoint
    else:
        child = Child(context, train, config, (point, rng.choice((1, 2)) if point != "after_rename" else 1))
        child.receive_until("paused")
    child.kill()
    return child


def _differences(run_dir: Path, reference_dir: Path) -> list[str]:
    """The parts of the final state that differ from the uninterrupted run's."""
    final, expected = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(reference_dir / "checkpoint.pt")
    differ = []
    for key in ("step", "model", "optimizer", "scaler", "rng"):
        try:
            _assert_same_state(final[key], expected[key], key)
        except AssertionError:
            differ.append(key)
    if _train_records(run_dir) != _train_records(reference_dir):
        differ.append("logged losses")
    return differ


def main(output_dir: Path, seed: int) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    reference_dir, run_dir = output_dir / "uninterrupted", output_dir / "killed"
    reference = Child(context, train, _config(reference_dir, **SETTINGS), None)
    total = reference.receive_until("done")[1]
    reference.receive_until("threads")
    reference.process.join(30)
    threads = [reference.values("threads")]

    config = _config(run_dir, **SETTINGS)
    rng = random.Random(seed)
    kills = []
    for point in KILL_POINTS:
        start = _checkpoint_step(run_dir) + 1
        child = _kill_once(context, config, point, rng, start)
        steps = child.values("step")
        kills.append({"point": point, "resumed_at": steps[0] if steps else start, "steps": len(steps)})
        threads.append(child.values("threads"))
    finisher = Child(context, train, config, None)
    finisher.receive_until("done")
    finisher.receive_until("threads")
    finisher.process.join(30)
    threads.append(finisher.values("threads"))
    return {
        "steps": total,
        "kills": kills,
        "threads": threads,
        "different": _differences(run_dir, reference_dir),
        "logged_steps": [record[0] for record in _train_records(run_dir)],
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
