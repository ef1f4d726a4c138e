"""Safe files: atomic writes (a temporary file in the same folder, then ``os.replace``) and checksums.

Readers and crashes never see half a file: the target holds either the old or the new content.
A file that was damaged after writing is caught by :func:`check_zip_crc` where its format
carries checksums, and :func:`describe_load_error` says why a torch file was refused without
passing on torch's advice to load it unsafely.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

__all__ = ["atomic_write", "check_zip_crc", "describe_load_error", "write_text_atomic"]


def atomic_write(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically, creating missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        # mkstemp creates the file private (0600); give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, text.encode("utf-8"))


def check_zip_crc(path: str | os.PathLike[str]) -> None:
    """Raise ValueError when a zip-format file's contents fail their CRC-32 checksums.

    ``torch.load`` does not verify them in a torch checkpoint or weights file, so a flipped bit
    in a tensor would load as a silently wrong weight. Files that are not zip archives (torch's
    legacy format) have no checksum and pass unchecked.
    """
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ValueError(f"{damaged} fails its CRC-32 check: the file is damaged")


def describe_load_error(error: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line.

    A file holding Python objects beyond tensors and plain data (code, in a hostile file) is
    refused by torch with advice to retry with ``weights_only=False`` or to allow-list the object,
    which would run that code: only torch's own diagnosis is kept, never the advice.
    """
    text = str(error)
    if not (isinstance(error, pickle.UnpicklingError) and "weights_only" in text):
        return " ".join(text.split())
    # The line naming the refused object ("GLOBAL posix.system"), cut before "Please use ... add_safe_globals".
    details = [
        re.split(r"(?<=\.)\s+(?=Please|Check|If you)", line.strip())[0]
        for line in text.splitlines()
        if "GLOBAL" in line and "weights_only" not in line
    ]
    reason = f" ({details[0]})" if details else ""
    return f"it holds Python objects other than tensors and plain data, which could run code; refused{reason}"
