"""Per-level classification on frozen embeddings: k-nearest neighbours, linear probes, transfer.

Every function returns ``{level: accuracy}`` for levels ``0..L-1`` (coarse to fine). The class
of a sample at level ``l`` is its label prefix ``0..l`` (:func:`hcl.labels.prefix_ids`,
computed over train and test together, so ids agree). A test sample unknown at a level is not
counted there; a level with no counted test sample has accuracy NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from hcl.labels import prefix_ids
from hcl.metrics._validation import as_embeddings, train_and_test
from hcl.metrics.heldout_classes import check_heldout_classes, seen_unseen_split
from hcl.metrics.retrieval import nearest_neighbors

__all__ = ["knn_accuracy", "linear_probe", "transfer_accuracy"]

# Test samples per chunk of the k x k vote comparison.
_VOTE_CHUNK = 4096


@torch.no_grad()
def knn_accuracy(
    train_emb: Any,
    train_labels: Any,
    test_emb: Any,
    test_labels: Any,
    k: int = 20,
    *,
    weighted: bool = True,
    temperature: float = 0.07,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict[int, float]:
    """Accuracy of a cosine k-nearest-neighbour vote, at every level.

    Each test sample takes its k most cosine-similar training samples (computed in blocks). At
    level l each neighbour votes for its level-l class with weight ``exp(sim / temperature)``
    (``weighted``, as in DINO's k-NN evaluation) or 1 (a plain majority vote); neighbours
    unknown at l do not vote. The class with the largest total wins; a tie goes to the class of
    the nearest tied neighbour. With no voter at all the prediction is wrong.

    Args:
        train_emb, train_labels: the labelled pool searched.
        test_emb, test_labels: the samples classified.
        k: neighbours per test sample, at most the number of training samples.
        weighted: similarity-weighted vote (default) or majority vote.
        temperature: of the weights, when ``weighted``.
        batch_size: test samples per similarity block.
        device: where to compute (default: where ``train_emb`` is).

    Returns:
        ``{level: accuracy}``.

    Shape:
        train_emb: (N, D); train_labels: (N, L); test_emb: (M, D); test_labels: (M, L).
    """
    train_ids, test_ids = _joint_prefix_ids(train_emb, train_labels, test_emb, test_labels)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    sims, index = nearest_neighbors(train_emb, k, query=test_emb, batch_size=batch_size, device=device)
    sims, index = sims.cpu().double(), index.cpu()
    weights = torch.exp((sims - 1.0) / temperature) if weighted else torch.ones_like(sims)
    result = {}
    for level in range(train_ids.shape[1]):
        votes = train_ids[:, level][index]  # (M, k) class of each neighbour, -1 unknown
        chunks = range(0, len(votes), _VOTE_CHUNK)
        predicted = torch.cat([_vote(votes[i : i + _VOTE_CHUNK], weights[i : i + _VOTE_CHUNK]) for i in chunks])
        result[level] = _accuracy(predicted, test_ids[:, level])
    return result


def _vote(votes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The winning class per row; ties go to the class of the nearest tied neighbour.

    Shape:
        votes: (M, k) class ids (-1: no vote), neighbours sorted nearest first; weights: (M, k).
        Returns (M,), -1 where nobody voted.
    """
    voting = votes >= 0
    # Each neighbour's score is the total weight of its class; argmax takes the first maximum.
    same = votes[:, :, None] == votes[:, None, :]
    scores = (same * (weights * voting)[:, None, :]).sum(dim=2).masked_fill(~voting, -1.0)
    return votes.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)


