"""Exact resume under every thread setting: ``OMP_NUM_THREADS=1``, 2 threads and the default.

For each setting a fresh interpreter (:mod:`reliability.thread_resume`) trains the synthetic set
once uninterrupted and once with 6 SIGKILLs at random steps and inside checkpoint writes (a torn
temporary file, a complete one before its rename, right after the rename), resuming after each.
The final model, optimizer, scaler and RNG state and every logged loss must equal the
uninterrupted run's bit for bit, and every training process must end with the thread count it
started with, the setting's.

numba's OpenMP pool used to raise torch from 1 thread to 2 at the first loss call, so an
uninterrupted run did its first step on one thread and the rest on two, and each resumed process
its first step after the resume on one (hcl/losses/_compiled.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The setting's environment, and the thread count every training process must keep (None: torch's
# default for the machine, whatever it is, as long as it does not change).
TESTS_DIR = Path(__file__).resolve().parents[1]
SETTINGS = {"omp-1": ({"OMP_NUM_THREADS": "1"}, 1), "omp-2": ({"OMP_NUM_THREADS": "2"}, 2), "default": ({}, None)}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_sigkill_and_resume_is_exact_under_each_thread_setting(tmp_path: Path, setting: str, cases) -> None:
    extra, expected_threads = SETTINGS[setting]
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    environment.update(extra)
    environment["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent), *sys.path])
    seed = 2022 + list(SETTINGS).index(setting)
    result = subprocess.run(
        [sys.executable, "-m", "reliability.thread_resume", str(tmp_path), str(seed)],
        env=environment,
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.splitlines()[-1])

    kills = report["kills"]
    assert len(kills) >= 5 and {"torn_write", "before_rename", "after_rename"} <= {k["point"] for k in kills}
    assert len({k["resumed_at"] for k in kills}) >= 3, kills  # the kills landed at different steps
    # Every process ends with the thread count it started with, the setting's.
    threads = report["threads"]
    assert threads[0] == [threads[0][0]] * 2 and threads[-1] == [threads[0][0]] * 2, threads
    assert {n for counts in threads for n in counts} == {expected_threads or threads[0][0]}, threads
    assert report["different"] == [], f"after {kills}: {report['different']} differ from the uninterrupted run"
    assert report["logged_steps"] == list(range(1, report["steps"] + 1))
    cases.add("training.sigkill_threads", setting, len(kills))
