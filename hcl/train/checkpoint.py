"""One-file checkpoints, written atomically beside the previous one, and the random-number-generator
state they carry."""

from __future__ import annotations

import os
import random
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hcl.atomic import check_zip_crc, describe_load_error

__all__ = [
    "capture_rng_state",
    "check_training_state",
    "load_checkpoint",
    "load_newest_checkpoint",
    "remove_partial_writes",
    "restore_rng_state",
    "save_checkpoint",
]


def save_checkpoint(state: dict[str, Any], path: str | Path, *, previous: str | Path | None = None) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    Readers never see a half-written file, and a crash or a full disk during the write leaves the
    checkpoint at ``path`` as it was. With ``previous``, that checkpoint is first made ``previous``
    as well (a hard link, which takes no space, replacing the one there; a rename where the file
    system has no hard links), so that the disk holds two checkpoints at most, and
    :func:`load_newest_checkpoint` can fall back to it when the new one turns out damaged.

    Raises:
        OSError: the folder is not writable or the disk is full, naming ``path`` (the temporary
            file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if previous is not None and path.is_file():
        _keep_as_previous(path, Path(previous))
    # A unique name opened with "xb" (not mkstemp) so that the file gets the usual umask mode.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        # torch.save reports a failed write (ENOSPC) as a RuntimeError on top of the OSError.
        cause = error if isinstance(error, OSError) else error.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, f"cannot write checkpoint {path}: {cause.strerror or cause}") from error
        raise
    return path


def _keep_as_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` name the checkpoint at ``path``, atomically replacing the one there."""
    link = previous.parent / f".{previous.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        os.link(path, link)
    except OSError:  # no hard links here (FAT, some network shares): path is missing until the write ends
        os.replace(path, previous)
        return
    os.replace(link, previous)


def remove_partial_writes(path: str | Path) -> list[Path]:
    """Delete the temporary files of :func:`save_checkpoint` calls to ``path`` that never finished.

    A process killed during a write (SIGKILL, out of memory, power loss) cannot remove its
    temporary file, and each one is as large as a checkpoint. Call this only while no other
    process writes ``path``, e.g. when a run starts. Returns the files removed.
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise FileNotFoundError(f"checkpoint {what}: {path}")
    try:
        check_zip_crc(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # whatever damaged bytes make the parsers raise, name the file
        raise ValueError(f"cannot read checkpoint {path}: {describe_load_error(error)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} must hold a dict, got {type(state).__name__}")
    return state


def load_newest_checkpoint(
    path: str | Path, previous: str | Path, check: Callable[[dict[str, Any], Path], None] | None = None
) -> tuple[dict[str, Any], Path]:
    """The checkpoint at ``path``, or at ``previous`` when that one is missing or damaged.

    Falling back warns (a ``UserWarning`` naming both files and what was wrong with ``path``).
    ``check(state, file)`` raising ValueError marks a readable file as damaged too.

    Returns:
        The state and the file it came from.

    Raises:
        FileNotFoundError: neither file exists.
        ValueError: neither file is a loadable checkpoint (both named, with their errors).
    """
    path, previous = Path(path), Path(previous)
    if not (path.exists() or previous.exists()):
        raise FileNotFoundError(f"no checkpoint: neither {path} nor {previous} exists")
    errors = []
    for candidate in (path, previous):
        try:
            state = load_checkpoint(candidate)
            if check is not None:
                check(state, candidate)
        except (FileNotFoundError, ValueError) as error:
            errors.append(error)
            continue
        if candidate == previous:
            warnings.warn(f"{errors[0]}; resuming from the previous checkpoint {previous} instead", stacklevel=2)
        return state, candidate
    raise ValueError(f"no loadable checkpoint: {errors[0]}; {errors[1]}")


# What fit() writes and what resuming (and load_run) read, with the type each must have.
_TRAINING_STATE = {
    "model": dict,
    "optimizer": dict,
    "scaler": dict,
    "step": int,
    "rng": dict,
    "config": dict,
    "model_spec": dict,
}


def check_training_state(
    state: dict[str, Any], path: str | Path, keys: tuple[str, ...] = tuple(_TRAINING_STATE)
) -> None:
    """Raise ValueError naming ``path`` unless ``state`` has the training-checkpoint ``keys``.

    A checkpoint edited by hand or by another program is caught here, before its contents are
    used, rather than as a KeyError or TypeError deep inside model or optimizer code.
    """
    for key in keys:
        if key not in state:
            raise ValueError(f"checkpoint {path} lacks {key!r} (has {sorted(state)}): not an hcl training checkpoint")
        kind = _TRAINING_STATE[key]
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise ValueError(f"checkpoint {path}: {key!r} must be a {kind.__name__}, got {type(state[key]).__name__}")
    if "rng" in keys:
        _check_rng_state(state["rng"], path)


def _check_rng_state(rng: dict[str, Any], path: str | Path) -> None:
    """Raise ValueError naming ``path`` unless :func:`restore_rng_state` accepts ``rng``.

    Tried for real, then the generators are put back as they were, so that a damaged state is
    caught before a resume changes anything on disk.
    """
    current = capture_rng_state()
    try:
        restore_rng_state(rng)
    except Exception as error:  # whatever a malformed state makes the setters raise
        detail = f"lacks {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
        raise ValueError(f"checkpoint {path}: its random-number-generator state 'rng' {detail}") from None
    finally:
        restore_rng_state(current)


def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and CUDA) generators, checkpoint-ready.

    NumPy's state is stored as a tensor so that the checkpoint loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA only when CUDA is initialised)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
