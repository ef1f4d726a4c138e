"""hcl.atomic: the zip checksum check that checkpoints and weight files share."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from hcl.atomic import check_zip_crc


def test_a_flipped_byte_inside_a_torch_file_fails_its_crc(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.arange(256, dtype=torch.float32)}, path)
    check_zip_crc(path)  # intact: passes
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    # A stored (uncompressed) entry: its bytes follow the 30-byte local header, name and extra field.
    start = info.header_offset + 30 + len(info.filename.encode())
    extra = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    data[start + extra + 17] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"data/0 fails its CRC-32 check"):
        check_zip_crc(path)


def test_a_file_that_is_not_a_zip_archive_passes_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    check_zip_crc(path)
