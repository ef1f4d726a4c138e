"""Fault injection on training: SIGKILL at random points, full or read-only disks, failing writes.

The kill loop trains the synthetic set on the CPU with a fixed seed and a checkpoint every two
steps (and at each epoch end), kills the training process 20 times in a row, each time at a
different kind of point (inside the temporary file of a checkpoint write, between the write and
the rename, right after the rename, somewhere inside a step, during start-up), resumes it each
time, and checks that

* ``checkpoint.pt`` always loads (never torn) and holds the last checkpoint completed before the
  kill, never an older one;
* every resumed process starts at the step after that checkpoint;
* the final weights, optimizer state and per-step losses equal those of an uninterrupted run;
* nothing is left behind: no stale temporary files, one log line per step.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hcl.train import TrainConfig, fit, load_checkpoint

# 3 levels, 2 x 2 x 2 leaves, 5 images each (40), batch 8: 5 steps per epoch, so checkpoints fall
# on steps 2, 4, 5 (epoch end), 6, 8, 10 (epoch end), ... and a kill often makes a step redone.
SYNTHETIC = {"depth": 3, "branching": [2, 2, 2], "samples_per_leaf": 5, "image_size": 16, "cache": False}
KILLS = 20
KILL_POINTS = ("torn_write", "before_rename", "after_rename", "inside_step", "startup")
WAIT_S = 180.0  # the longest wait for one message from a child (a loaded CI machine)


def _config(run_dir: Path, **changes: Any) -> dict[str, Any]:
    config = {
        "dataset": "synthetic",
        "data_options": SYNTHETIC,
        "backbone": "compact_cnn",
        "width": 8,
        "embedding_dim": 16,
        "loss": "himulcone",
        "batch_size": 8,
        "epochs": 12,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "checkpoint_every": 2,
        "eval_every": -1,
        "log_every": 1,
        "progress": False,
        "seed": 7,
        "output_dir": str(run_dir),
    }
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def forkserver() -> Any:
    """A multiprocessing context whose server has imported torch, torchvision and hcl once."""
    context = multiprocessing.get_context("forkserver")
    # Installed modules only: Python 3.11's server ignores the parent's sys.path (tests/ is on it).
    context.set_forkserver_preload(
        ["torch", "torchvision", "hcl.data", "hcl.losses", "hcl.models", "hcl.train", "hcl.train.evaluate"]
    )
    return context


class Child:
    """One training process and the parent's end of its pipe."""

    def __init__(self, context: Any, target: Any, *args: Any) -> None:
        self.conn, child_end = context.Pipe(duplex=False)
        self.process = context.Process(target=target, args=(args[0], child_end, *args[1:]), daemon=True)
        self.process.start()
        child_end.close()
        self.messages: list[tuple[Any, ...]] = []

    def receive(self, timeout: float = WAIT_S) -> tuple[Any, ...]:
        if not self.conn.poll(timeout):
            self.kill()
            raise AssertionError(f"no message from the training process in {timeout:.0f} s; got {self.messages}")
        try:
            message = self.conn.recv()
        except EOFError:
            self.process.join(10)
            raise AssertionError(
                f"the training process exited with {self.process.exitcode} after {self.messages}"
            ) from None
        self.messages.append(message)
        return message

    def receive_until(self, kind: str, value: Any = None) -> tuple[Any, ...]:
        while True:
            message = self.receive()
            if message[0] == kind and (value is None or message[1] == value):
                return message
            if message[0] == "done":
                raise AssertionError(f"the run finished before {kind} {value}: {self.messages}")

    def wait_quietly(self, seconds: float) -> None:
        """Wait up to ``seconds``, but no longer than until the child finishes its next step.

        This bounds how far the run gets between two kills, however fast the machine is.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and self.conn.poll(left):
            if self.receive()[0] == "step":
                return

    def kill(self) -> None:
        self.process.kill()
        self.process.join(30)
        assert self.process.exitcode == -signal.SIGKILL, self.process.exitcode
        # Pipe messages are single writes under PIPE_BUF, so everything sent before the kill is whole.
        while True:
            try:
                if not self.conn.poll(0):
                    break
                self.messages.append(self.conn.recv())
            except (EOFError, OSError):
                break
        self.conn.close()

    def values(self, kind: str) -> list[Any]:
        return [m[1] for m in self.messages if m[0] == kind]


def _checkpoint_step(run_dir: Path) -> int:
    """The step of ``checkpoint.pt`` (0 without one); loading it proves it is not torn."""
    path = run_dir / "checkpoint.pt"
    return int(load_checkpoint(path)["step"]) if path.exists() else 0


def _train_records(run_dir: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"]) for r in records if r["kind"] == "train"]


def _assert_same_state(a: dict[str, Any], b: dict[str, Any], where: str = "") -> None:
    """Exact equality of nested checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _kill_once(forkserver: Any, config: dict[str, Any], point: str, rng: random.Random, start: int) -> Child:
    """Start a resuming training process and SIGKILL it at a point of kind ``point``."""
    from reliability.training_child import run_fit

    if point in ("torn_write", "before_rename", "after_rename"):
        occurrence = rng.choice((1, 2)) if point != "after_rename" else 1
        child = Child(forkserver, run_fit, config, (point, occurrence))
        child.receive_until("paused")
    elif point == "inside_step":
        child = Child(forkserver, run_fit, config, None)
        child.receive_until("step", start + rng.randint(0, 2))
        # Lands in data loading, the step, a log or a checkpoint write; never past the next step.
        child.wait_quietly(rng.uniform(0.0, 0.4))
    else:
        child = Child(forkserver, run_fit, config, None)
        child.wait_quietly(rng.uniform(0.0, 1.5))  # dataset and model construction, the first step
    child.kill()
    return child


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_20_times_then_resume_matches_an_uninterrupted_run(tmp_path: Path, forkserver: Any, cases) -> None:
    from reliability.training_child import run_fit

    reference_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = Child(forkserver, run_fit, _config(reference_dir), None)
    total = reference.receive_until("done")[1]
    reference.process.join(30)
    assert total == 60 and reference.process.exitcode == 0

    config = _config(run_dir)
    rng = random.Random(2022)
    disk = 0  # the step of the checkpoint on disk, 0 = none
    for kill in range(KILLS):
        point = KILL_POINTS[kill % len(KILL_POINTS)]
        child = _kill_once(forkserver, config, point, rng, start=disk + 1)
        steps, saved = child.values("step"), child.values("saved")
        where = f"kill {kill + 1} ({point}); messages {child.messages}"
        # A resumed process continues right after the checkpoint it found.
        assert not steps or steps[0] == disk + 1, where
        previous, disk = disk, _checkpoint_step(run_dir)
        last_complete = saved[-1] if saved else previous
        if point in ("torn_write", "before_rename"):
            paused_at = child.messages[-1][2] if child.messages[-1][0] == "paused" else None
            assert paused_at is not None and paused_at > last_complete, where
            assert disk == last_complete, where  # the old checkpoint, never the half-written one
            assert list(run_dir.glob(".checkpoint.pt.*.tmp")), where  # the kill did land inside the write
        elif point == "after_rename":
            assert disk == last_complete == child.messages[-1][2], where
        else:
            # The kill may land between a rename and its report: at most one step newer.
            assert last_complete <= disk <= max(steps, default=previous) + 1, where
        assert disk >= previous, where
        cases.add("training.sigkill", point)

    finisher = Child(forkserver, run_fit, config, None)
    assert finisher.receive_until("done")[1] == total
    assert finisher.values("step")[0] == disk + 1
    finisher.process.join(30)

    final, expected = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(reference_dir / "checkpoint.pt")
    assert final["step"] == expected["step"] == total
    for key in ("model", "optimizer", "scaler", "rng"):
        _assert_same_state(final[key], expected[key], key)
    # One log line per step, with the uninterrupted run's loss and learning rate, bit for bit.
    assert _train_records(run_dir) == _train_records(reference_dir)
    assert [r[0] for r in _train_records(run_dir)] == list(range(1, total + 1))
    # A kill inside a write leaves a checkpoint-sized temporary file; the next start removes it.
    leftovers = sorted(p.name for p in run_dir.glob(".checkpoint.pt.*.tmp"))
    assert not leftovers, f"temporary files left behind by the kills: {leftovers}"