def linear_probe(
    train_emb: Any,
    train_labels: Any,
    test_emb: Any,
    test_labels: Any,
    *,
    backend: str = "auto",
    C: float = 1.0,
    max_iter: int = 500,
    device: torch.device | str | None = None,
) -> dict[int, float]:
    """Accuracy of a multinomial logistic-regression probe per level, on frozen embeddings.

    Features are standardised with the training mean and standard deviation. At each level one
    probe is fitted on the training samples known there, minimising
    ``mean cross-entropy + ||W||^2 / (2 C n)`` (scikit-learn's objective for
    ``LogisticRegression(C=C)``, divided by ``C n``). Test samples whose class has no training
    sample cannot be predicted correctly and count as errors; a level with a single training
    class predicts that class.

    Args:
        backend: ``"sklearn"`` (scikit-learn's LogisticRegression), ``"torch"`` (the same
            objective evaluated by torch on ``device``, for large data or a GPU, minimised by
            SciPy's L-BFGS-B), or ``"auto"``: sklearn up to 20,000 training samples, else torch.
        C: inverse regularisation strength.
        max_iter: optimiser iterations.
        device: where the torch backend runs (default: CPU).

    Returns:
        ``{level: accuracy}``.

    Shape:
        train_emb: (N, D); train_labels: (N, L); test_emb: (M, D); test_labels: (M, L).
    """
    if backend not in ("auto", "sklearn", "torch"):
        raise ValueError(f"backend must be 'auto', 'sklearn' or 'torch', got {backend!r}")
    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    train_ids, test_ids = _joint_prefix_ids(train_emb, train_labels, test_emb, test_labels)
    x_train = as_embeddings(train_emb, "train_emb", device="cpu").double()
    x_test = as_embeddings(test_emb, "test_emb", device="cpu").double()
    mean, std = x_train.mean(dim=0), x_train.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    if backend == "auto":
        backend = "sklearn" if len(x_train) <= 20_000 else "torch"
    result = {}
    for level in range(train_ids.shape[1]):
        known = train_ids[:, level] >= 0
        y = train_ids[known, level]
        classes = torch.unique(y)
        if len(classes) == 0:
            predicted = torch.full((len(x_test),), -1, dtype=torch.int64)
        elif len(classes) == 1:
            predicted = classes.expand(len(x_test))
        elif backend == "sklearn":
            predicted = _sklearn_probe(x_train[known], y, x_test, C, max_iter)
        else:
            predicted = _torch_probe(x_train[known], y, x_test, C, max_iter, device)
        result[level] = _accuracy(predicted, test_ids[:, level])
    return result


def transfer_accuracy(
    train_emb: Any,
    train_labels: Any,
    test_emb: Any,
    test_labels: Any,
    unseen_classes: Iterable[Sequence[int] | int],
    *,
    method: str = "knn",
    **kwargs: Any,
) -> dict[str, dict[int, float]]:
    """Seen/unseen transfer: per-level accuracy separately on seen and on unseen classes.

    The protocol of Zhang et al. (CVPR 2022, "Use All The Labels"): the embedding was trained
    on the seen classes only. One k-NN classifier or linear probe is fitted on the whole
    training split, unseen classes included (the classifier may know every class; the encoder
    never saw the unseen ones), and scored separately on the seen and on the unseen test
    samples. A classifier fitted on the unseen classes alone would score a single held-out
    class 1.0 at every level, whatever the embedding. One call::

        transfer_accuracy(train_emb, train_labels, test_emb, test_labels, unseen, method="knn")

    For the fuller report (retrieval, landing under the right parent) see
    :func:`hcl.metrics.heldout_metrics`.

    Args:
        unseen_classes: label prefixes, checked by :func:`hcl.metrics.check_heldout_classes`
            against ``train_labels`` (e.g. from :func:`hcl.metrics.choose_unseen_classes`).
        method: ``"knn"`` (:func:`knn_accuracy`) or ``"linear"`` (:func:`linear_probe`).
        **kwargs: passed on to that function (``k``, ``C``, ``backend``, ...).

    Returns:
        ``{"seen": {level: accuracy}, "unseen": {level: accuracy}}``; a group with no test
        sample gets NaN at every level.

    Raises:
        ValueError: an unknown ``method``, or held-out classes that break the protocol (a
            parent's only child, a class without training samples; see
            :func:`hcl.metrics.check_heldout_classes`).

    Shape:
        train_emb: (N, D); train_labels: (N, L); test_emb: (M, D); test_labels: (M, L).
    """
    if method not in ("knn", "linear"):
        raise ValueError(f"method must be 'knn' or 'linear', got {method!r}")
    train_x, train_y, test_x, test_y = train_and_test(train_emb, train_labels, test_emb, test_labels)
    unseen_classes = check_heldout_classes(train_y, unseen_classes)
    result = {}
    for name, test_mask in zip(("seen", "unseen"), seen_unseen_split(test_y, unseen_classes)):
        test_mask = torch.from_numpy(test_mask)
        if not bool(test_mask.any()):
            result[name] = {level: math.nan for level in range(train_y.shape[1])}
            continue
        args = (train_x, train_y, test_x[test_mask], test_y[test_mask])
        if method == "knn":
            result[name] = knn_accuracy(*args, **(kwargs | {"k": min(kwargs.get("k", 20), len(train_x))}))
        else:
            result[name] = linear_probe(*args, **kwargs)
    return result


