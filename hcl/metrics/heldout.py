"""The held-out-classes report: how an embedding places classes its encoder never trained on.

See :mod:`hcl.metrics.heldout_classes` for how held-out classes are chosen and checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hcl.metrics._validation import train_and_test
from hcl.metrics.classification import knn_accuracy
from hcl.metrics.heldout_classes import ClassSpec, check_heldout_classes, seen_unseen_split
from hcl.metrics.retrieval import per_level_retrieval

if TYPE_CHECKING:
    from hcl.hierarchy import Hierarchy

__all__ = ["heldout_metrics"]


@torch.no_grad()
def heldout_metrics(
    train_emb: Any,
    train_labels: Any,
    test_emb: Any,
    test_labels: Any,
    heldout_classes: Iterable[ClassSpec],
    *,
    k: int = 20,
    weighted: bool = True,
    temperature: float = 0.07,
    hierarchy: Hierarchy | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Per-level metrics of the held-out classes' test images, and of the seen ones to compare.

    The encoder trained on the seen classes only; ``train_emb`` embeds the *whole* training
    split, held-out classes included. With ``h`` the level of the held-out classes (all must
    be at one level), each group of test images (held-out and seen) gets:

    * ``retrieval``: leave-one-out retrieval of the group's test images against the whole test
      split (:func:`hcl.metrics.per_level_retrieval` with ``query_indices``): MAP@R and
      precision@1 at every level.
    * ``ancestor_knn_accuracy``: does the image land under the right ancestor? A k-NN vote
      (:func:`hcl.metrics.knn_accuracy`) over the *seen* training images only (those of
      :func:`hcl.metrics.seen_unseen_split`), at each level above ``h``. A held-out class has
      no reference image here, so only its ancestors can be read off its neighbours.
    * ``knn_accuracy``: a k-NN vote over *all* training images, held-out classes included, at
      ``h`` and every finer level: can its own class be told from its seen siblings?

    Random embeddings score chance at every entry: no reference set or gallery is restricted
    to the held-out classes, so no held-out class is right by construction.

    Args:
        train_emb, train_labels: every training image, held-out classes included.
        test_emb, test_labels: the test split (queries and retrieval gallery).
        heldout_classes: as in :func:`hcl.metrics.check_heldout_classes` (validated against
            ``train_labels``: each has training images and a seen sibling), all at one level.
        k: neighbours of the k-NN votes (at most the size of the reference set).
        weighted, temperature: of the k-NN votes, as in :func:`hcl.metrics.knn_accuracy`.
        hierarchy: resolves class names and adds ``heldout_class_names``.
        batch_size, device: for the similarity blocks.

    Returns:
        A JSON-ready dict, levels keyed ``"0"`` (coarsest) to ``"L-1"`` as in ``results.json``::

            {"heldout_classes": [[...], ...], "heldout_class_names": [...] (with hierarchy),
             "heldout_level": h, "k": k,
             "heldout": {"num_test": int,
                         "retrieval": {"0": {"map@r", "precision@1", "num_queries"}, ...},
                         "ancestor_knn_accuracy": {"0": float, ..., "h-1": float},
                         "knn_accuracy": {"h": float, ..., "L-1": float}},
             "seen": {the same for the seen test images}}

        A metric with no counted query (e.g. test images unknown at a level) is NaN.

    Raises:
        ValueError: shape mismatches; held-out classes rejected by
            :func:`hcl.metrics.check_heldout_classes` or at several levels; a test split
            without held-out or without seen images.

    Shape:
        train_emb: (N, D); train_labels: (N, L); test_emb: (M, D); test_labels: (M, L).
    """
    train_x, train_y, test_x, test_y = train_and_test(train_emb, train_labels, test_emb, test_labels)
    classes = check_heldout_classes(train_y, heldout_classes, hierarchy=hierarchy)
    levels = sorted({len(c) - 1 for c in classes})
    if len(levels) > 1:
        raise ValueError(f"held-out classes must all be at one level, got classes at levels {levels}: {classes}")
    heldout_level, num_levels = levels[0], train_y.shape[1]
    seen_train = torch.from_numpy(seen_unseen_split(train_y, classes)[0])
    seen_test, heldout_test = seen_unseen_split(test_y, classes)
    knn_options = {"weighted": weighted, "temperature": temperature, "batch_size": batch_size, "device": device}
    report: dict[str, Any] = {"heldout_classes": [list(c) for c in classes]}
    if hierarchy is not None:
        report["heldout_class_names"] = [hierarchy.nodes(heldout_level)[c[-1]] for c in classes]
    report |= {"heldout_level": heldout_level, "k": int(k)}
    for group, mask in (("heldout", heldout_test), ("seen", seen_test)):
        queries = np.flatnonzero(mask)
        if len(queries) == 0:
            raise ValueError(f"test_labels has no {group} image; the report needs both groups")
        retrieval = per_level_retrieval(test_x, test_y, 1, query_indices=queries, batch_size=batch_size, device=device)
        test_args = (test_x[queries], test_y[queries])
        ancestor = {}
        if heldout_level > 0:
            seen_args = (train_x[seen_train], train_y[seen_train])
            ancestor = knn_accuracy(*seen_args, *test_args, k=min(k, len(seen_args[0])), **knn_options)
        own = knn_accuracy(train_x, train_y, *test_args, k=min(k, len(train_x)), **knn_options)
        report[group] = {
            "num_test": len(queries),
            "retrieval": {
                str(level): {"map@r": m["map@r"], "precision@1": m["precision@1"], "num_queries": m["num_queries"]}
                for level, m in retrieval.items()
            },
            "ancestor_knn_accuracy": {str(level): ancestor[level] for level in range(heldout_level)},
            "knn_accuracy": {str(level): own[level] for level in range(heldout_level, num_levels)},
        }
    return report
