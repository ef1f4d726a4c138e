"""Learning-rate schedules, precomputed as arrays indexed by the global step (as in DINO)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["warmup_cosine"]


def warmup_cosine(
    base_lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
) -> np.ndarray:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``.

    Step ``s`` of the warm-up uses ``base_lr * (s + 1) / warmup_steps`` (the first step is not
    wasted at zero); the cosine part starts at ``base_lr`` and reaches ``min_lr`` after the last
    step. Resuming at step ``s`` just reads ``schedule[s]``.

    Args:
        base_lr: the peak learning rate (> 0).
        total_steps: number of optimisation steps (>= 1).
        warmup_steps: warm-up length, clipped to ``total_steps``.
        min_lr: the final learning rate (0 <= min_lr <= base_lr).

    Shape:
        Returns (total_steps,) float64.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr must be in [0, base_lr={base_lr}], got {min_lr}")
    warmup_steps = min(warmup_steps, total_steps)
    warmup = base_lr * np.arange(1, warmup_steps + 1, dtype=np.float64) / max(warmup_steps, 1)
    decay_steps = total_steps - warmup_steps
    progress = np.arange(decay_steps, dtype=np.float64) / max(decay_steps, 1)
    cosine = min_lr + 0.5 * (base_lr - min_lr) * (1.0 + np.cos(math.pi * progress))
    return np.concatenate([warmup, cosine])
