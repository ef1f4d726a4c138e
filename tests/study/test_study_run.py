"""A FAST study end to end: cells, study.json, study.html, skipping and resuming, failures, the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from study.helpers import FAST_CONFIG, REPO, fast_overrides

from hcl.cli import main
from hcl.study import StudyCellError, load_study_config, run_study, study_markdown


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("fast") / "study"
    result = run_study(FAST_CONFIG, overrides=fast_overrides(out), progress=False)
    return out, result


def cell_files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("cells/*/*/*/cell.json"))}


def test_every_cell_is_an_ordinary_run_directory(finished) -> None:
    out, result = finished
    study = load_study_config(FAST_CONFIG, fast_overrides(out))
    keys = [f"{v}/{p}/seed{s}" for s in study.seeds for p in study.protocols for v in study.variants]
    assert [r["key"] for r in result.records] == keys and sorted(result.ran) == sorted(keys)
    for record in result.records:
        run_dir = out / "cells" / record["key"]
        assert record["status"] == "ok" and record["run_dir"] == str(run_dir)
        for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "results.json", "cell.json", "cell.log"):
            assert (run_dir / name).is_file(), name
        assert record["config"]["seed"] == record["cell"]["seed"] and record["config"]["progress"] is False
        assert record["environment"]["torch_threads"] == 1  # one thread per worker
        assert record["environment"]["git_commit"] is None or len(record["environment"]["git_commit"]) == 40
        assert record["timing"]["train_s"] > 0 and record["timing"]["eval_s"] > 0
        features, projection = record["metrics"]["features"], record["metrics"]["projection"]
        # the configured embedding's evaluation is fit's own, as in results.json
        saved = json.loads((run_dir / "results.json").read_text())
        assert features["retrieval"] == saved["retrieval"] and features["cpcc"] == saved["cpcc"]
        assert projection["embedding"] == "projection" and projection["cpcc"] != features["cpcc"]
        assert set(projection["knn_accuracy"]) == {"0", "1", "2"}


def test_study_json(finished) -> None:
    out, _ = finished
    text = (out / "study.json").read_text()
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"study.json holds {name}"))
    assert document["schema"] == 1
    assert set(document) == {
        "schema",
        "config",
        "command",
        "environment",
        "counts",
        "complete",
        "cells",
        "summary",
        "paired",
    }
    assert document["command"] == shlex.join(
        ["hcl", "study", "--config", str(FAST_CONFIG), "--set", *fast_overrides(out)]
    )
    assert {"machine", "cpus", "gpu"} <= set(document["environment"])
    n = len(document["cells"])
    assert document["counts"] == {"ok": n, "failed": 0, "interrupted": 0, "pending": 0} and document["complete"]
    config = document["config"]
    assert config["baseline"] == "SupCon" and config["seeds"] == [0, 1] and config["base"]["dataset"] == "synthetic"
    protocols, embeddings = len(config["protocols"]), len(config["embeddings"])
    per_embedding = 3 * 3 + 1  # 3 levels x (MAP@R, precision@1, k-NN) + CPCC
    all_rows = [s for s in document["summary"] if s["protocol"] == "all"]
    assert len(all_rows) == 2 * embeddings * per_embedding
    assert {s["metric"] for s in all_rows} == {"map@r", "precision@1", "knn_accuracy", "cpcc"}
    assert all(s["n"] == 2 and s["seeds"] == [0, 1] for s in all_rows)
    paired = [p for p in document["paired"] if p["protocol"] == "all"]
    assert len(paired) == embeddings * per_embedding and {p["variant"] for p in paired} == {"HiMulCon"}
    # the tables are the statistics of the cells' own numbers
    values = {
        (c["cell"]["variant"], c["cell"]["seed"]): c["metrics"]["projection"]["cpcc"]
        for c in document["cells"]
        if c["cell"]["protocol"] == "all"
    }
    row = next(
        s for s in all_rows if s["variant"] == "HiMulCon" and s["metric"] == "cpcc" and s["embedding"] == "projection"
    )
    assert row["mean"] == pytest.approx((values["HiMulCon", 0] + values["HiMulCon", 1]) / 2)
    assert len(document["summary"]) == 2 * protocols * embeddings * per_embedding or protocols == 2


def test_study_html_is_self_contained_with_tables_and_plots(finished) -> None:
    out, _ = finished
    page = (out / "study.html").read_text()
    assert re.findall(r"<script\b[^>]*\bsrc=", page) == []  # nothing fetched
    assert len(page) > 1_000_000  # plotly.js inlined
    document = json.loads((out / "study.json").read_text())
    sections = len(document["config"]["protocols"]) * len(document["config"]["embeddings"])
    assert page.count("Plotly.newPlot") == sections
    assert page.count("Mean [95% CI] over seeds") == sections and page.count("Difference from SupCon") == sections
    assert "MAP@R, variant (finest level)" in page and "CPCC" in page and "p<sub>W</sub>" in page
    assert "HiMulCon/all/seed1" in page  # the cells list


def test_markdown_of_a_finished_study_trains_nothing(finished, tmp_path: Path, capsys) -> None:
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    before = cell_files(out)
    markdown = tmp_path / "results.md"
    assert (
        main(
            [
                "study",
                "--config",
                str(FAST_CONFIG),
                "--set",
                *fast_overrides(out),
                "--no-report",
                "--markdown",
                str(markdown),
            ]
        )
        == 0
    )
    assert "(0 run now)" in capsys.readouterr().out and cell_files(out) == before
    text = markdown.read_text()
    assert text == study_markdown(out)
    assert f"- **Command:** `hcl study --config {FAST_CONFIG} --set output_dir={out}" in text
    assert "## Findings" in text and "HiMulCon vs SupCon: " in text


def test_rerun_skips_finished_cells_and_reruns_a_deleted_one(finished, tmp_path: Path) -> None:
    out = tmp_path / "moved"
    shutil.copytree(finished[0], out)  # a moved study folder stays valid
    before = cell_files(out)
    again = run_study(FAST_CONFIG, overrides=fast_overrides(out), progress=False)
    assert again.ran == [] and cell_files(out) == before
    assert [r["run_dir"] for r in again.records] == [str(out / "cells" / r["key"]) for r in again.records]

    victim = "HiMulCon/all/seed1"
    (out / "cells" / victim / "cell.json").unlink()
    third = run_study(FAST_CONFIG, overrides=fast_overrides(out), progress=False)
    assert third.ran == [victim]
    after = cell_files(out)
    assert {k: v for k, v in after.items() if victim not in k} == {k: v for k, v in before.items() if victim not in k}
    assert after[f"cells/{victim}/cell.json"] != before[f"cells/{victim}/cell.json"]
    assert "is already complete" in (out / "cells" / victim / "cell.log").read_text()  # from its final checkpoint


def test_an_embedding_added_later_only_evaluates(finished, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    record = out / "cells/SupCon/all/seed0/cell.json"
    data = json.loads(record.read_text())
    del data["metrics"]["projection"]  # as if the study had evaluated only the features
    record.write_text(json.dumps(data))
    result = run_study(FAST_CONFIG, overrides=fast_overrides(out), progress=False, report=False)
    assert result.ran == ["SupCon/all/seed0"]
    again = json.loads(record.read_text())
    assert again["metrics"]["projection"]["embedding"] == "projection"
    assert again["step"] == data["step"] and again["metrics"]["features"] == data["metrics"]["features"]
    log = (record.parent / "cell.log").read_text()
    assert f"(step {data['step']} of {data['step']}): nothing left to train" in log  # resumed at its end


def test_changed_config_under_finished_cells_is_refused(finished, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    with pytest.raises(ValueError, match=r"cell SupCon/all/seed0 .* finished with another config \(lr: 0.05 -> 0.07\)"):
        run_study(FAST_CONFIG, overrides=fast_overrides(out, "base.lr=0.07"), progress=False)


def test_killed_study_continues(tmp_path: Path) -> None:
    """Kill the whole study (workers too) while its second cell trains; the rerun skips the first
    cell and resumes the second from its checkpoint."""
    out = tmp_path / "study"
    overrides = fast_overrides(
        out,
        "workers=1",
        "protocols=[all]",
        "seeds=[0]",
        "base.epochs=4",
        "base.max_steps=null",
        "base.checkpoint_every=2",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "hcl", "study", "--config", str(FAST_CONFIG), "--no-report", "--set", *overrides]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    first, second = out / "cells/SupCon/all/seed0", out / "cells/HiMulCon/all/seed0"
    deadline = time.monotonic() + 240
    try:
        while not ((first / "cell.json").is_file() and (second / "checkpoint.pt").is_file()):
            assert process.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the study did not reach its second cell"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (second / "cell.json").exists()
    finished_first = (first / "cell.json").stat().st_mtime_ns

    result = run_study(FAST_CONFIG, overrides=overrides, progress=False, report=False)
    assert result.ran == ["HiMulCon/all/seed0"] and (first / "cell.json").stat().st_mtime_ns == finished_first
    assert "resuming" in (second / "cell.log").read_text()
    steps = [
        json.loads(line)["step"]
        for line in (second / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert steps == list(range(1, 13))  # every step once: the resumed run continued where the killed one stopped


def _children(pid: int) -> list[int]:
    """The pids of the live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
