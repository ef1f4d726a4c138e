"""A run directory under damage: the previous checkpoint as a fallback, resumes that refuse
instead of erasing history, and one-line errors naming the file for what the audit found.

Every case goes through ``hcl train`` (the command line) where the audit saw a traceback, and
checks the exit status, that the error is one line naming the file (and line), and that a
refused resume left every file of the run byte for byte as it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from train.tiny import tiny_config

from hcl.cli import main as cli_main
from hcl.train import TrainConfig, fit, load_checkpoint, save_checkpoint, save_config

# 96 training images at batch size 32: 3 steps an epoch; a checkpoint every step.
STEPS = 6


def _config(run_dir: Path, **changes: Any) -> TrainConfig:
    return tiny_config(run_dir.parent, run_dir.name, **{"checkpoint_every": 1, "max_steps": STEPS, **changes})


class _Crash(Exception):
    pass


def _crash_after(step: int):  # type: ignore[no-untyped-def]
    def on_step(done: int, model: Any, loss: float) -> None:
        if done == step:
            raise _Crash(step)

    return on_step


def _snapshot(run_dir: Path) -> dict[str, bytes | None]:
    """Every file of the run directory, by name, with its bytes (None for a folder)."""
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in sorted(run_dir.iterdir())}


def _cli_train(tmp_path: Path, cfg: TrainConfig, *args: str) -> int:
    config = tmp_path / f"{Path(cfg.output_dir).name}.json"
    save_config(cfg, config)
    return cli_main(["train", "--config", str(config), *args])


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("hcl train: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def finished_run(tmp_path: Path, one_thread: None) -> Path:
    """A run trained to the end and evaluated: config, hierarchy, log, checkpoints, results, embeddings."""
    run_dir = tmp_path / "run"
    fit(_config(run_dir, eval_every=0))
    return run_dir


def test_each_checkpoint_keeps_the_one_before_it(finished_run: Path, cases) -> None:
    latest, previous = (
        load_checkpoint(finished_run / "checkpoint.pt"),
        load_checkpoint(finished_run / "checkpoint.prev.pt"),
    )
    assert (latest["step"], previous["step"]) == (STEPS, STEPS - 1)
    assert (finished_run / "checkpoint.pt").stat().st_ino != (finished_run / "checkpoint.prev.pt").stat().st_ino
    assert not list(finished_run.glob(".*.tmp"))
    cases.add("run_dir.previous_checkpoint", "kept")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _empty_rng(path: Path) -> None:
    save_checkpoint({**load_checkpoint(path), "rng": {}}, path)


def _wrong_rng(path: Path) -> None:
    state = load_checkpoint(path)
    save_checkpoint({**state, "rng": {**state["rng"], "torch": torch.zeros(3, dtype=torch.uint8)}}, path)


def _remove(path: Path) -> None:
    path.unlink()


DAMAGES = {"truncated": _truncate, "bit-flip": _flip_a_bit, "rng-empty": _empty_rng, "rng-wrong": _wrong_rng}


@pytest.mark.parametrize("damage", [*DAMAGES, "missing"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_and_resumes_exactly(
    tmp_path: Path, damage: str, one_thread: None, cases
) -> None:
    straight = fit(_config(tmp_path / "straight"))
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        fit(_config(run_dir), on_step=_crash_after(4))
    assert load_checkpoint(run_dir / "checkpoint.prev.pt")["step"] == 3
    latest = run_dir / "checkpoint.pt"
    {**DAMAGES, "missing": _remove}[damage](latest)
    with pytest.warns(UserWarning) as warned:
        resumed = fit(_config(run_dir), resume=True)
    message = " ".join(str(w.message) for w in warned)
    assert str(latest) in message and f"previous checkpoint {run_dir / 'checkpoint.prev.pt'}" in message, message
    # Resumed at step 3 (the previous checkpoint), then bit for bit the uninterrupted run.
    assert resumed.step == STEPS and resumed.history == straight.history[3:]
    assert torch.equal(
        torch.cat([t.flatten() for t in resumed.model.state_dict().values()]),
        torch.cat([t.flatten() for t in straight.model.state_dict().values()]),
    )
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in lines] == straight.history
    assert load_checkpoint(latest)["step"] == STEPS and load_checkpoint(run_dir / "checkpoint.prev.pt")["step"] == 5
    cases.add("run_dir.damaged_latest_checkpoint", "recovered")


def _both(damage):  # type: ignore[no-untyped-def]
    def apply(run_dir: Path) -> Path:
        damage(run_dir / "checkpoint.pt")
        damage(run_dir / "checkpoint.prev.pt")
        return run_dir / "checkpoint.pt"

    return apply


def _directory_instead(run_dir: Path) -> Path:
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "checkpoint.prev.pt").unlink()
    (run_dir / "checkpoint.pt").mkdir()
    return run_dir / "checkpoint.pt"


def _past_the_schedule(run_dir: Path) -> Path:
    path = run_dir / "checkpoint.pt"
    save_checkpoint({**load_checkpoint(path), "step": 10**6}, path)
    (run_dir / "checkpoint.prev.pt").unlink()
    return path


def _log_line(content: bytes):  # type: ignore[no-untyped-def]
    def apply(run_dir: Path) -> Path:
        path = run_dir / "metrics.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:1] + [content + b"\n"] + lines[2:]))
        return path

    return apply


# name -> (damage, returning the file the error must name; what the error says)
REFUSALS = {
    "no-checkpoint": (_both(_remove), r"no checkpoint: neither .*checkpoint\.pt nor .*checkpoint\.prev\.pt exists"),
    "both-truncated": (_both(_truncate), r"no loadable checkpoint: cannot read checkpoint"),
    "both-rng-empty": (_both(_empty_rng), r"its random-number-generator state 'rng' lacks 'python'"),
    "directory": (_directory_instead, r"checkpoint is not a file: .*checkpoint\.pt"),
    "past-the-schedule": (_past_the_schedule, r"is at step 1000000, outside this run's schedule of 6 steps"),
    "log-list": (
        _log_line(b"[1, 2]"),
        r"metrics\.jsonl:2: malformed metrics record \(expected a JSON object, got list\)",
    ),
    "log-number": (_log_line(b"42"), r"metrics\.jsonl:2: malformed metrics record \(expected a JSON object, got int\)"),
    "log-step": (_log_line(b'{"kind": "train", "step": "two"}'), r"metrics\.jsonl:2: .*'step' must be a number"),
    "log-latin-1": (_log_line(b'{"kind": "caf\xe9"}'), r"metrics\.jsonl:2: not UTF-8 text"),
    "log-utf-16": (_log_line('{"step": 2}'.encode("utf-16")), r"metrics\.jsonl:2: not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_resume_that_cannot_go_on_is_refused_and_changes_nothing(
    finished_run: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], cases
) -> None:
    damage, message = REFUSALS[case]
    named = damage(finished_run)
    before = _snapshot(finished_run)
    assert {"config.json", "hierarchy.json", "metrics.jsonl", "results.json", "embeddings_test.npz"} <= set(before)
    capsys.readouterr()
    assert _cli_train(tmp_path, _config(finished_run, eval_every=0), "--resume") == 2
    err = _one_line_error(capsys)
    assert re.search(message, err) and str(named) in err, err
    assert _snapshot(finished_run) == before, "a refused resume changed the run directory"
    cases.add("run_dir.refused_resume", "rejected")


def test_overwrite_is_the_way_to_start_afresh(finished_run: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _both(_remove)(finished_run)
    assert _cli_train(tmp_path, _config(finished_run, eval_every=-1), "--resume") == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert _cli_train(tmp_path, _config(finished_run, eval_every=-1), "--overwrite") == 0
    assert load_checkpoint(finished_run / "checkpoint.pt")["step"] == STEPS
    assert not (finished_run / "results.json").exists()  # the earlier run's evaluation is gone with it


@pytest.mark.parametrize("holding", ["absent", "empty", "a-cell-log"])
def test_resume_starts_fresh_where_there_is_no_run_at_all(tmp_path: Path, holding: str, one_thread: None) -> None:
    """What the study does for a cell it has not started (its folder may hold its cell.log)."""
    run_dir = tmp_path / "cell"
    if holding != "absent":
        run_dir.mkdir()
    if holding == "a-cell-log":
        (run_dir / "cell.log").write_text("started\n")
    assert fit(_config(run_dir), resume=True).step == STEPS


def test_resume_with_overwrite_restarts_a_run_killed_before_its_first_checkpoint(
    tmp_path: Path, one_thread: None
) -> None:
    run_dir = tmp_path / "cell"
    with pytest.raises(_Crash):
        fit(_config(run_dir, checkpoint_every=0), on_step=_crash_after(1))
    assert (run_dir / "metrics.jsonl").read_text() and not (run_dir / "checkpoint.pt").exists()
    with pytest.raises(FileNotFoundError, match="cannot resume .*: no checkpoint"):
        fit(_config(run_dir, checkpoint_every=0), resume=True)
    assert fit(_config(run_dir, checkpoint_every=0), resume=True, overwrite=True).step == STEPS


def test_a_full_disk_during_a_checkpoint_write_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None, cases, fill_the_disk: Callable[[], None]
) -> None:
    fill_the_disk()
    run_dir = tmp_path / "run"
    # Exit 2, as for bad input: the user must free space before a rerun; one line naming the file.
    assert _cli_train(tmp_path, _config(run_dir)) == 2
    err = _one_line_error(capsys)
    assert f"cannot write checkpoint {run_dir / 'checkpoint.pt'}: No space left on device" in err, err
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 2 and not list(run_dir.glob(".*.tmp"))
    cases.add("run_dir.full_disk_mid_write", "rejected")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", r"config file .*c\.yaml is not UTF-8 text"),
        ("lr: 0.1\n".encode("utf-16"), r"config file .*c\.yaml is not UTF-8 text"),
        (b"lr: 0.1\x00\n", r"cannot parse config file .*c\.yaml: unacceptable character #x0000"),
        (
            b"lr: 0.1\nepochs: 2\nlr: 0.2\n",
            r"cannot parse config file .*c\.yaml: .*c\.yaml:3:1: key 'lr' is given twice",
        ),
        (b"lr: [0.1\n", r"cannot parse config file .*c\.yaml: .*c\.yaml:2:1: expected ',' or ']'"),
        (b"lr: .nan\n", r"config key 'lr' must be a finite number, got nan"),
        (b"warmup_epochs: .inf\n", r"config key 'warmup_epochs' must be a finite number, got inf"),
        (b"epochs: 1000000000000\n", r"config key 'epochs' must be <= 1000000"),
    ],
    ids=["binary", "utf-16", "nul", "duplicate-key", "unclosed", "nan", "inf", "huge-epochs"],
)
def test_a_bad_config_file_is_one_line_naming_it(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str], cases
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert cli_main(["train", "--config", str(path), "--set", f"output_dir={tmp_path / 'run'}"]) == 2
    err = _one_line_error(capsys)
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()
    cases.add("files.config", "rejected")


def test_set_takes_exponent_floats(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    cfg = _config(tmp_path / "run", max_steps=1)
    config = tmp_path / "c.json"
    save_config(cfg, config)
    assert cli_main(["train", "--config", str(config), "--set", "lr=1e-3", "weight_decay=5E-4"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["lr"], saved["weight_decay"]) == (0.001, 0.0005)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_free_space_check_covers_two_checkpoints_and_the_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str, one_thread: None, cases
) -> None:
    measured = tmp_path / "measured"
    fit(_config(measured, optimizer=optimizer, eval_every=0))
    checkpoint = max((measured / name).stat().st_size for name in ("checkpoint.pt", "checkpoint.prev.pt"))
    embeddings = (measured / "embeddings_test.npz").stat().st_size
    peak = 2 * checkpoint + embeddings  # the last checkpoint is written beside the previous, after the embeddings

    class Disk:
        free = peak - 1

    monkeypatch.setattr("hcl.train.faults.shutil.disk_usage", lambda path: Disk())
    run_dir = tmp_path / "run"
    with pytest.raises(OSError, match=r"MiB free, but the run needs about ([\d.]+) MiB") as info:
        fit(_config(run_dir, optimizer=optimizer, eval_every=0))
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.jsonl").exists()
    needed = float(re.search(r"needs about ([\d.]+) MiB", str(info.value)).group(1)) * 2**20
    assert peak <= needed <= peak + 4 * 2**20, (peak, needed)  # covers the peak, without asking for far more
    Disk.free = int(needed) + 2**20
    assert fit(_config(run_dir, optimizer=optimizer, eval_every=0)).step == STEPS
    cases.add("run_dir.free_space", "rejected")
