"""What :func:`hcl.train.fit` does about faults: Ctrl-C, a dead DataLoader worker, an unusable output folder.

Each turns a failure that would otherwise be silent, late or anonymous into a clean stop or an
error naming its cause; ``docs/reliability.md`` lists the faults tested.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from hcl.train.distributed import is_distributed

__all__ = ["StopRequest", "check_output_dir", "describe_lost_batch", "removed_if_left_empty"]


class StopRequest:
    """SIGINT handling: the first Ctrl-C asks the loop to stop after the current step.

    A context manager: the handler is installed on entry (when this is the main thread) and the
    previous one restored on exit. A second Ctrl-C raises KeyboardInterrupt at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        except ValueError:  # not the main thread: Ctrl-C cannot be caught here
            self._installed = False
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: finishing the current step, then writing a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def agreed(self, device: torch.device) -> bool:
        """True when any rank was asked to stop (so that all ranks stop at the same step)."""
        if not is_distributed():
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def check_output_dir(path: Path, needed_bytes: int = 0) -> None:
    """Fail before training when ``path`` cannot hold the run: not creatable, not writable, full.

    Raises:
        OSError: naming the directory and the reason.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output directory {path}: {error.strerror or error}") from error
    probe = path / f".write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OSError(f"the output directory {path} is not writable: {error.strerror or error}") from error
    finally:
        # On a read-only file system even removing a file that was never created fails (EROFS),
        # which would replace the clear error above.
        with suppress(OSError):
            probe.unlink(missing_ok=True)
    free = shutil.disk_usage(path).free
    if needed_bytes and free < needed_bytes:
        raise OSError(
            errno.ENOSPC,
            f"the output directory {path} has {free / 2**20:.1f} MiB free, but the run needs about "
            f"{needed_bytes / 2**20:.1f} MiB (two checkpoints with the optimizer's state, and the embeddings)",
        )


@contextmanager
def removed_if_left_empty(path: Path) -> Iterator[None]:
    """Undo the folders the block creates for ``path`` when it fails and leaves them empty.

    :func:`check_output_dir` creates the run directory before the data and the config are
    checked; a run that stops at those checks should not leave an empty folder behind. Folders
    that existed before the block, or hold anything, are kept.
    """
    created = []  # path and its missing parents, deepest first
    folder = Path(path)
    while not folder.exists() and folder.parent != folder:
        created.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): keep it and everything above it
                break
        raise


def describe_lost_batch(
    iterator: Any, batches: Sequence[Sequence[tuple[int, int]]], dataset: Dataset, first: int
) -> str:
    """Which batch a dead DataLoader worker was loading: its position, sample indices and files.

    PyTorch reports only the worker's pid. The batch comes from the iterator's task table (batch
    position -> worker); ``batches`` are the epoch's ``(epoch, index)`` keys from position
    ``first`` on. The table is private to torch's multi-process iterator, so this degrades to
    "unknown" without it.
    """
    dead = [i for i, worker in enumerate(getattr(iterator, "_workers", [])) if not worker.is_alive()]
    tasks = getattr(iterator, "_task_info", {})
    lost = sorted(i for i, info in tasks.items() if len(info) == 1 and (not dead or info[0] in dead))
    if not lost:
        return "the batch it was loading is unknown"
    keys = batches[lost[0]]
    indices = [index for _, index in keys]
    paths = getattr(dataset, "paths", None)
    files = f" (files: {', '.join(paths[i] for i in indices)})" if paths else ""
    return (
        f"it was loading batch {first + lost[0] + 1} of epoch {keys[0][0] + 1}, samples {indices}{files}; "
        "one of them may crash the image decoder, or the worker ran out of memory"
    )