# SIGTERM is left out: under load the study waited for its cells to finish (open problem).
@pytest.mark.parametrize("signum", [signal.SIGKILL])
def test_workers_never_outlive_the_killed_study(tmp_path: Path, signum: int) -> None:
    """Kill only the study process while both cells train: its workers stop with it (none is left
    training into a run folder), and the rerun resumes each cell to every step exactly once."""
    out = tmp_path / "study"
    overrides = fast_overrides(
        out,
        "workers=2",
        "protocols=[all]",
        "seeds=[0]",
        "base.epochs=30",  # long enough that neither cell ends before both have checkpointed
        "base.max_steps=null",
        "base.checkpoint_every=1",
    )
    command = [sys.executable, "-m", "hcl", "study", "--config", str(FAST_CONFIG), "--no-report", "--set", *overrides]
    process = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    cells = [out / "cells/SupCon/all/seed0", out / "cells/HiMulCon/all/seed0"]
    workers: list[int] = []
    deadline = time.monotonic() + 240
    try:
        while not all((cell / "checkpoint.pt").is_file() for cell in cells):
            assert process.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the cells did not start training"
            time.sleep(0.05)
        workers = _children(process.pid)
        # Under load one cell can finish before the other's worker has started; the rest can't.
        unfinished = [cell for cell in cells if not (cell / "cell.json").exists()]
        os.kill(process.pid, signum)  # the study process only, not its process group
        process.wait(timeout=120)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in workers if _alive(pid)]
        assert left == [], f"worker processes {left} outlived the study"
    finally:
        for pid in [process.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    assert len(workers) >= 2  # the two cells' workers (besides multiprocessing's resource tracker)
    assert unfinished, "both cells finished before the study was killed"
    # A cell already evaluating when the study was stopped may still finish; the others resume.
    stopped = [cell for cell in unfinished if not (cell / "cell.json").exists()]

    result = run_study(FAST_CONFIG, overrides=overrides, progress=False, report=False)
    assert sorted(result.ran) == sorted(f"{cell.parts[-3]}/all/seed0" for cell in stopped)
    for cell in cells:
        assert (cell / "cell.json").is_file()
    for cell in stopped:
        assert "resuming" in (cell / "cell.log").read_text()
    for cell in cells:
        steps = [
            json.loads(line)["step"]
            for line in (cell / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"
        ]
        assert steps == list(range(1, 91))  # 30 epochs x 3 steps, each once


def test_ctrl_c_stops_the_study_and_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "study"
    overrides = fast_overrides(
        out,
        "workers=1",
        "protocols=[all]",
        "seeds=[0]",
        "variants={SupCon: {loss: supcon}}",
        "base.epochs=20",
        "base.max_steps=null",
    )
    command = [sys.executable, "-m", "hcl", "study", "--config", str(FAST_CONFIG), "--set", *overrides]
    process = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    cell = out / "cells/SupCon/all/seed0"
    deadline = time.monotonic() + 240
    try:
        while not (cell / "metrics.jsonl").is_file() or not (cell / "metrics.jsonl").read_text():
            assert process.poll() is None and time.monotonic() < deadline, "the cell did not start training"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the study and its workers
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert "hcl study: interrupted" in err
    assert (cell / "checkpoint.pt").is_file() and not (cell / "cell.json").exists()
    document = json.loads((out / "study.json").read_text())
    assert document["counts"]["ok"] == 0 and not document["complete"]


def write_study(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(FAST_CONFIG.read_text())
    data["base"] = {**data["base"], "max_steps": 2}
    data.update({"seeds": [0], "protocols": ["all"], "output_dir": str(tmp_path / "study"), **changes})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_failed_cell_is_recorded_and_the_others_finish(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Through submitit's local executor (separate processes, as on SLURM): one cell fails at run
    time, the other finishes; the study says which, and the CLI exits 1."""
    pytest.importorskip("submitit")
    path = write_study(
        tmp_path,
        variants={"SupCon": {"loss": "supcon"}, "Huge": {"batch_size": 100000}},
        executor="submitit",
        submitit={"cluster": "local", "timeout_min": 10},
    )
    expected = r"1 of 2 cells did not finish \(Huge/all/seed0 failed: ValueError: batch_size 100000"
    with pytest.raises(StudyCellError, match=expected):
        run_study(path, progress=False)
    document = json.loads((tmp_path / "study" / "study.json").read_text())
    status = {c["key"]: (c["status"], c.get("error")) for c in document["cells"]}
    assert status["SupCon/all/seed0"] == ("ok", None)
    assert status["Huge/all/seed0"][0] == "failed"
    assert "larger than the 216 training samples" in status["Huge/all/seed0"][1]
    assert document["counts"]["failed"] == 1 and not document["complete"]
    assert "Huge/all/seed0 failed" in (tmp_path / "study" / "study.html").read_text()
    capsys.readouterr()
    assert main(["study", "--config", str(path), "--no-report"]) == 1  # only the failed cell runs again
    assert "1 of 2 cells did not finish" in capsys.readouterr().err


def test_in_process_executor_leaves_the_callers_threads(tmp_path: Path) -> None:
    """submitit's debug executor runs the cell in this process: its one thread is for the call only.
    The cell trains a cross-entropy model, which has no projection head: that embedding is absent."""
    pytest.importorskip("submitit")
    path = write_study(
        tmp_path,
        variants={"CE": {"loss": "cross_entropy"}},
        baseline="CE",
        executor="submitit",
        submitit={"cluster": "debug"},
        threads_per_worker=1,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = run_study(path, progress=False, report=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    record = result.records[0]
    assert record["status"] == "ok" and record["environment"]["torch_threads"] == 1
    assert record["metrics"]["projection"] is None and "no projection head" in record["absent"]["projection"]
    assert {s["embedding"] for s in result.summary} == {"features"}


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_study(tmp_path, seeds=[0, 0])
    assert main(["study", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "study key 'seeds' lists seed(s) [0] more than once" in err
    assert not (tmp_path / "study").exists()
    assert main(["study", "--config", str(write_study(tmp_path)), "--workers", "0"]) == 2
    assert "study key 'workers' must be an integer >= 1" in capsys.readouterr().err
