"""The demo: three losses, both embeddings, metrics.json and demo_table.md telling the same numbers,
and the README block written from the table, never by hand. Trained on the synthetic set here (the
Fashion-MNIST run is ``train/test_train_cli.py::test_demo_on_a_tiny_budget``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

import hcl
from hcl.cli import main
from hcl.demo import (
    DEMO_LOSSES,
    README_BLOCK,
    RESULTS_FILE,
    TABLE_FILE,
    demo_results,
    demo_table,
    find_configs_dir,
    find_project_folder,
    run_demo,
    run_name,
)
from hcl.textblock import read_marked_block
from hcl.train import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = {"depth": 3, "branching": [2, 2, 3], "samples_per_leaf": 8, "image_size": 16, "cache": False}
METRIC_LABELS = {"precision@1": "precision@1", "MAP@R": "map@r"}


def write_configs(folder: Path, **changes) -> Path:
    """Demo configs on the synthetic set, named as the demo expects; ``changes``: {loss: {key: value}}."""
    folder.mkdir(parents=True, exist_ok=True)
    for loss in DEMO_LOSSES:
        config = {
            "dataset": "synthetic",
            "data_options": SYNTHETIC,
            "backbone": "compact_cnn",
            "width": 4,
            "embedding_dim": 8,
            "head_norm": True,
            "batch_size": 32,
            "epochs": 1,
            "progress": False,
            "loss": loss,
            "output_dir": "unused",
        }
        if loss == "himulcone":
            config["bound_gradient"] = False
        config.update(changes.get(loss, {}))
        (folder / f"fashion_mnist_{loss}.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("demo")
    printed = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_demo(
            root / "out", configs_dir=write_configs(root / "configs"), report=False, print_table=printed.append
        )
    finally:
        torch.set_num_threads(threads)
    return root / "out", summary, printed[0]


def parse_tables(text: str) -> dict[str, dict[tuple[str, str], list[str]]]:
    """{embedding: {(level, metric): [cell per run]}} and {"columns": ...} from demo_table.md."""
    tables: dict[str, dict] = {}
    which = None
    for line in text.splitlines():
        if line.startswith("**"):
            which = line.split("`embedding: ")[1].rstrip("`)")
            tables[which] = {}
        elif line.startswith("| level |"):
            tables[which]["columns"] = [c.strip() for c in line.strip("|").split("|")[2:]]
        elif line.startswith("| ") and which is not None:
            level, metric, *values = (c.strip() for c in line.strip("|").split("|"))
            tables[which][level, metric] = values
    return tables


def test_metrics_json_holds_three_runs_and_both_embeddings(demo) -> None:
    out, summary, _ = demo
    assert json.loads((out / "metrics.json").read_text()) == summary
    assert list(summary["runs"]) == ["supcon", "himulcon", "himulcone"]
    assert [run["name"] for run in summary["runs"].values()] == ["SupCon", "HiMulCon", "HiMulConE (pair_held)"]
    assert summary["embeddings"] == ["features", "projection"] and summary["threads"] == 1
    assert summary["level_sizes"] == [2, 4, 12] and summary["seconds_total"] >= summary["seconds_train_and_evaluate"]
    assert {"git_commit", "git_dirty"} <= set(summary["provenance"])
    for loss, run in summary["runs"].items():
        assert (Path(run["run_dir"]) / "checkpoint.pt").is_file() and run["absent"] == {}
        features, projection = run["embeddings"]["features"], run["embeddings"]["projection"]
        assert projection["cpcc"] != features["cpcc"], loss
        assert set(features["retrieval"]) == set(projection["knn_accuracy"]) == set(summary["levels"])
        # the features are the run's own evaluation, as in its results.json
        saved = json.loads((Path(run["run_dir"]) / "results.json").read_text())
        assert saved["embedding"] == "features" and saved["cpcc"] == features["cpcc"]


def test_the_table_tells_the_numbers_of_metrics_json(demo) -> None:
    out, summary, printed = demo
    text = (out / TABLE_FILE).read_text()
    assert printed == text == demo_table(summary)
    header = text.splitlines()[0]
    commit = summary["provenance"]["git_commit"]
    assert (f"commit `{commit[:10]}`" in header) if commit else "unknown commit" in header
    assert "1 torch threads" in header and f"{summary['seconds_train_and_evaluate']:.0f} s wall time" in header
    finished = summary["finished"]
    assert f" on {finished[:10]} at {finished[11:16]} UTC: " in header and finished.endswith("+00:00")
    assert f"{summary['provenance']['machine']}, {summary['cpu_cores']} CPU cores)" in header
    tables = parse_tables(text)
    assert list(tables) == ["features", "projection"]
    runs = list(summary["runs"].values())
    for which, table in tables.items():
        assert table.pop("columns") == [run["name"] for run in runs]
        expected = {}
        for level, size in zip(summary["levels"], summary["level_sizes"], strict=True):
            metrics = [run["embeddings"][which] for run in runs]
            for label, key in METRIC_LABELS.items():
                expected[f"{level} ({size})", label] = [m["retrieval"][level][key] for m in metrics]
            expected[f"{level} ({size})", "kNN accuracy"] = [m["knn_accuracy"][level] for m in metrics]
        expected["all levels", "CPCC"] = [run["embeddings"][which]["cpcc"] for run in runs]
        assert list(table) == list(expected), which
        for row, values in expected.items():
            assert table[row] == [f"{v:.3f}" for v in values], (which, row)
    assert tables["features"] != tables["projection"]


def test_an_absent_embedding_is_a_dash_with_the_reason() -> None:
    features = {"cpcc": 0.5, "retrieval": {"a": {"precision@1": 1.0, "map@r": 0.25}}, "knn_accuracy": {"a": 0.75}}
    run = {"embeddings": {"features": features, "projection": features}}
    summary = {
        "setup": {"seed": 3, "train_subset": None, "epochs": 1, "backbone": "b"},
        "num_test_images": 1000,
        "threads": 4,
        "cpu_cores": 16,
        "device": "cuda:0",
        "seconds_train_and_evaluate": 61.4,
        "provenance": {},
        "levels": ["a"],
        "level_sizes": [2],
        "embeddings": ["features", "projection"],
        "runs": {loss: {**run, "name": loss.upper(), "absent": {}} for loss in DEMO_LOSSES},
    }
    summary["runs"]["supcon"] = {
        "name": "CE",
        "absent": {"projection": "no head"},
        "embeddings": {**run["embeddings"], "projection": None},
    }
    text = demo_table(summary)
    assert text.splitlines()[0].startswith(
        "Written by `hcl demo` (`make demo`) at an unknown commit (not a git "
        "checkout): 4 torch threads on cuda:0 (16 CPU cores), 61 s wall time"
    )
    assert "Seed 3, all training images, 1 epoch, `b`; measured per level on 1,000 test images." in text
    tables = parse_tables(text)
    assert tables["features"]["a (2)", "MAP@R"] == ["0.250"] * 3
    assert tables["projection"]["all levels", "CPCC"] == ["–", "0.500", "0.500"]
    assert "CE: no projection (no head)." in text


def test_cli_writes_the_results_file_and_the_readme_block_from_it(
    demo, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, summary, _ = demo
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-table:start -->\nhand-typed 0.999\n<!-- demo-table:end -->\noutro\n")
    assert main(["demo", "--out", str(out), "--update-readme", str(readme), "--no-train"]) == 0
    assert f"into {tmp_path / RESULTS_FILE} and its table into {readme}" in capsys.readouterr().out
    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert results == demo_results(summary) and "run_dir" not in results["runs"]["supcon"]
    assert results["provenance"]["git_commit"] == summary["provenance"]["git_commit"]
    table = (out / TABLE_FILE).read_text()
    assert demo_table(results) == table
    assert readme.read_text() == f"intro\n<!-- demo-table:start -->\n{table}<!-- demo-table:end -->\noutro\n"
    assert read_marked_block(readme, "demo-table") == "\n" + table


def test_cli_checks_the_readme_markers_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    configs = write_configs(tmp_path / "configs")
    assert (
        main(["demo", "--out", str(tmp_path / "out"), "--configs", str(configs), "--update-readme", str(readme)]) == 2
    )
    err = capsys.readouterr().err
    assert f"{readme} does not contain the marker '<!-- demo-table:start -->'" in err
    assert not (tmp_path / "out").exists() and readme.read_text() == "no markers\n"
    assert main(["demo", "--out", str(tmp_path / "out"), "--no-train"]) == 2
    assert "--no-train only makes sense with --update-readme" in capsys.readouterr().err
    readme.write_text("<!-- demo-table:start -->\n<!-- demo-table:end -->\n")
    assert main(["demo", "--out", str(tmp_path / "empty"), "--update-readme", str(readme), "--no-train"]) == 2
    assert f"{tmp_path / 'empty' / 'metrics.json'} does not exist" in capsys.readouterr().err


def test_the_demo_runs_may_differ_only_in_the_loss(tmp_path: Path) -> None:
    configs = write_configs(tmp_path / "configs", himulcon={"lr": 0.07, "seed": 1})
    with pytest.raises(
        ValueError,
        match=r"fashion_mnist_himulcon.yaml differs from fashion_mnist_supcon.yaml in "
        r"\['lr', 'seed'\]; the demo runs may differ only in the loss",
    ):
        run_demo(tmp_path / "out", configs_dir=configs)
    configs = write_configs(tmp_path / "other", himulcon={"loss": "supcon"})
    with pytest.raises(ValueError, match="fashion_mnist_himulcon.yaml trains loss 'supcon'; the demo needs 'himulcon'"):
        run_demo(tmp_path / "out", configs_dir=configs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("keys", "name"),
    [
        ({"loss": "supcon"}, "SupCon"),
        ({"loss": "himulcon"}, "HiMulCon"),
        ({"loss": "himulcone"}, "HiMulConE (hinge, beta=0.5)"),
        ({"loss": "himulcone", "constraint": "pair"}, "HiMulConE (pair)"),
        ({"loss": "hicone"}, "HiConE (pair)"),
        ({"loss": "himulcone", "bound_gradient": False}, "HiMulConE (pair_held)"),
        ({"loss": "himulcone", "constraint": "level_max"}, "HiMulConE (level_max)"),
        ({"loss": "himulcone", "constraint": "hinge"}, "HiMulConE (hinge, beta=0.5)"),
        ({"loss": "hicone", "constraint": "hinge", "constraint_weight": 0.25}, "HiConE (hinge, beta=0.25)"),
        ({"loss": "himulcone", "loss_mode": "reference"}, "HiMulConE (reference)"),
    ],
)
def test_a_run_is_named_by_its_loss_and_constraint_reading(keys: dict, name: str) -> None:
    assert run_name(TrainConfig(**keys)) == name


# What the demo may set differently from TrainConfig(): the data's size and the training budget
# (a smaller model, batch, schedule and logging interval; the run's folder).
SIZE_AND_BUDGET = {
    "train_subset",
    "eval_subset",
    "width",
    "embedding_dim",
    "batch_size",
    "lr",
    "epochs",
    "warmup_epochs",
    "log_every",
    "output_dir",
}


@pytest.mark.parametrize("loss", DEMO_LOSSES)
def test_the_demo_configs_differ_from_the_defaults_only_in_size_and_budget(loss: str) -> None:
    shipped = load_config(find_configs_dir() / f"fashion_mnist_{loss}.yaml")
    default = TrainConfig(loss=loss)
    differing = {
        f.name for f in dataclasses.fields(TrainConfig) if getattr(shipped, f.name) != getattr(default, f.name)
    }
    # A constraint spelled out is fine when it is the loss's default reading and weight.
    assert run_name(shipped) == run_name(default)
    differing -= {"constraint", "constraint_weight"}
    assert differing <= SIZE_AND_BUDGET, f"the demo config sets {sorted(differing - SIZE_AND_BUDGET)} apart"
    # The learning rate follows the batch size (the linear scaling rule).
    assert shipped.lr / shipped.batch_size == pytest.approx(default.lr / default.batch_size)


def test_the_readme_holds_the_demo_table_block() -> None:
    """``hcl demo --update-readme README.md`` has its markers to write between."""
    read_marked_block(Path(__file__).resolve().parents[1] / "README.md", README_BLOCK)


def test_the_readme_table_is_generated_from_the_committed_results() -> None:
    """The README's demo table is ``demo_table`` of docs/demo_results.json, byte for byte: regenerate both
    with ``make demo`` and ``hcl demo --out runs/demo --update-readme README.md --no-train``."""
    results = json.loads((ROOT / RESULTS_FILE).read_text(encoding="utf-8"))
    assert read_marked_block(ROOT / "README.md", README_BLOCK) == "\n" + demo_table(results)
    assert list(results["runs"]) == list(DEMO_LOSSES)
    assert results["provenance"]["git_commit"] and results["finished"] and results["threads"] >= 1


def test_the_demo_configs_are_the_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From any working folder: the configs inside the installed package (the top-level configs links there)."""
    monkeypatch.chdir(tmp_path)
    configs = find_configs_dir()
    assert configs == Path(hcl.__file__).resolve().parent / "configs" == (ROOT / "configs").resolve()
    assert {f"fashion_mnist_{loss}.yaml" for loss in DEMO_LOSSES} <= {path.name for path in configs.iterdir()}


def test_project_folders_are_found_from_the_working_folder_or_its_parent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "runs" / "demo-x").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path)
    assert find_project_folder("runs/demo-x") == tmp_path / "runs" / "demo-x"
    monkeypatch.chdir(tmp_path / "notebooks")  # a notebook's working folder in a checkout
    assert find_project_folder(Path("runs", "demo-x")) == tmp_path / "runs" / "demo-x"
    assert find_project_folder("runs/no-such-folder") is None
