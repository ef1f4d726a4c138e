"""Evaluation of a trained encoder: embeddings of a split, per-level metrics, the run's results.

One small set of functions rather than a framework: :func:`embed_dataset` turns a data set into
L2-normalised embeddings, :func:`evaluate_model` computes the per-level retrieval metrics and the
CPCC used by the training loop's evaluation hook, and :func:`evaluate_run` does the full
evaluation of a run directory (``hcl evaluate``): it adds the k-NN accuracy per level and writes
``results.json`` and ``embeddings_<split>.npz``. :func:`evaluate_embeddings` evaluates one trained
model on several embeddings (backbone features and projection head) without retraining.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hcl import rundir
from hcl.hierarchy import Hierarchy
from hcl.metrics import cpcc, heldout_metrics, knn_accuracy, per_level_retrieval
from hcl.train.build import autocast_context, build_model, build_split
from hcl.train.checkpoint import check_training_state, load_checkpoint
from hcl.train.config import TrainConfig
from hcl.train.config_io import upgrade_keys
from hcl.train.distributed import resolve_device
from hcl.train.progress import live_bars

__all__ = [
    "EMBEDDINGS",
    "embed_dataset",
    "evaluate_embeddings",
    "evaluate_model",
    "evaluate_run",
    "load_run",
]

EMBEDDINGS = ("features", "projection")  # what :meth:`hcl.models.Encoder.embed` offers


@torch.no_grad()
def embed_dataset(
    model: nn.Module,
    dataset: Dataset,
    *,
    which: str = "features",
    batch_size: int = 512,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    precision: str = "fp32",
    channels_last: bool = False,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L2-normalised embeddings of every sample of ``dataset``, in dataset order.

    The model is put in evaluation mode (and left there). ``which`` selects the backbone
    ``"features"`` or the ``"projection"`` head (see :meth:`hcl.models.Encoder.embed`); a model
    without ``embed`` is used as it is and its output normalised.

    Returns:
        ``(embeddings, labels, indices)``.

    Shape:
        Returns (N, D) float32, (N, L) int64 and (N,) int64.
    """
    device = resolve_device("auto" if device is None else device)
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks, label_chunks = [], []
    for images, labels in tqdm(loader, desc="embedding", disable=not live_bars(progress), leave=False):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            out = model.embed(images, which) if hasattr(model, "embed") else model(images)
        chunks.append(torch.nn.functional.normalize(out.float(), dim=1).cpu())
        label_chunks.append(torch.as_tensor(labels).reshape(len(images), -1).cpu())
    embeddings = torch.cat(chunks).numpy().astype(np.float32)
    labels = torch.cat(label_chunks).numpy().astype(np.int64)
    return embeddings, labels, np.arange(len(embeddings), dtype=np.int64)


def _usable_ks(ks: list[int], num_rankable: int) -> list[int]:
    usable = sorted({k for k in ks if k <= num_rankable})
    return usable or [1]


def _retrieval_and_cpcc(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    hierarchy: Hierarchy,
    ks: list[int],
    query: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    rankable = len(gallery) - (1 if query is None else 0)
    retrieval = per_level_retrieval(
        gallery,
        gallery_labels,
        _usable_ks(ks, rankable),
        query=query,
        query_labels=query_labels,
        hierarchy=hierarchy,
    )
    return {
        "retrieval": {str(level): values for level, values in retrieval.items()},
        "cpcc": float(cpcc(gallery, gallery_labels)),
    }


def _embed_options(cfg: TrainConfig, device: Any) -> dict[str, Any]:
    """The :func:`embed_dataset` options the config sets: its embedding, batch size and precision."""
    return {
        "which": cfg.embedding,
        "batch_size": cfg.eval_batch_size,
        "device": device,
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
    }


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    device: str | torch.device | None = None,
    query_set: Dataset | None = None,
) -> dict[str, Any]:
    """Per-level retrieval (precision@1, recall@k, R-precision, MAP@R) and CPCC on ``dataset``.

    Without ``query_set`` every sample queries the rest (leave-one-out); with it, its samples
    query ``dataset`` as the gallery. Levels are keyed ``"0"`` (coarsest) to ``"L-1"``.
    """
    options = _embed_options(cfg, device)
    gallery, gallery_labels, _ = embed_dataset(model, dataset, **options)
    query = query_labels = None
    if query_set is not None:
        query, query_labels, _ = embed_dataset(model, query_set, **options)
    return _retrieval_and_cpcc(gallery, gallery_labels, dataset.hierarchy, cfg.retrieval_ks, query, query_labels)


