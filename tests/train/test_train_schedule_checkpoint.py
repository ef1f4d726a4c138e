"""The warm-up + cosine schedule and atomic checkpoints with RNG state."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hcl.train import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint, warmup_cosine


def test_warmup_then_cosine() -> None:
    lr = warmup_cosine(0.4, 10, warmup_steps=4, min_lr=0.1)
    assert lr.shape == (10,)
    np.testing.assert_allclose(lr[:4], [0.1, 0.2, 0.3, 0.4])
    # Cosine over the remaining 6 steps, from the peak towards min_lr.
    expected = [0.1 + 0.15 * (1 + math.cos(math.pi * i / 6)) for i in range(6)]
    np.testing.assert_allclose(lr[4:], expected)
    assert np.all(np.diff(lr[4:]) < 0)


def test_schedule_edge_cases() -> None:
    np.testing.assert_allclose(warmup_cosine(1.0, 1), [1.0])
    np.testing.assert_allclose(warmup_cosine(1.0, 3, warmup_steps=10), [1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="total_steps must be >= 1, got 0"):
        warmup_cosine(1.0, 0)
    with pytest.raises(ValueError, match="min_lr must be in"):
        warmup_cosine(0.1, 5, min_lr=0.2)


def test_checkpoint_round_trip_and_atomicity(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "checkpoint.pt"
    state = {"model": {"w": torch.arange(4.0)}, "step": 3, "config": {"lr": 0.1, "levels": None}}
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["config"] == {"lr": 0.1, "levels": None}
    torch.testing.assert_close(loaded["model"]["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temp file left

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 4, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 3  # the previous checkpoint survives a failed write
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "torn.pt")


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
