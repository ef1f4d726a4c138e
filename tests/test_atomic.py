"""hcl.atomic: the zip checksum check that checkpoints and weight files share."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from hcl.atomic import check_zip_crc, describe_load_error


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


@pytest.mark.parametrize(
    "text",
    [
        "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument in "
        "`torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will likely "
        "succeed, but it can result in arbitrary code execution.\n\n\nTrying to load unsupported GLOBAL posix.system "
        "whose module posix is blocked.\n\nCheck the documentation of torch.load to learn more.",
        "Weights only load failed. This file can still be loaded, to do so you have two options\n(1) Re-running "
        "`torch.load` with `weights_only` set to `False` will likely succeed\n WeightsUnpickler error: Unsupported "
        "global: GLOBAL os.system was not an allowed global by default. Please use "
        "`torch.serialization.add_safe_globals([system])` to allowlist this global if you trust this class/function.",
    ],
    ids=["torch-2.6", "torch-2.4"],
)
def test_a_refused_torch_file_is_described_without_the_advice_to_load_it_unsafely(text: str) -> None:
    message = describe_load_error(pickle.UnpicklingError(text))
    assert "refused" in message and "system" in message and "\n" not in message, message
    assert "weights_only" not in message and "safe_globals" not in message and "False" not in message, message
    assert (
        describe_load_error(RuntimeError("PytorchStreamReader failed\nreading zip"))
        == "PytorchStreamReader failed reading zip"
    )
