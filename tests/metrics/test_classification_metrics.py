"""k-NN accuracy against a loop oracle, linear probes (both backends), seen/unseen transfer."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from hcl.metrics import (
    choose_unseen_classes,
    knn_accuracy,
    linear_probe,
    seen_unseen_split,
    transfer_accuracy,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny problems


def data(n: int, branching: tuple[int, ...], dim: int, seed: int, spread: float = 1.0, unknown: float = 0.0):
    """Labels with raw ids repeating under parents; embeddings pulled towards each prefix."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, b, n) for b in branching], axis=1)
    if unknown:
        depth = np.where(rng.random(n) < unknown, rng.integers(0, len(branching), n), len(branching))
        labels[np.arange(len(branching))[None, :] >= depth[:, None]] = -1
    emb = rng.standard_normal((n, dim)) * spread
    key = np.zeros(n, dtype=np.int64)
    for level, b in enumerate(branching):
        key = key * (b + 1) + labels[:, level] + 1
        centres = {k: rng.standard_normal(dim) * 2.0 for k in np.unique(key)}
        emb += np.where(labels[:, level, None] >= 0, np.stack([centres[k] for k in key]), 0.0)
    return emb.astype(np.float32), labels


def knn_oracle(train_x, train_y, test_x, test_y, k, weighted, temperature=0.07):
    """Loop oracle: float64 cosine, sorted neighbours, dictionary votes, nearest tie-break."""
    tx = train_x.astype(np.float64) / np.linalg.norm(train_x, axis=1, keepdims=True)
    qx = test_x.astype(np.float64) / np.linalg.norm(test_x, axis=1, keepdims=True)
    result = {}
    for level in range(train_y.shape[1]):
        correct = total = 0
        for i in range(len(qx)):
            truth = tuple(test_y[i, : level + 1])
            if min(truth) < 0:
                continue
            sims = tx @ qx[i]
            order = sorted(range(len(tx)), key=lambda j: -sims[j])[:k]
            score: dict = defaultdict(float)
            first_seen: dict = {}
            for rank, j in enumerate(order):
                cls = tuple(train_y[j, : level + 1])
                if min(cls) < 0:
                    continue
                score[cls] += math.exp(sims[j] / temperature) if weighted else 1.0
                first_seen.setdefault(cls, rank)
            if score:
                best = max(score.values())
                tied = [c for c in score if math.isclose(score[c], best, rel_tol=1e-12)]
                predicted = min(tied, key=lambda c: first_seen[c])
                correct += predicted == truth
            total += 1
        result[level] = correct / total if total else math.nan
    return result


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("seed", range(2))
def test_knn_accuracy_matches_loop_oracle(weighted: bool, seed: int) -> None:
    x, y = data(260, (2, 3, 3), dim=6, seed=seed, spread=2.5, unknown=0.2)
    got = knn_accuracy(x[:200], y[:200], x[200:], y[200:], k=7, weighted=weighted, batch_size=16)
    expected = knn_oracle(x[:200], y[:200], x[200:], y[200:], k=7, weighted=weighted)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.0 < got[2] < 1.0


def test_knn_majority_tie_goes_to_the_nearest_class() -> None:
    train = np.array([[1.0, 0.1], [1.0, -0.3], [1.0, 0.5], [1.0, -0.7]], dtype=np.float32)
    labels = np.array([[1], [0], [1], [0]])
    test = np.array([[1.0, 0.0]], dtype=np.float32)
    # Two votes each; the nearest neighbour (0.1) is class 1.
    assert knn_accuracy(train, labels, test, np.array([[1]]), k=4, weighted=False) == {0: 1.0}
    assert knn_accuracy(train, labels, test, np.array([[0]]), k=4, weighted=False) == {0: 0.0}


def test_knn_neighbors_without_a_label_do_not_vote() -> None:
    train = np.array([[1.0, 0.0], [1.0, 0.2], [1.0, 0.9]], dtype=np.float32)
    labels = np.array([[0, -1], [0, -1], [0, 4]])
    test = np.array([[1.0, 0.05]], dtype=np.float32)
    # At level 1 the two nearest are unknown; the far one is the only voter.
    assert knn_accuracy(train, labels, test, np.array([[0, 4]]), k=3) == {0: 1.0, 1: 1.0}
    # With k=2 nobody votes at level 1: counted as wrong. Unknown test labels are skipped.
    assert knn_accuracy(train, labels, test, np.array([[0, 4]]), k=2) == {0: 1.0, 1: 0.0}
    result = knn_accuracy(train, labels, test, np.array([[0, -1]]), k=2)
    assert result[0] == 1.0 and math.isnan(result[1])


