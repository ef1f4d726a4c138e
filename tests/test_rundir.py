"""The run-directory format: every file written and read back, byte-compatible with earlier runs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from hcl import Hierarchy, rundir
from hcl.train import TrainConfig, save_config


def _hierarchy() -> Hierarchy:
    return Hierarchy.from_paths([("a", "x"), ("a", "y"), ("b", "z")], level_names=["coarse", "fine"])


def test_the_file_names_are_the_documented_ones(tmp_path: Path) -> None:
    names = (
        rundir.CONFIG_FILE,
        rundir.HIERARCHY_FILE,
        rundir.CHECKPOINT_FILE,
        rundir.METRICS_FILE,
        rundir.RESULTS_FILE,
    )
    assert names == ("config.json", "hierarchy.json", "checkpoint.pt", "metrics.jsonl", "results.json")
    assert rundir.embeddings_path(tmp_path, "test") == tmp_path / "embeddings_test.npz"


def test_config_json_has_the_bytes_save_config_writes_and_reads_back(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="synthetic", lr=0.2, level_weights=[1.0, 2.0])
    save_config(cfg, tmp_path / "reference.json")
    path = rundir.write_config(tmp_path, cfg.to_dict())
    assert path == tmp_path / "config.json"
    assert path.read_bytes() == (tmp_path / "reference.json").read_bytes()
    assert rundir.read_config(tmp_path) == json.loads(path.read_text()) == cfg.to_dict()


@pytest.mark.parametrize("content", ["{not json", "[]", "\xff"])
def test_a_malformed_config_json_is_named(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match="config.json"):
        rundir.read_config(tmp_path)


def test_a_folder_without_config_json_is_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        rundir.read_config(tmp_path)


def test_hierarchy_json_round_trips_and_is_what_hierarchy_writes(tmp_path: Path) -> None:
    h = _hierarchy()
    h.to_json(tmp_path / "reference.json")
    rundir.write_hierarchy(tmp_path, h)
    assert (tmp_path / "hierarchy.json").read_bytes() == (tmp_path / "reference.json").read_bytes()
    assert rundir.read_hierarchy(tmp_path) == h
    with pytest.raises(FileNotFoundError, match="hierarchy.json"):
        rundir.read_hierarchy(tmp_path / "elsewhere")


def test_the_metrics_log_appends_json_lines_and_reads_them_back(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"old": 1}\n')
    rundir.start_metrics_log(tmp_path)
    records = [{"kind": "train", "step": 1, "loss": 0.5}, {"kind": "eval", "epoch": 1, "step": 1, "cpcc": 0.25}]
    for record in records:
        rundir.append_metrics(tmp_path, record)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in records)
    assert rundir.read_metrics_log(tmp_path) == records
    assert rundir.read_metrics_log(tmp_path / "metrics.jsonl") == records


def test_truncating_for_a_resume_keeps_the_steps_up_to_the_checkpoint_and_drops_torn_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"kind": "train", "step": step}) for step in range(1, 7)]
    lines.insert(3, json.dumps({"kind": "eval", "epoch": 1, "step": 3}))
    (tmp_path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines) + '{"kind": "tr')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl:8: skipping a torn last line"):
        rundir.truncate_metrics_log(tmp_path, 3)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines[:4]
    rundir.truncate_metrics_log(tmp_path / "no-such-run", 3)  # nothing to truncate: no error, no file
    assert not (tmp_path / "no-such-run").exists()


def test_results_json_round_trips_with_the_documented_layout(tmp_path: Path) -> None:
    assert rundir.read_results(tmp_path) == {}
    results = {"split": "test", "retrieval": {"0": {"map@r": 0.5}}, "cpcc": 0.25, "step": None}
    rundir.write_results(tmp_path, results)
    assert (tmp_path / "results.json").read_text() == json.dumps(results, indent=2) + "\n"
    assert rundir.read_results(tmp_path) == results
    (tmp_path / "results.json").write_text("[1]")
    with pytest.raises(ValueError, match="results.json: expected a JSON object"):
        rundir.read_results(tmp_path)


def test_embeddings_round_trip_and_an_earlier_file_without_indices_still_loads(tmp_path: Path) -> None:
    h = _hierarchy()
    labels = h.encode([("a", "x"), ("a", "y"), ("b", "z"), ("b", "z")]).numpy()
    embeddings = np.random.default_rng(0).normal(size=(4, 5))
    path = rundir.save_embeddings(rundir.embeddings_path(tmp_path, "val"), embeddings, labels, h, np.arange(4) * 3)
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others, like open() makes it
    run = rundir.load_embeddings(tmp_path, "val")
    assert run.embeddings.dtype == np.float32 and run.labels.dtype == np.int64 and run.split == "val"
    np.testing.assert_array_equal(run.embeddings, embeddings.astype(np.float32))
    np.testing.assert_array_equal(run.labels, labels)
    np.testing.assert_array_equal(run.indices, np.arange(4) * 3)
    assert run.hierarchy == h
    # As written by hand (or an older hcl): no indices, the hierarchy in hierarchy.json only.
    np.savez(tmp_path / "embeddings_test.npz", embeddings=embeddings, labels=labels)
    h.to_json(tmp_path / "hierarchy.json")
    assert rundir.embedding_splits(tmp_path) == ["test", "val"]
    old = rundir.load_embeddings(tmp_path, None)
    assert old.split == "test" and old.hierarchy == h
    np.testing.assert_array_equal(old.indices, np.arange(4))


def test_save_embeddings_names_a_path_without_suffix_as_numpy_does(tmp_path: Path) -> None:
    h = _hierarchy()
    labels = h.encode([("a", "x")]).numpy()
    assert rundir.save_embeddings(tmp_path / "out", np.zeros((1, 2)), labels, h) == tmp_path / "out.npz"
    with pytest.raises(ValueError, match="2 embeddings but 1 label rows"):
        rundir.save_embeddings(tmp_path / "bad.npz", np.zeros((2, 2)), labels, h)


def test_clearing_the_evaluation_removes_results_embeddings_and_projections_only(tmp_path: Path) -> None:
    for name in ("results.json", "embeddings_test.npz", "embeddings_val.npz", "config.json", "metrics.jsonl"):
        (tmp_path / name).write_text("x")
    rundir.save_projection(tmp_path, "umap", "ab12", np.zeros((3, 2)))
    rundir.clear_evaluation(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "metrics.jsonl", "projections"]
    assert not list((tmp_path / "projections").iterdir())


def test_projections_round_trip_under_their_documented_name(tmp_path: Path) -> None:
    coords = np.arange(8, dtype=np.float64).reshape(4, 2)
    path = rundir.save_projection(tmp_path, "tsne", "0f9e", coords)
    assert path == tmp_path / "projections" / "tsne-0f9e.npy" == rundir.projection_path(tmp_path, "tsne", "0f9e")
    loaded = rundir.load_projection(tmp_path, "tsne", "0f9e", 4)
    assert loaded is not None and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, coords)
    assert rundir.load_projection(tmp_path, "tsne", "0f9f", 4) is None
    with pytest.warns(UserWarning, match=r"float32 \(4, 2\), expected \(5, 2\)"):
        assert rundir.load_projection(tmp_path, "tsne", "0f9e", 5) is None


@pytest.mark.parametrize(("method", "key"), [("umap", "../x"), ("umap", "ABC"), ("umap", ""), ("u/map", "ab")])
def test_a_projection_key_cannot_leave_the_folder(tmp_path: Path, method: str, key: str) -> None:
    with pytest.raises(ValueError, match="hexadecimal key"):
        rundir.projection_path(tmp_path, method, key)
