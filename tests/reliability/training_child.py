"""The training process that the fault-injection tests kill: ``fit`` in a forked child.

Importing torch and torchvision takes 10-20 s on a loaded CI machine, far too long to pay for
each of 20 kills, so the tests start a multiprocessing "forkserver" that imports them once and
fork each training process from it. The server never runs torch code, so the forks are clean.
The children import this module by name (``reliability.training_child``); it is not a test file.

A child reports over a pipe: ``("step", n)`` after step n (and its checkpoint), ``("saved", n)``
once ``checkpoint.pt`` holds step n, ``("paused", point, n)`` when it stops at a chosen point of
the write of the checkpoint of step n and waits to be killed, ``("done", n)`` at the end.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torchvision  # noqa: F401  (imported here so that the forked children need not)

import hcl.data  # noqa: F401
import hcl.train.evaluate  # noqa: F401
from hcl.train import TrainConfig, fit

# Where a child can be told to stop inside a checkpoint write.
PAUSE_POINTS = ("torn_write", "before_rename", "after_rename")


def run_fit(
    config: dict[str, Any], conn: Connection, pause_at: tuple[str, int] | None = None, threads: int | None = 1
) -> None:
    """Train (resuming when a checkpoint exists), reporting progress on ``conn``.

    Args:
        config: the TrainConfig fields.
        conn: the child's end of a pipe.
        pause_at: ``(point, k)``: stop at ``point`` (one of :data:`PAUSE_POINTS`) of this
            process's k-th checkpoint write, tell the parent, and sleep until killed.
            ``torn_write`` stops with half of the bytes in the temporary file,
            ``before_rename`` with the temporary file complete but not yet renamed,
            ``after_rename`` right after ``checkpoint.pt`` was replaced.
        threads: torch's intra-op threads for the process (the same arithmetic in every process,
            reference included); None keeps the process's own count (``OMP_NUM_THREADS``).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    writes = [0]
    writing = [None]
    real_save, real_replace = torch.save, os.replace

    def wants(point: str) -> bool:
        return pause_at is not None and pause_at == (point, writes[0])

    def pause(point: str) -> None:
        conn.send(("paused", point, writing[0]))
        time.sleep(3600)

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        writes[0] += 1
        writing[0] = obj.get("step") if isinstance(obj, dict) else None
        if not wants("torn_write"):
            real_save(obj, f, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        pause("torn_write")

    def replace(src: Any, dst: Any) -> None:
        is_checkpoint = Path(dst).name == "checkpoint.pt"
        if is_checkpoint and wants("before_rename"):
            pause("before_rename")
        real_replace(src, dst)
        if is_checkpoint:
            conn.send(("saved", writing[0]))
            if wants("after_rename"):
                pause("after_rename")

    torch.save, os.replace = save, replace
    result = fit(TrainConfig(**config), resume=True, on_step=lambda step, model, loss: conn.send(("step", step)))
    conn.send(("done", result.step))


def run_fit_on_small_filesystem(config: dict[str, Any], conn: Connection, mount_options: str, fill: bool) -> None:
    """Mount a tmpfs at ``config["output_dir"]`` in a private namespace, then train there.

    Sends ``("unavailable", reason)`` when the namespace or the mount cannot be set up (the test
    then skips), ``("error", type name, message, steps trained, checkpoint exists)`` when ``fit``
    raised, or ``("done", step)``.

    Args:
        mount_options: tmpfs options, e.g. ``"size=64k"`` or ``"ro"``.
        fill: fill the file system with one file until it is full before training.
    """
    target = Path(config["output_dir"])
    target.mkdir(parents=True, exist_ok=True)
    problem = _private_tmpfs(target, mount_options)  # first: unshare wants a single thread
    if problem:
        conn.send(("unavailable", problem))
        return
    torch.set_num_threads(1)
    if fill:
        try:
            with open(target / "filler", "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        except OSError:
            pass  # full
    steps = [0]

    def count(step: int, model: Any, loss: float) -> None:
        steps[0] += 1

    try:
        result = fit(TrainConfig(**config), on_step=count)
    except Exception as error:  # reported to the parent, which asserts on it
        conn.send(("error", type(error).__name__, str(error), steps[0], (target / "checkpoint.pt").exists()))
        return
    conn.send(("done", result.step))


def _private_tmpfs(target: Path, options: str) -> str | None:
    """Mount a tmpfs on ``target`` in a mount namespace of this process only; a reason if impossible.

    Root (with CAP_SYS_ADMIN) needs only a new mount namespace; anyone else tries a user namespace
    too. Mounts are made private first, so nothing propagates to the rest of the machine.
    """
    clone_newns, clone_newuser = 0x00020000, 0x10000000
    ms_rdonly, ms_rec, ms_private = 1, 0x4000, 0x40000
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(clone_newns) != 0:
        if libc.unshare(clone_newuser | clone_newns) != 0:
            return f"unshare failed: {os.strerror(ctypes.get_errno())}"
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError as error:
            return f"cannot map the user in the new namespace: {error}"
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        return f"cannot make the mounts private: {os.strerror(ctypes.get_errno())}"
    flags = ms_rdonly if "ro" in options.split(",") else 0
    data = ",".join(o for o in options.split(",") if o != "ro").encode() or None
    if libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", flags, data) != 0:
        return f"mount failed: {os.strerror(ctypes.get_errno())}"
    return None