def test_knn_perfect_clusters_and_errors() -> None:
    x, y = data(120, (2, 3), dim=8, seed=0, spread=0.01)
    assert knn_accuracy(x[:90], y[:90], x[90:], y[90:], k=5) == {0: 1.0, 1: 1.0}
    with pytest.raises(ValueError, match="k=91"):
        knn_accuracy(x[:90], y[:90], x[90:], y[90:], k=91)
    with pytest.raises(ValueError, match="dimension"):
        knn_accuracy(x[:90], y[:90], x[90:, :4], y[90:], k=5)
    with pytest.raises(ValueError, match="levels"):
        knn_accuracy(x[:90], y[:90], x[90:], y[90:, :1], k=5)
    with pytest.raises(ValueError, match="temperature"):
        knn_accuracy(x[:90], y[:90], x[90:], y[90:], temperature=0.0)


# ----------------------------------------------------------------------------- linear probes
def test_linear_probe_separable_data_both_backends() -> None:
    x, y = data(300, (2, 3), dim=10, seed=1, spread=0.3)
    for backend in ("sklearn", "torch"):
        assert linear_probe(x[:200], y[:200], x[200:], y[200:], backend=backend) == {0: 1.0, 1: 1.0}


def test_linear_probe_backends_solve_the_same_problem() -> None:
    """Same convex objective: the predictions agree, so the accuracies do too (noisy data)."""
    x, y = data(400, (2, 3), dim=6, seed=2, spread=2.5)
    sk = linear_probe(x[:300], y[:300], x[300:], y[300:], backend="sklearn", C=0.5)
    th = linear_probe(x[:300], y[:300], x[300:], y[300:], backend="torch", C=0.5)
    assert th == pytest.approx(sk, abs=0.02)
    assert 0.3 < sk[1] < 1.0


def test_linear_probe_degenerate_levels() -> None:
    x, y = data(100, (2, 2), dim=4, seed=3, spread=0.2)
    # A test class absent from training counts as an error; one training class is predicted.
    train_y = y[:80].copy()
    train_y[:, 0] = 0
    train_y[:, 1] = np.where(train_y[:, 1] >= 0, 0, -1)
    result = linear_probe(x[:80], train_y, x[80:], y[80:])
    assert result[0] == pytest.approx(np.mean(y[80:, 0] == 0))
    # Unknown test labels are skipped; a level nobody is known at is NaN.
    unknown = y[80:].copy()
    unknown[:, 1] = -1
    assert math.isnan(linear_probe(x[:80], y[:80], x[80:], unknown)[1])
    with pytest.raises(ValueError, match="backend"):
        linear_probe(x[:80], y[:80], x[80:], y[80:], backend="svm")
    with pytest.raises(ValueError, match="C must"):
        linear_probe(x[:80], y[:80], x[80:], y[80:], C=0)


# ----------------------------------------------------------------------------- transfer
LABELS = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, -1], [-1, -1]])


def test_seen_unseen_split_by_prefix() -> None:
    seen, unseen = seen_unseen_split(LABELS, [(0, 1), (1, 0, -1)])
    assert unseen.tolist() == [False, True, False, True, False, False, False]
    # (1, -1) may be (1, 0), an unseen class; (-1, -1) may be anything: neither group.
    assert seen.tolist() == [True, False, True, False, True, False, False]
    seen, unseen = seen_unseen_split(torch.from_numpy(LABELS), [1])  # a bare int is a root
    assert unseen.tolist() == [False, False, False, True, True, True, False]
    assert seen.tolist() == [True, True, True, False, False, False, False]
    # A sample labelled only down to a root with no unseen class below it is seen.
    seen, unseen = seen_unseen_split(np.array([[0, -1], [1, -1], [1, 2]]), [(0, 1)])
    assert seen.tolist() == [False, True, True] and not unseen.any()
    for bad in ([], [(5, -1, 2)], [(-1,)], [(0, 0, 0)], ["f0"]):
        with pytest.raises(ValueError):
            seen_unseen_split(LABELS, bad)


