"""What training shows while it runs: live bars on a terminal, one plain line per epoch always.

Live tqdm bars redraw themselves with carriage returns and cursor codes, which is right for a
terminal or a notebook and wrong for a log file (a piped run once wrote 60 KB of control codes).
So the bars are shown only when asked for *and* their stream is interactive, while the per-epoch
summary line is printed to ``sys.stdout`` in every case, so a long run is never silent:

    epoch 3/10  loss 4.2173  lr 0.0421  1234 img/s  12.3s  left 00:01:26
"""

from __future__ import annotations

import sys
import time
from typing import Any

import tqdm.autonotebook
import tqdm.std
from tqdm.auto import tqdm as auto_tqdm

__all__ = ["EpochReporter", "format_epoch_line", "live_bars"]


def live_bars(progress: bool) -> bool:
    """Whether to draw live bars: ``progress`` and either a notebook or a terminal on stderr.

    Looked up at call time, so a ``contextlib.redirect_stderr`` in force is respected.
    """
    if not progress:
        return False
    in_notebook = tqdm.autonotebook.tqdm is not tqdm.std.tqdm
    isatty = getattr(sys.stderr, "isatty", None)
    return in_notebook or bool(isatty is not None and isatty())


def format_epoch_line(
    epoch: int, epochs: int, loss: float, lr: float, images_per_s: float, seconds: float, left_s: float
) -> str:
    """The plain summary of one epoch (``epoch`` counts from 1), without cursor codes."""
    left = time.strftime("%H:%M:%S", time.gmtime(max(left_s, 0.0)))
    if left_s >= 86400:
        left = f"{int(left_s // 86400)}d {left}"
    return (
        f"epoch {epoch}/{epochs}  loss {loss:.4f}  lr {lr:.4g}  {images_per_s:.0f} img/s  {seconds:.1f}s  left {left}"
    )


class EpochReporter:
    """Live bars (when :func:`live_bars`) and one plain line per completed epoch, on rank 0 only.

    Args:
        progress: ``TrainConfig.progress``: ask for live bars.
        is_main: this process is rank 0 (other ranks show nothing).
        num_epochs: epochs of the whole run.
        steps_per_epoch: optimisation steps per epoch.
        total_steps: steps of the whole run.
        start_step: the step this call starts from (> 0 when resuming).
        batch_size: images per step on this rank.
    """

    def __init__(
        self,
        *,
        progress: bool,
        is_main: bool,
        num_epochs: int,
        steps_per_epoch: int,
        total_steps: int,
        start_step: int,
        batch_size: int,
    ) -> None:
        self.is_main = is_main
        self.live = is_main and live_bars(progress)
        self.num_epochs, self.steps_per_epoch, self.total_steps = num_epochs, steps_per_epoch, total_steps
        self.batch_size = batch_size
        self.start_step, self.start_time = start_step, time.perf_counter()
        self.epoch_bar = auto_tqdm(
            total=num_epochs, initial=start_step // steps_per_epoch, desc="epochs", disable=not self.live
        )
        self._epoch_start, self._losses = self.start_time, []

    def step_bar(self, epoch: int, first: int, last: int) -> Any:
        """The bar of one epoch's steps ``first`` to ``last`` (disabled unless live); starts the epoch's clock."""
        self._epoch_start, self._losses = time.perf_counter(), []
        return auto_tqdm(
            total=last, initial=first, desc=f"epoch {epoch + 1}/{self.num_epochs}", leave=False, disable=not self.live
        )

    def record_step(self, loss: float) -> None:
        """Note one step's loss (the line shows the epoch's mean)."""
        self._losses.append(loss)

    def end_epoch(self, epoch: int, step: int, lr: float) -> None:
        """Advance the epochs bar and print the line of ``epoch`` (from 0), which ended at global ``step``."""
        self.epoch_bar.update(1)
        if not self.is_main or not self._losses:
            return
        now = time.perf_counter()
        seconds = now - self._epoch_start
        done = step - self.start_step
        left_s = (now - self.start_time) / max(done, 1) * (self.total_steps - step)
        line = format_epoch_line(
            epoch + 1,
            self.num_epochs,
            sum(self._losses) / len(self._losses),
            lr,
            len(self._losses) * self.batch_size / max(seconds, 1e-9),
            seconds,
            left_s,
        )
        if self.live:
            auto_tqdm.write(line, file=sys.stdout)
        else:
            print(line, file=sys.stdout, flush=True)

    def close(self) -> None:
        self.epoch_bar.close()