def _run_on_small_filesystem(forkserver: Any, tmp_path: Path, options: str, fill: bool) -> tuple[Any, ...]:
    from reliability.training_child import run_fit_on_small_filesystem

    child = Child(forkserver, run_fit_on_small_filesystem, _config(tmp_path / "mnt", max_steps=2), options, fill)
    message = child.receive()
    child.process.join(30)
    if message[0] == "unavailable":
        pytest.skip(f"cannot mount a private tmpfs here: {message[1]}")
    return message


@pytest.mark.parametrize(
    ("options", "fill", "expected"),
    [
        ("size=64k", False, r"has 0\.\d MiB free, but the run needs about"),
        ("size=256k", True, "is not writable: No space left on device"),
        ("ro", False, "is not writable: Read-only file system"),
    ],
    ids=["too-small", "full", "read-only"],
)
def test_full_or_read_only_output_dir_fails_before_training(
    tmp_path: Path, forkserver: Any, cases, options: str, fill: bool, expected: str
) -> None:
    kind, error_type, message, steps, has_checkpoint = _run_on_small_filesystem(forkserver, tmp_path, options, fill)
    assert (kind, error_type) == ("error", "OSError"), message
    assert re.search(expected, message) and str(tmp_path / "mnt") in message, message
    assert steps == 0 and not has_checkpoint
    cases.add("training.bad_output_dir", "rejected")


def test_a_failing_checkpoint_write_keeps_the_previous_one_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases, one_thread: None, fill_the_disk: Callable[[], None]
) -> None:
    """ENOSPC in the middle of the third checkpoint write: OSError, no temp file, exact resume."""
    straight = fit(TrainConfig(**_config(tmp_path / "straight", max_steps=8)))
    fill_the_disk()
    run_dir = tmp_path / "faulty"
    with pytest.raises(OSError, match="No space left on device"):
        fit(TrainConfig(**_config(run_dir, max_steps=8)))
    monkeypatch.undo()
    assert _checkpoint_step(run_dir) == 4  # the checkpoints of steps 2 and 4 were written
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    resumed = fit(TrainConfig(**_config(run_dir, max_steps=8)), resume=True)
    assert resumed.step == 8 and resumed.history == straight.history[4:]
    resumed_state = load_checkpoint(run_dir / "checkpoint.pt")
    _assert_same_state(resumed_state["model"], load_checkpoint(tmp_path / "straight/checkpoint.pt")["model"])
    cases.add("training.failed_write", "recovered")