def test_choose_unseen_classes() -> None:
    _, y = data(300, (3, 4), dim=2, seed=0)
    chosen = choose_unseen_classes(y, 0.25, seed=1)
    assert len(chosen) == 3 and all(len(c) == 2 for c in chosen)  # 12 fine classes
    assert chosen == sorted(chosen) == choose_unseen_classes(y, 0.25, seed=1)
    roots = choose_unseen_classes(y, 0.5, level=0, seed=0)
    assert len(roots) == 2 and set(roots) <= {(0,), (1,), (2,)}  # round(0.5 * 3) of 3 roots
    existing = {tuple(r) for r in y.tolist()}
    assert set(chosen) <= existing
    assert len(choose_unseen_classes(y, count=9, seed=0)) == 9  # 12 classes, 3 parents each keep one
    assert len(choose_unseen_classes(y, 0.99, seed=0)) == 9  # a fraction is capped there
    with pytest.raises(ValueError, match="fraction"):
        choose_unseen_classes(y, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        choose_unseen_classes(y, 0.2, level=2)
    with pytest.raises(ValueError, match="at least 2"):
        choose_unseen_classes(np.zeros((5, 1), dtype=np.int64), 0.5)
    with pytest.raises(ValueError, match=r"count must be an int in 1\.\.9"):
        choose_unseen_classes(y, count=10)
    with pytest.raises(ValueError, match="not both"):
        choose_unseen_classes(y, 0.2, count=2)
    only_children = np.array([[0, 0], [1, 0], [2, 0]])
    with pytest.raises(ValueError, match="no class at level 1 has a sibling"):
        choose_unseen_classes(only_children, count=1)


def balanced(per_class: int, branching: tuple[int, ...]) -> np.ndarray:
    """Every leaf of a full tree ``per_class`` times, leaves in order."""
    leaves = np.stack(np.meshgrid(*[np.arange(b) for b in branching], indexing="ij"), axis=-1)
    return np.repeat(leaves.reshape(-1, len(branching)), per_class, axis=0)


@pytest.mark.parametrize("method", ["knn", "linear"])
def test_transfer_accuracy_of_one_heldout_class_is_chance_for_random_embeddings(method: str) -> None:
    """One held-out class of 9 with random embeddings: near chance (1/3, 1/9), not 1.0 by construction."""
    rng = np.random.default_rng(0)
    train_y, test_y = balanced(60, (3, 3)), balanced(30, (3, 3))
    train_x = rng.standard_normal((len(train_y), 16)).astype(np.float32)
    test_x = rng.standard_normal((len(test_y), 16)).astype(np.float32)
    options = {"k": 10} if method == "knn" else {}
    result = transfer_accuracy(train_x, train_y, test_x, test_y, [(1, 2)], method=method, **options)
    for group in ("seen", "unseen"):
        assert result[group][0] < 0.6 and result[group][1] < 0.4, (group, result[group])


def test_transfer_accuracy_fits_one_classifier_on_all_training_samples() -> None:
    x, y = data(400, (2, 4), dim=8, seed=4, spread=1.5)
    unseen = choose_unseen_classes(y[:300], 0.25, seed=0)
    train_x, train_y, test_x, test_y = x[:300], y[:300], x[300:], y[300:]
    result = transfer_accuracy(train_x, train_y, test_x, test_y, unseen, k=5)
    te_seen, te_unseen = seen_unseen_split(test_y, unseen)
    assert result["unseen"] == knn_accuracy(train_x, train_y, test_x[te_unseen], test_y[te_unseen], k=5)
    assert result["seen"] == knn_accuracy(train_x, train_y, test_x[te_seen], test_y[te_seen], k=5)
    linear = transfer_accuracy(train_x, train_y, test_x, test_y, unseen, method="linear")
    assert linear["unseen"] == linear_probe(train_x, train_y, test_x[te_unseen], test_y[te_unseen])
    # A group with no test sample is NaN; bad method names and classes are rejected.
    no_unseen = transfer_accuracy(train_x, train_y, test_x[te_seen], test_y[te_seen], unseen, k=5)
    assert all(math.isnan(v) for v in no_unseen["unseen"].values())
    with pytest.raises(ValueError, match="method"):
        transfer_accuracy(train_x, train_y, test_x, test_y, unseen, method="svm")
    all_children_of_root_0 = [(0, c) for c in range(4)]
    with pytest.raises(ValueError, match=r"leaves \(0,\) with no seen child"):
        transfer_accuracy(train_x, train_y, test_x, test_y, all_children_of_root_0)
