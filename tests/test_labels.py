"""Label validation and prefix arithmetic (hcl.labels) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hcl.labels import as_label_tensor, prefix_ids, shared_prefix_length


def random_ragged_labels(n: int, levels: int, branching: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, branching, size=(n, levels))
    depth = rng.integers(1, levels + 1, size=n)
    labels[np.arange(levels)[None, :] >= depth[:, None]] = -1
    return torch.from_numpy(labels)


@pytest.mark.parametrize("seed", range(5))
def test_prefix_ids_match_brute_force(seed: int) -> None:
    labels = random_ragged_labels(60, 4, 3, seed)
    ids = prefix_ids(labels)
    rows = labels.tolist()
    for level in range(4):
        for i in range(60):
            for j in range(60):
                same = all(rows[i][k] == rows[j][k] >= 0 for k in range(level + 1))
                if rows[i][level] < 0:
                    assert ids[i, level] == -1
                else:
                    assert bool(ids[i, level] == ids[j, level]) == same


def test_prefix_ids_are_dense() -> None:
    ids = prefix_ids(random_ragged_labels(200, 3, 4, 0))
    for level in range(3):
        col = ids[:, level][ids[:, level] >= 0]
        assert sorted(col.unique().tolist()) == list(range(int(col.max()) + 1))


def lexicographic_prefix_ids(labels: torch.Tensor) -> list[list[int]]:
    """The documented ids, by a loop: the rank of each known prefix among the level's distinct prefixes."""
    rows = labels.tolist()
    out = [[-1] * len(row) for row in rows]
    for level in range(labels.shape[1]):
        prefixes = sorted({tuple(row[: level + 1]) for row in rows if row[level] >= 0})
        rank = {prefix: i for i, prefix in enumerate(prefixes)}
        for i, row in enumerate(rows):
            if row[level] >= 0:
                out[i][level] = rank[tuple(row[: level + 1])]
    return out


@pytest.mark.parametrize("spread", [1, 7, 10**12])  # small ranges use a table, huge ones a sort
@pytest.mark.parametrize("ragged", [False, True])
def test_prefix_ids_are_lexicographic_ranks(spread: int, ragged: bool) -> None:
    labels = random_ragged_labels(300, 4, 5, 3) if ragged else torch.randint(0, 5, (300, 4))
    labels = torch.where(labels >= 0, labels * spread + 3, labels)
    assert prefix_ids(labels).tolist() == lexicographic_prefix_ids(labels)
    if torch.cuda.is_available():
        assert prefix_ids(labels.cuda()).tolist() == lexicographic_prefix_ids(labels)


def test_shared_prefix_length() -> None:
    a = torch.tensor([[0, 1, 2], [0, 1, -1], [1, 0, 0]])
    b = torch.tensor([[0, 1, 3], [0, 1, -1], [0, 0, 0]])
    assert shared_prefix_length(a, b).tolist() == [2, 2, 0]


def test_as_label_tensor_accepts_and_rejects() -> None:
    assert as_label_tensor(np.array([1, 2])).shape == (2, 1)
    assert as_label_tensor([[0, -1]]).dtype == torch.int64
    with pytest.raises(TypeError, match="float"):
        as_label_tensor(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(TypeError, match="integer"):
        as_label_tensor(torch.tensor([True, False]))
    with pytest.raises(TypeError, match="dtype <U"):
        as_label_tensor(np.array(["a"]))
    with pytest.raises(ValueError, match=r">= -1.*-3.*row 1"):
        as_label_tensor([[0, 0], [0, -3]])
    with pytest.raises(ValueError, match=r"known label below an unknown.*row 0: \[-1, 2\]"):
        as_label_tensor([[-1, 2]])
    with pytest.raises(ValueError, match="2 levels"):
        as_label_tensor([[0, 1, 2]], num_levels=2)
    with pytest.raises(ValueError, match="shape"):
        as_label_tensor(torch.zeros(2, 2, 2, dtype=torch.int64))
