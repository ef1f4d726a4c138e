"""Counting for the reliability suite: how many cases each target was tried with, and how they ended.

Every fuzz or fault test records its cases through the session-scoped ``cases`` fixture
(session-scoped so that hypothesis accepts it). At the end of the session the totals are printed
in pytest's summary and, when ``HCL_RELIABILITY_REPORT`` names a file, written there as JSON;
docs/reliability.md quotes those figures.
"""

from __future__ import annotations

import errno
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# target -> outcome -> count, e.g. {"losses.paper": {"value": 812, "rejected": 95}}.
_COUNTS: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))

# Outcomes that count as "a bad input, cleanly refused" in the summary.
REJECTED = "rejected"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """In-process runs on one torch thread, like the forked ones (the shared CPU prefers it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it to make the third checkpoint write from then on fail with ENOSPC halfway, after
    writing a few bytes (``monkeypatch.undo()`` ends it)."""
    real_save = torch.save
    calls = [0]

    def disk_fills_up(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == 3:
            handle.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, handle, *args, **kwargs)

    return lambda: monkeypatch.setattr("hcl.train.checkpoint.torch.save", disk_fills_up)


class CaseLog:
    """Records one outcome per tried case: ``cases.add("losses.paper", "value")``."""

    def add(self, target: str, outcome: str, count: int = 1) -> None:
        _COUNTS[target][outcome] += count

    def total(self, target: str) -> int:
        return sum(_COUNTS[target].values())


@pytest.fixture(scope="session")
def cases() -> CaseLog:
    return CaseLog()


def summary() -> dict[str, dict[str, int]]:
    """A JSON-ready copy of the counts, targets sorted."""
    return {target: dict(sorted(outcomes.items())) for target, outcomes in sorted(_COUNTS.items())}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = summary()
    if not counts:
        return
    terminalreporter.section("reliability: cases tried")
    for target, outcomes in counts.items():
        detail = ", ".join(f"{name} {n}" for name, n in outcomes.items())
        terminalreporter.write_line(f"{target:<34} {sum(outcomes.values()):>7}  ({detail})")
    total = sum(sum(o.values()) for o in counts.values())
    rejected = sum(o.get(REJECTED, 0) for o in counts.values())
    terminalreporter.write_line(f"{'total':<34} {total:>7}  (bad inputs cleanly rejected: {rejected})")
    report = os.environ.get("HCL_RELIABILITY_REPORT")
    if report:
        Path(report).write_text(json.dumps(counts, indent=1) + "\n")
