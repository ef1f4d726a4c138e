"""Data loader faults during training: the error names the sample index and its file.

An image that fails to decode mid-epoch and a DataLoader worker process that dies (SIGKILL, as
the out-of-memory killer or a crashing native decoder would do it) are both injected into a real
``fit`` on an image folder, with and without worker processes.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from hcl.data import HierarchicalImageFolder
from hcl.train import TrainConfig, fit


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """2 levels (a, b > ax, ay, bx, by), 6 images of 16 px each: 24 images, 3 batches of 8."""
    root = tmp_path / "images"
    for top in "ab":
        for leaf in "xy":
            folder = root / top / f"{top}{leaf}"
            folder.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / f"{i}.png")
    return root


def _config(root: Path, out: Path, num_workers: int) -> TrainConfig:
    return TrainConfig(
        dataset="image_folder",
        data_root=str(root),
        image_size=16,
        backbone="compact_cnn",
        width=4,
        embedding_dim=8,
        batch_size=8,
        epochs=1,
        eval_every=-1,
        progress=False,
        num_workers=num_workers,
        output_dir=str(out),
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_image_failing_to_decode_mid_epoch_is_named(
    image_tree: Path, tmp_path: Path, num_workers: int, cases
) -> None:
    bad = image_tree / "b" / "by" / "3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n then nothing useful")
    index = HierarchicalImageFolder(image_tree).paths.index(str(bad))
    with pytest.raises(OSError, match=rf"cannot decode image {index} \({re.escape(str(bad))}\)"):
        fit(_config(image_tree, tmp_path / "run", num_workers))
    cases.add("loader.corrupt_image", "rejected")


def test_a_dead_worker_names_the_batch_it_was_loading(
    image_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases
) -> None:
    victim = str(image_tree / "a" / "ay" / "2.png")
    real_load = HierarchicalImageFolder._load_image

    def load_or_die(self: HierarchicalImageFolder, row: int, index: int) -> Image.Image:
        if self._files[row] == victim and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer or a segfaulting decoder does
        return real_load(self, row, index)

    monkeypatch.setattr(HierarchicalImageFolder, "_load_image", load_or_die)
    index = HierarchicalImageFolder(image_tree).paths.index(victim)
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid.*(killed|exited)") as info:
        fit(_config(image_tree, tmp_path / "run", num_workers=2))
    message = str(info.value)
    samples = re.search(r"samples \[([\d, ]+)\]", message)
    assert samples and index in [int(i) for i in samples.group(1).split(",")], message
    assert victim in message, message
    cases.add("loader.dead_worker", "rejected")