def load_run(
    run_dir: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[TrainConfig, nn.Module, dict[str, Any]]:
    """The config, the trained model (in eval mode, on ``device``) and the checkpoint of a run.

    Raises:
        FileNotFoundError: no ``config.json`` or ``checkpoint.pt`` in ``run_dir`` (named).
    """
    run_dir = Path(run_dir)
    cfg = _run_config(run_dir)
    ckpt_path = run_dir / rundir.CHECKPOINT_FILE
    state = load_checkpoint(ckpt_path)
    check_training_state(state, ckpt_path, ("model", "model_spec", "step"))
    spec = state["model_spec"]
    model = build_model(
        cfg, in_channels=spec["in_channels"], image_size=spec["image_size"], num_classes=spec["num_classes"]
    )
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return cfg, model, state


def _run_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig of a run; an invalid one raises naming its ``config.json``."""
    data = rundir.read_config(run_dir)
    try:
        return TrainConfig.from_dict(upgrade_keys(data, warn=False))  # hcl wrote it: renamed keys are no news
    except (TypeError, ValueError) as error:
        raise type(error)(f"{run_dir / rundir.CONFIG_FILE}: {error}") from error


def _knn_per_level(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, k: int
) -> dict[str, float]:
    result = knn_accuracy(train, train_labels, test, test_labels, k=min(k, len(train)))
    return {str(level): float(value) for level, value in result.items()}


def _versus_training(
    model: nn.Module,
    cfg: TrainConfig,
    options: dict[str, Any],
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    hierarchy: Hierarchy,
    query: np.ndarray | None,
    query_labels: np.ndarray | None,
) -> dict[str, Any]:
    """The metrics whose reference set is the whole training split (``cfg.train_subset`` of it,
    held-out classes included): k-NN accuracy per level, and the held-out report."""
    reference_set = build_split(cfg, cfg.train_split, subset=cfg.train_subset)
    reference, reference_labels, _ = embed_dataset(model, reference_set, **options)
    knn = _knn_per_level(
        reference,
        reference_labels,
        query if query is not None else gallery,
        query_labels if query_labels is not None else gallery_labels,
        cfg.knn_k,
    )
    metrics: dict[str, Any] = {"knn_accuracy": knn, "knn_k": cfg.knn_k}
    if cfg.heldout_classes:
        metrics["heldout"] = heldout_metrics(
            reference, reference_labels, gallery, gallery_labels, cfg.heldout_classes, k=cfg.knn_k, hierarchy=hierarchy
        )
    return metrics


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str | None = None,
    query_split: str | None = None,
    device: str | torch.device | None = None,
    cfg: TrainConfig | None = None,
    model: nn.Module | None = None,
    step: int | None = None,
    progress: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a run per level and write ``results.json`` and ``embeddings_<split>.npz``.

    Embeds ``split`` (default ``cfg.eval_split``) and, for DeepFashion-style protocols, the
    ``query_split`` (default ``cfg.eval_query_split`` when evaluating the configured split), then
    computes per-level retrieval, CPCC, and the k-NN accuracy per level of a classifier whose
    neighbours come from the training split (``cfg.train_subset`` of it). When
    ``cfg.heldout_classes`` were kept out of training, that reference set still holds them, and
    ``"heldout"`` is their report (:func:`hcl.metrics.heldout_metrics` against ``split``).

    Args:
        run_dir: the run directory.
        split: the split to evaluate.
        query_split: queries searched against ``split`` as the gallery.
        device: default CUDA, else MPS, else CPU.
        cfg, model: pass them to skip loading the run from disk (the training loop does).
        step: the training step recorded in the results (default: the checkpoint's when the run
            is loaded here, else None).
        progress: show progress bars.
        write: write ``results.json`` and the embeddings.

    Returns:
        ``{"split", "query_split", "embedding", "levels", "num_samples", "retrieval": {level:
        {...}}, "cpcc", "knn_accuracy": {level: float}, "knn_k", "step"}`` (and ``"heldout"``),
        levels keyed ``"0"`` (coarsest) to ``"L-1"``.
    """
    run_dir = Path(run_dir)
    device, cfg, model, step = _model_to_evaluate(run_dir, device, cfg, model, step)
    split = split or cfg.eval_split
    if query_split is None and split == cfg.eval_split:
        query_split = cfg.eval_query_split
    options = {**_embed_options(cfg, device), "progress": progress}

    gallery_set = build_split(cfg, split)
    hierarchy = gallery_set.hierarchy
    gallery, gallery_labels, gallery_indices = embed_dataset(model, gallery_set, **options)
    query = query_labels = query_indices = None
    if query_split is not None:
        query, query_labels, query_indices = embed_dataset(model, build_split(cfg, query_split), **options)
    metrics = _retrieval_and_cpcc(gallery, gallery_labels, hierarchy, cfg.retrieval_ks, query, query_labels)

    versus_training = _versus_training(model, cfg, options, gallery, gallery_labels, hierarchy, query, query_labels)

    results = {
        "split": split,
        "query_split": query_split,
        "embedding": cfg.embedding,
        "loss": cfg.loss,
        "levels": list(hierarchy.level_names),
        "num_samples": len(gallery),
        **metrics,
        **versus_training,
        "step": step,
    }
    if write:
        rundir.save_embeddings(
            rundir.embeddings_path(run_dir, split), gallery, gallery_labels, hierarchy, gallery_indices
        )
        if query_split is not None:
            rundir.save_embeddings(
                rundir.embeddings_path(run_dir, query_split), query, query_labels, hierarchy, query_indices
            )
        rundir.write_results(run_dir, results)
    if progress:
        print(f"evaluated {run_dir} on {split}: cpcc {results['cpcc']:.3f}", file=sys.stderr)
    return results


def evaluate_embeddings(
    run_dir: str | Path,
    *,
    embeddings: Sequence[str] = EMBEDDINGS,
    cfg: TrainConfig | None = None,
    model: nn.Module | None = None,
    step: int | None = None,
    fit_results: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate one trained model on each of ``embeddings``, without retraining.

    Every embedding gets the full :func:`evaluate_run` evaluation (per-level retrieval, CPCC,
    k-NN accuracy) of the same model. The configured one (``cfg.embedding``) is the run's own:
    ``fit_results`` when given (what :func:`hcl.train.fit` returned), else :func:`evaluate_run`,
    which writes ``results.json`` and the embeddings. The others are written nowhere, so the run
    directory keeps describing its configured embedding. A model without a projection head (a
    loss that trains a classifier) records ``"projection"`` as absent, with the reason.

    Args:
        run_dir: the run directory.
        embeddings: any of ``"features"`` and ``"projection"``, in the order wanted.
        cfg, model: pass them to skip loading the run from disk (then pass ``step`` too).
        step: the training step the model is at, recorded in each evaluation (default: the
            checkpoint's when the run is loaded here, else None).
        fit_results: the configured embedding's evaluation, when already done.
        device: default CUDA, else MPS, else CPU.
        progress: show progress bars.

    Returns:
        ``{"metrics": {embedding: evaluation or None}, "absent": {embedding: reason}}``, each
        evaluation as :func:`evaluate_run` returns it (with ``"embedding"`` naming which).

    Raises:
        ValueError: an embedding other than ``"features"`` or ``"projection"`` (named), or
            ``fit_results`` of another embedding than the configured one.
    """
    unknown = [which for which in embeddings if which not in EMBEDDINGS]
    if unknown:
        raise ValueError(f"embeddings must be among {list(EMBEDDINGS)}, got {unknown}")
    run_dir = Path(run_dir)
    device, cfg, model, step = _model_to_evaluate(run_dir, device, cfg, model, step)
    if fit_results is not None and fit_results.get("embedding", cfg.embedding) != cfg.embedding:
        raise ValueError(
            f"fit_results evaluate embedding {fit_results['embedding']!r}, not the configured {cfg.embedding!r}"
        )
    metrics: dict[str, Any] = {}
    absent: dict[str, str] = {}
    for which in embeddings:
        if which == "projection" and getattr(model, "is_classifier", False):
            metrics[which] = None
            absent[which] = f"loss {cfg.loss!r} trains a classifier, which has no projection head"
            continue
        if which == cfg.embedding and fit_results is not None:
            metrics[which] = dict(fit_results)
            continue
        view = dataclasses.replace(cfg, embedding=which)
        # write only the configured embedding, and only when fit could not: a run resumed after
        # its last step has no results.json yet
        metrics[which] = evaluate_run(
            run_dir, cfg=view, model=model, step=step, device=device, progress=progress, write=which == cfg.embedding
        )
    return {"metrics": metrics, "absent": absent}


def _model_to_evaluate(
    run_dir: Path, device: Any, cfg: TrainConfig | None, model: nn.Module | None, step: int | None
) -> tuple[torch.device, TrainConfig, nn.Module, int | None]:
    """The device, config, model and step to evaluate: those given, else the run's own (loaded
    from ``run_dir`` when the model or the config is missing)."""
    device = resolve_device("auto" if device is None else device)
    if model is None or cfg is None:
        loaded_cfg, model, state = load_run(run_dir, device=device)
        cfg = cfg or loaded_cfg
        step = int(state["step"]) if step is None else step
    return device, cfg, model, step
