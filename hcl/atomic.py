"""Safe files: atomic writes (a temporary file in the same folder, then ``os.replace``) and checksums.

Readers and crashes never see half a file: the target holds either the old or the new content.
A file that was damaged after writing is caught by :func:`check_zip_crc` where its format
carries checksums.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

__all__ = ["atomic_write", "check_zip_crc", "write_text_atomic"]


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
