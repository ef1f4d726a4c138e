"""evaluate_embeddings: one trained model evaluated on the backbone features and the projection head."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from hcl.metrics import cpcc
from hcl.train import TrainConfig, build_split, embed_dataset, evaluate_embeddings, fit, load_run

SYNTHETIC = {"depth": 3, "branching": [2, 2, 3], "samples_per_leaf": 8, "image_size": 16, "cache": False}


def _fit(root: Path, loss: str):
    cfg = TrainConfig(
        dataset="synthetic",
        data_options=SYNTHETIC,
        backbone="compact_cnn",
        width=4,
        embedding_dim=8,
        batch_size=32,
        epochs=1,
        loss=loss,
        progress=False,
        output_dir=str(root / loss),
    )
    return cfg, fit(cfg)


@pytest.fixture(scope="module")
def himulcon_run(tmp_path_factory: pytest.TempPathFactory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(tmp_path_factory.mktemp("embeddings"), "himulcon")
    finally:
        torch.set_num_threads(threads)


def test_both_embeddings_of_a_run_loaded_from_disk(himulcon_run) -> None:
    cfg, result = himulcon_run
    saved = json.loads((result.run_dir / "results.json").read_text())
    evaluated = evaluate_embeddings(result.run_dir, device="cpu")
    assert evaluated["absent"] == {} and list(evaluated["metrics"]) == ["features", "projection"]
    features, projection = evaluated["metrics"]["features"], evaluated["metrics"]["projection"]
    assert features["embedding"] == "features" and projection["embedding"] == "projection"
    assert features["step"] == projection["step"] == result.step  # the checkpoint's
    # the configured embedding is the run's own evaluation, again
    assert features["retrieval"] == saved["retrieval"] and features["cpcc"] == pytest.approx(saved["cpcc"])
    # the projection is another embedding: other numbers, every level, k-NN included
    assert projection["cpcc"] != features["cpcc"]
    assert projection["retrieval"] != features["retrieval"]
    assert set(projection["retrieval"]) == set(projection["knn_accuracy"]) == {"0", "1", "2"}
    # and it is the projection head's: CPCC straight from its embeddings
    _, model, _ = load_run(result.run_dir)
    test_set = build_split(cfg, cfg.eval_split)
    head, labels, _ = embed_dataset(model, test_set, which="projection", device="cpu")
    assert projection["cpcc"] == pytest.approx(float(cpcc(head, labels)), abs=1e-6)
    assert head.shape[1] == cfg.embedding_dim


def test_fit_results_are_taken_as_they_are_and_only_the_configured_embedding_is_written(himulcon_run) -> None:
    cfg, result = himulcon_run
    results_file = result.run_dir / "results.json"
    before = results_file.read_bytes(), results_file.stat().st_mtime_ns
    embeddings_file = result.run_dir / "embeddings_test.npz"
    features_before = np.load(embeddings_file)["embeddings"]
    mine = {"embedding": "features", "cpcc": 0.5, "retrieval": {}}
    evaluated = evaluate_embeddings(
        result.run_dir, cfg=cfg, model=result.model, step=result.step, fit_results=mine, device="cpu"
    )
    assert evaluated["metrics"]["features"] == mine and evaluated["metrics"]["features"] is not mine
    assert evaluated["metrics"]["projection"]["step"] == result.step
    assert (results_file.read_bytes(), results_file.stat().st_mtime_ns) == before
    np.testing.assert_array_equal(np.load(embeddings_file)["embeddings"], features_before)


def test_the_order_and_choice_of_embeddings_are_the_callers(himulcon_run) -> None:
    cfg, result = himulcon_run
    evaluated = evaluate_embeddings(
        result.run_dir,
        embeddings=("projection", "features"),
        cfg=cfg,
        model=result.model,
        fit_results=result.results,
        device="cpu",
    )
    assert list(evaluated["metrics"]) == ["projection", "features"]
    assert evaluated["metrics"]["projection"]["embedding"] == "projection"
    view = dataclasses.replace(cfg, embedding="projection")
    with pytest.raises(ValueError, match="fit_results evaluate embedding 'features', not the configured 'projection'"):
        evaluate_embeddings(result.run_dir, cfg=view, model=result.model, fit_results=result.results)
    with pytest.raises(ValueError, match=r"embeddings must be among \['features', 'projection'\], got \['logits'\]"):
        evaluate_embeddings(result.run_dir, embeddings=("features", "logits"), cfg=cfg, model=result.model)


def test_a_classifier_has_no_projection_it_is_recorded_absent(tmp_path: Path) -> None:
    cfg, result = _fit(tmp_path, "cross_entropy")
    evaluated = evaluate_embeddings(
        result.run_dir, cfg=cfg, model=result.model, step=result.step, fit_results=result.results, device="cpu"
    )
    assert evaluated["metrics"]["projection"] is None
    assert evaluated["absent"] == {
        "projection": "loss 'cross_entropy' trains a classifier, which has no projection head"
    }
    assert evaluated["metrics"]["features"]["cpcc"] == result.results["cpcc"]
