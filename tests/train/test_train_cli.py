"""The command line: train, evaluate, embed, info, demo, and one-line errors naming the problem."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hcl import Hierarchy
from hcl.cli import main

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTHETIC = {"depth": 3, "branching": [2, 2, 3], "samples_per_leaf": 8, "image_size": 16, "cache": False}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run trained and evaluated through ``hcl train``."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "quick.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": "synthetic",
                "data_options": SYNTHETIC,
                "backbone": "compact_cnn",
                "width": 8,
                "embedding_dim": 16,
                "batch_size": 32,
                "epochs": 1,
                "progress": False,
                "output_dir": "unused",
            }
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    status = main(["train", "--config", str(config), "--set", f"output_dir={root / 'run'}", "loss=himulcon"])
    torch.set_num_threads(threads)
    assert status == 0
    return root / "run"


def test_train_writes_the_run_directory_contract(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert {p.name for p in trained_run.iterdir()} >= {
        "config.json",
        "hierarchy.json",
        "checkpoint.pt",
        "metrics.jsonl",
        "results.json",
        "embeddings_test.npz",
    }
    assert json.loads((trained_run / "config.json").read_text())["loss"] == "himulcon"
    kinds = [json.loads(line)["kind"] for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["train", "eval"]
    eval_line = json.loads((trained_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(eval_line) == {"kind", "epoch", "step", "retrieval", "cpcc"}
    assert set(eval_line["retrieval"]) == {"0", "1", "2"}


def test_evaluate_writes_results_per_level(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (trained_run / "results.json").unlink()
    assert main(["evaluate", str(trained_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "map@r" in out and "cpcc" in out and "family" in out
    assert out.splitlines()[0].split() == ["level", "metric", "HiMulCon"]
    results = json.loads((trained_run / "results.json").read_text())
    assert results["levels"] == ["family", "class", "variant"] and results["split"] == "test"
    assert results["step"] == 3 and results["num_samples"] == 96
    for level in ("0", "1", "2"):
        metrics = results["retrieval"][level]
        assert {"precision@1", "recall@1", "recall@5", "recall@10", "r_precision", "map@r"} <= set(metrics)
        assert 0.0 <= metrics["map@r"] <= 1.0
        assert 0.0 <= results["knn_accuracy"][level] <= 1.0
    assert -1.0 <= results["cpcc"] <= 1.0


def test_embed_writes_npz(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.npz"
    assert main(["embed", str(trained_run), "--split", "test", "--out", str(out), "--which", "projection"]) == 0
    with np.load(out, allow_pickle=False) as data:
        embeddings, labels, indices = data["embeddings"], data["labels"], data["indices"]
        hierarchy = Hierarchy.from_dict(json.loads(str(data["hierarchy"])))
    assert embeddings.dtype == np.float32 and embeddings.shape == (96, 16)
    assert labels.dtype == np.int64 and labels.shape == (96, 3)
    np.testing.assert_array_equal(indices, np.arange(96))
    assert hierarchy.level_names == ["family", "class", "variant"]
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_errors_are_one_line_and_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: synthetic\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown config key 'learning_rate'" in capsys.readouterr().err
    assert main(["train", "--set", "epochs=many"]) == 2
    assert "config key 'epochs' must be int" in capsys.readouterr().err
    assert (
        main(["train", "--set", f"output_dir={tmp_path / 'x'}", "dataset=cifar100", f"data_root={tmp_path / 'nope'}"])
        == 2
    )
    assert "data_root" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_a_leftover_data_option_is_named_and_leaves_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "synthetic.yaml"
    config.write_text(yaml.safe_dump({"dataset": "synthetic", "data_options": SYNTHETIC, "progress": False}))
    run = tmp_path / "runs" / "new" / "run"
    assert main(["train", "--config", str(config), "--set", f"output_dir={run}", "dataset=cifar100"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "config key 'data_options' holds 'branching', 'cache', 'depth', 'image_size', 'samples_per_leaf'" in err
    assert "dataset 'cifar100' does not take (it takes download, subset, unseen_classes, levels)" in err
    assert "--set data_options={}" in err
    # The folders this call created are gone; the one that was there before stays.
    assert not (tmp_path / "runs").exists() and tmp_path.is_dir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "keep.txt").write_text("not empty")
    assert main(["train", "--config", str(config), "--set", f"output_dir={run}", "dataset=cifar100"]) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["keep.txt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_evaluate_on_cuda_without_a_gpu_says_so(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for device in ("cuda", "cuda:1"):
        assert main(["evaluate", str(trained_run), "--device", device]) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"hcl evaluate: error: device {device!r} was requested but this machine has no usable CUDA GPU; use cpu or auto\n"
        )
    assert main(["embed", str(trained_run), "--device", "gpu"]) == 2
    assert "device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'" in capsys.readouterr().err


def test_info_and_python_dash_m(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["info"]) == 0
    assert f"torch {torch.__version__}" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["hcl", "train", "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("hcl", run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--set KEY=VALUE" in out and "config keys:" in out and "head_norm" in out


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_demo_on_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped demo configs: three losses, both embeddings, the tables printed and written."""
    overrides = ["train_subset=256", "eval_subset=200", "epochs=1", "batch_size=64", "width=4", "progress=false"]
    assert main(["demo", "--out", str(tmp_path), "--set", *overrides, "--no-report"]) == 0
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["levels"] == ["group", "category", "class"] and summary["level_sizes"] == [2, 6, 10]
    assert list(summary["runs"]) == ["supcon", "himulcon", "himulcone"]
    names = [run["name"] for run in summary["runs"].values()]
    assert names == ["SupCon", "HiMulCon", "HiMulConE (hinge, beta=0.5)"]  # the shipped config's reading
    for run in summary["runs"].values():
        for which in ("features", "projection"):
            metrics = run["embeddings"][which]
            assert set(metrics["retrieval"]) == set(metrics["knn_accuracy"]) == set(summary["levels"])
            assert {"precision@1", "recall@1", "map@r"} <= set(metrics["retrieval"]["group"])
            assert np.isfinite(metrics["cpcc"])
        assert (Path(run["run_dir"]) / "checkpoint.pt").is_file()
    printed = capsys.readouterr().out
    # One plain line per epoch of each run (stdout is not a terminal here), then the table.
    log, table = printed.split("Written by `hcl demo`", 1)
    assert "Written by `hcl demo`" + table == (tmp_path / "demo_table.md").read_text()
    assert [line.split("  ")[0] for line in log.splitlines()] == ["epoch 1/1"] * 3
    assert "**Backbone features**" in printed and "**Projection head output**" in printed
    assert "| level | metric | SupCon | HiMulCon | HiMulConE (hinge, beta=0.5) |" in printed
    assert f"{summary['threads']} torch threads" in printed


def test_warnings_are_one_line_like_the_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    import hcl.cli

    monkeypatch.setitem(
        hcl.cli._COMMANDS, "train", lambda args: warnings.warn("resuming from the previous one", stacklevel=1) or 0
    )
    assert main(["train"]) == 0
    assert capsys.readouterr().err == "hcl train: warning: resuming from the previous one\n"
    shown = warnings.showwarning
    main(["train"])
    assert warnings.showwarning is shown  # the caller's hook is back after the command