def _joint_prefix_ids(
    train_emb: Any, train_labels: Any, test_emb: Any, test_labels: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated prefix ids of train and test labels, computed jointly so that they agree."""
    train_x, train_y, test_x, test_y = train_and_test(train_emb, train_labels, test_emb, test_labels)
    ids = prefix_ids(torch.cat([train_y, test_y]))
    return ids[: len(train_y)], ids[len(train_y) :]


def _accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of known ``truth`` entries (>= 0) that ``predicted`` matches; NaN if none."""
    known = truth >= 0
    if not bool(known.any()):
        return math.nan
    return float((predicted[known] == truth[known]).double().mean())


def _sklearn_probe(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, C: float, max_iter: int) -> torch.Tensor:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(C=C, max_iter=max_iter)
    # LBFGS makes many small BLAS calls; threading them costs more than it saves until the
    # problem is large.
    blas_threads = 1 if x.numel() * len(torch.unique(y)) < 50_000_000 else None
    with warnings.catch_warnings(), threadpool_limits(limits=blas_threads, user_api="blas"):
        # A probe that stops at max_iter is still a probe; the caller chose max_iter.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x.numpy(), y.numpy())
    return torch.from_numpy(model.predict(x_test.numpy())).to(torch.int64)


def _torch_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    C: float,
    max_iter: int,
    device: torch.device | str | None,
) -> torch.Tensor:
    """The probe's loss and gradient in torch (on ``device``), minimised by SciPy's L-BFGS-B,
    the solver scikit-learn uses too; only the (D + 1) x classes parameters cross devices."""
    from scipy.optimize import minimize

    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    classes, target = torch.unique(y, return_inverse=True)
    x, target = x.to(device, dtype), target.to(device)
    num_features, num_classes = x.shape[1], len(classes)
    penalty = 1.0 / (2.0 * C * len(x))

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = torch.from_numpy(theta).to(device, dtype).requires_grad_(True)
        weight = params[: num_features * num_classes].view(num_features, num_classes)
        bias = params[num_features * num_classes :]
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, target)
            loss = loss + penalty * (weight * weight).sum()
            (grad,) = torch.autograd.grad(loss, params)
        return float(loss.detach()), grad.to("cpu", torch.float64).numpy()

    start = np.zeros((num_features + 1) * num_classes)
    options = {"maxiter": max_iter, "maxls": 50, "gtol": 1e-5, "ftol": 64 * np.finfo(float).eps}
    theta = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", options=options).x
    params = torch.from_numpy(theta).to(device, dtype)
    with torch.no_grad():
        scores = x_test.to(device, dtype) @ params[: num_features * num_classes].view(num_features, num_classes)
        scores += params[num_features * num_classes :]
    return classes[scores.argmax(dim=1).cpu()]
