"""The tiny training run the training tests share. Imported as ``train.tiny``."""

from __future__ import annotations

from pathlib import Path

from hcl.train import TrainConfig

__all__ = ["SYNTHETIC", "tiny_config"]

# 3 levels, 2 x 2 x 3 = 12 leaves named f<i>.c<j>.v<k>, 8 images each in train and test (96), 16 px:
# a step takes milliseconds.
SYNTHETIC = {"depth": 3, "branching": [2, 2, 3], "samples_per_leaf": 8, "image_size": 16, "cache": False}


def tiny_config(tmp_path: Path, name: str = "run", **changes) -> TrainConfig:
    """HiMulCon on the tiny synthetic set for 2 epochs into ``tmp_path / name``; ``changes``
    override any key."""
    base = {
        "dataset": "synthetic",
        "data_options": SYNTHETIC,
        "backbone": "compact_cnn",
        "width": 8,
        "embedding_dim": 16,
        "loss": "himulcon",
        "batch_size": 32,
        "epochs": 2,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "eval_every": -1,
        "log_every": 1,
        "progress": False,
        "output_dir": str(tmp_path / name),
    }
    base.update(changes)
    return TrainConfig(**base)
