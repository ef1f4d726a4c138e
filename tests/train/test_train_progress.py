"""What training prints: one plain line per epoch, and live bars only on a terminal."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from train.tiny import tiny_config

from hcl.train import fit
from hcl.train.progress import format_epoch_line, live_bars

LINE = re.compile(r"^epoch (\d+)/(\d+)  loss (\d+\.\d{4})  lr (\S+)  (\d+) img/s  (\d+\.\d)s  left (\d\d:\d\d:\d\d)$")


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _fit_capturing(cfg, stderr: io.StringIO) -> tuple[str, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        fit(cfg)
    return stdout.getvalue(), stderr.getvalue()


@pytest.mark.parametrize("progress", [True, False])
def test_a_piped_run_prints_one_plain_line_per_epoch(tmp_path: Path, progress: bool) -> None:
    out, err = _fit_capturing(tiny_config(tmp_path, epochs=3, progress=progress), io.StringIO())
    lines = out.splitlines()
    assert len(lines) == 3, out
    for k, line in enumerate(lines, start=1):
        match = LINE.match(line)
        assert match is not None, line
        assert (int(match[1]), int(match[2])) == (k, 3)
    assert re.match(r"^epoch 3/3 .* left 00:00:00$", lines[-1])
    for text in (out, err):
        assert "\r" not in text and "\x1b" not in text


def test_the_line_shows_the_epochs_mean_loss_and_last_lr(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, epochs=2)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        result = fit(cfg)
    steps = len(result.history) // 2
    first = LINE.match(stdout.getvalue().splitlines()[0])
    assert first is not None
    assert float(first[3]) == pytest.approx(sum(result.history[:steps]) / steps, abs=1e-4)


def test_on_a_terminal_the_bars_are_live_and_stdout_still_gets_the_lines(tmp_path: Path) -> None:
    out, err = _fit_capturing(tiny_config(tmp_path, epochs=2, progress=True), _Terminal())
    assert "\r" in err  # tqdm redrew its bars on the (pretend) terminal
    assert [LINE.match(line) is not None for line in out.splitlines()] == [True, True]
    assert "\r" not in out and "\x1b" not in out


def test_live_bars_need_progress_and_a_terminal() -> None:
    with contextlib.redirect_stderr(_Terminal()):
        assert live_bars(True) and not live_bars(False)
    with contextlib.redirect_stderr(io.StringIO()):
        assert not live_bars(True)


def test_format_epoch_line() -> None:
    line = format_epoch_line(3, 10, 4.21734, 0.0421, 1234.4, 12.34, 86.0)
    assert line == "epoch 3/10  loss 4.2173  lr 0.0421  1234 img/s  12.3s  left 00:01:26"
    assert format_epoch_line(1, 2, 1.0, 0.1, 1.0, 1.0, 90061.0).endswith("left 1d 01:01:01")
