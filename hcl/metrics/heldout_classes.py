"""Which classes are held out of training ("unseen"), and which samples that leaves "seen".

The seen/unseen protocol of Zhang et al. (CVPR 2022, "Use All The Labels") trains the encoder
on some classes and asks how well it places the others. A held-out class is given as a label
prefix: ``(3, 1)`` is child 1 of root 3, with its whole subtree (the convention of
:class:`hcl.Hierarchy`). For the question "does an unseen class land under the right parent?"
to have an answer, every held-out class needs a *seen sibling*: after the removal each parent
still has at least one seen child at that level. A parent's only child can therefore never be
held out (e.g. Fashion-MNIST's ``Dress``, the one class of the category ``dresses``); hold out
the parent instead, or a class that has siblings.

- :func:`choose_unseen_classes`: a seeded random choice that obeys that rule.
- :func:`check_heldout_classes`: validate an explicit choice (prefixes, or node names with a
  hierarchy) and return it as sorted prefixes.
- :func:`seen_unseen_split`: masks of the seen and the unseen samples.
- :func:`seen_training_indices`: the training samples an encoder may see under the protocol.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hcl.labels import as_label_tensor

if TYPE_CHECKING:
    from hcl.hierarchy import Hierarchy

__all__ = ["check_heldout_classes", "choose_unseen_classes", "seen_training_indices", "seen_unseen_split"]

ClassSpec = Sequence[int] | int | str


def choose_unseen_classes(
    labels: Any,
    fraction: float | None = None,
    *,
    level: int = -1,
    seed: int = 0,
    count: int | None = None,
) -> list[tuple[int, ...]]:
    """Pick classes at ``level`` to hold out as "unseen", each keeping a seen sibling.

    The classes are those with a sample in ``labels`` known at ``level``. They are drawn in a
    seeded random order, skipping any whose parent would be left without a seen child, so at
    most ``(classes at level) - (their parents)`` can be held out.

    Args:
        labels: usually the training split's labels.
        fraction: hold out ``round(fraction * classes)`` of them (default 0.2), at least one and
            at most the number allowed.
        level: the level of the held-out classes (default: the finest).
        seed: of the random order.
        count: hold out exactly this many instead of a fraction.

    Returns:
        The held-out classes as sorted label prefixes of length ``level + 1``, ready for
        :func:`seen_unseen_split`, :func:`hcl.metrics.transfer_accuracy` and
        :func:`hcl.metrics.heldout_metrics`.

    Raises:
        ValueError: ``level`` out of range; fewer than 2 classes or none with a sibling;
            ``fraction`` outside (0, 1); ``count`` not in ``1..allowed``; both given.

    Shape:
        labels: (N, L).
    """
    labels = as_label_tensor(labels, device="cpu")
    level = _level_index(level, labels.shape[1])
    classes = [tuple(row) for row in torch.unique(labels[labels[:, level] >= 0, : level + 1], dim=0).tolist()]
    if len(classes) < 2:
        raise ValueError(f"level {level} has {len(classes)} class(es); need at least 2 to hold some out")
    spare = Counter(c[:-1] for c in classes)  # children per parent; one must stay seen
    for parent in spare:
        spare[parent] -= 1
    allowed = sum(spare.values())
    if allowed == 0:
        raise ValueError(f"no class at level {level} has a sibling, so none can be held out with a seen sibling")
    if count is not None:
        if fraction is not None:
            raise ValueError(f"give fraction or count, not both (got fraction={fraction}, count={count})")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= allowed:
            raise ValueError(
                f"count must be an int in 1..{allowed} (every parent keeps a seen child at level {level}), "
                f"got {count!r}"
            )
        wanted = int(count)
    else:
        fraction = 0.2 if fraction is None else fraction
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
        wanted = min(allowed, max(1, round(fraction * len(classes))))
    chosen = []
    for i in np.random.default_rng(seed).permutation(len(classes)):
        parent = classes[i][:-1]
        if spare[parent] > 0:
            spare[parent] -= 1
            chosen.append(classes[i])
            if len(chosen) == wanted:
                break
    return sorted(chosen)


def check_heldout_classes(
    labels: Any,
    heldout_classes: Iterable[ClassSpec],
    *,
    hierarchy: Hierarchy | None = None,
    level: int | None = None,
) -> list[tuple[int, ...]]:
    """Validate held-out classes against ``labels`` and return them as sorted label prefixes.

    Args:
        labels: the labels the classes are judged on, usually the whole training split.
        heldout_classes: label prefixes (a tuple of ids, coarse to fine; trailing ``-1``
            ignored), bare ints (a root), or, with ``hierarchy``, node names at any level.
        hierarchy: resolves names and names the classes in error messages; ``labels`` must
            then be encoded in it.
        level: if given, every class must be at this level (``-1``: the finest).

    Returns:
        The distinct prefixes, sorted.

    Raises:
        TypeError: a single string instead of a list of classes.
        ValueError: no class; a malformed prefix; a name without ``hierarchy``, unknown, or at
            several levels; a class not at ``level``; a class repeated, nested under another
            held-out class, or without any sample in ``labels``; a class whose parent keeps no
            seen child at its level (a parent's only child, or all its children held out),
            naming the class and the parent.

    Shape:
        labels: (N, L).
    """
    labels = as_label_tensor(labels, device="cpu")
    num_levels = labels.shape[1]
    if hierarchy is not None and hierarchy.num_levels != num_levels:
        raise ValueError(f"hierarchy has {hierarchy.num_levels} levels but labels have {num_levels}")
    if isinstance(heldout_classes, str):
        raise TypeError(f"heldout_classes must be a list of classes, got the string {heldout_classes!r}")
    prefixes = [_as_prefix(spec, num_levels, hierarchy) for spec in heldout_classes]
    if not prefixes:
        raise ValueError("heldout_classes is empty")
    if level is not None:
        level = _level_index(level, num_levels)
        for prefix in prefixes:
            if len(prefix) - 1 != level:
                raise ValueError(
                    f"held-out class {_describe(prefix, hierarchy)} is at level {len(prefix) - 1}, not at level {level}"
                )
    _check_distinct(prefixes, hierarchy)
    _check_seen_siblings(labels.numpy(), prefixes, hierarchy)
    return sorted(prefixes)


def seen_unseen_split(labels: Any, unseen_classes: Iterable[Sequence[int] | int]) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the samples of seen and of unseen classes.

    Args:
        labels: (N, L) hierarchical labels.
        unseen_classes: label prefixes, e.g. ``(3, 1)`` = child 1 of root 3 (with its whole
            subtree), or full label rows (trailing ``-1`` ignored); a bare int ``c`` means the
            root ``(c,)``. :func:`choose_unseen_classes` returns such a list.

    Returns:
        ``(seen, unseen)`` boolean arrays. A sample is unseen when its label starts with one of
        the prefixes. A sample labelled only down to an ancestor of an unseen class (e.g.
        ``(3, -1)`` against ``(3, 1)``) may belong to it, so it is in neither group; every
        other sample is seen.

    Shape:
        labels: (N, L). Returns (N,), (N,).
    """
    labels = as_label_tensor(labels, device="cpu").numpy()
    n, num_levels = labels.shape
    depth = (labels >= 0).sum(axis=1)
    unseen = np.zeros(n, dtype=bool)
    ambiguous = np.zeros(n, dtype=bool)
    found = False
    for spec in unseen_classes:
        prefix = np.asarray(_as_prefix(spec, num_levels, None))
        # Leading levels each sample shares with the prefix, capped at the prefix's length.
        shared = np.cumprod(labels[:, : len(prefix)] == prefix, axis=1).sum(axis=1)
        unseen |= shared == len(prefix)
        ambiguous |= (shared == depth) & (depth < len(prefix))
        found = True
    if not found:
        raise ValueError("unseen_classes is empty")
    return ~unseen & ~ambiguous, unseen


def seen_training_indices(
    labels: Any, heldout_classes: Iterable[ClassSpec], *, hierarchy: Hierarchy | None = None
) -> np.ndarray:
    """Indices of the training samples to train on when ``heldout_classes`` are held out.

    The classes are validated first (:func:`check_heldout_classes`, so a parent's only child or
    an unknown name fails before any training); the samples kept are the seen ones of
    :func:`seen_unseen_split`. Evaluation then embeds *all* training samples, held-out ones
    included (:func:`hcl.metrics.heldout_metrics`).

    Returns:
        Sorted int64 indices into ``labels``.

    Shape:
        labels: (N, L). Returns (N_seen,).
    """
    prefixes = check_heldout_classes(labels, heldout_classes, hierarchy=hierarchy)
    seen, _ = seen_unseen_split(labels, prefixes)
    return np.flatnonzero(seen).astype(np.int64)


def _level_index(level: int, num_levels: int) -> int:
    if not -num_levels <= level < num_levels:
        raise ValueError(f"level {level} is out of range for {num_levels} levels")
    return level % num_levels


def _check_distinct(prefixes: list[tuple[int, ...]], hierarchy: Hierarchy | None) -> None:
    """No class given twice, none nested under another."""
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1 :]:
            if a == b:
                raise ValueError(f"held-out class {_describe(a, hierarchy)} is given twice")
            outer, inner = (a, b) if len(a) <= len(b) else (b, a)
            if inner[: len(outer)] == outer:
                raise ValueError(
                    f"held-out class {_describe(inner, hierarchy)} lies under held-out class "
                    f"{_describe(outer, hierarchy)}; give only the outer one"
                )


def _check_seen_siblings(rows: np.ndarray, prefixes: list[tuple[int, ...]], hierarchy: Hierarchy | None) -> None:
    """Every class has a sample in ``rows``, and its parent a child at its level that is not held out."""
    present_at: dict[int, set[tuple[int, ...]]] = {}
    for prefix in prefixes:
        depth = len(prefix)
        if depth not in present_at:
            known = rows[rows[:, depth - 1] >= 0, :depth]
            present_at[depth] = {tuple(r) for r in np.unique(known, axis=0).tolist()}
        present = present_at[depth]
        if prefix not in present:
            raise ValueError(f"held-out class {_describe(prefix, hierarchy)} has no sample in labels")
        siblings = [c for c in present if c[:-1] == prefix[:-1]]
        if any(all(c[: len(q)] != q for q in prefixes) for c in siblings):
            continue
        parent = _describe(prefix[:-1], hierarchy) if len(prefix) > 1 else "the root"
        if len(siblings) == 1:
            raise ValueError(
                f"held-out class {_describe(prefix, hierarchy)} is the only child of {parent}, so no seen "
                "sibling would remain; hold out a class that has siblings, or the parent itself"
            )
        held = ", ".join(_describe(c, hierarchy) for c in sorted(siblings))
        raise ValueError(f"holding out all of {held} leaves {parent} with no seen child; keep one of them seen")


def _as_prefix(spec: ClassSpec, num_levels: int, hierarchy: Hierarchy | None) -> tuple[int, ...]:
    """One class as a label prefix: from a name (with ``hierarchy``), an int, or a label row."""
    if isinstance(spec, str):
        if hierarchy is None:
            raise ValueError(f"class {spec!r} is a name; names need a hierarchy (check_heldout_classes(hierarchy=))")
        levels = [level for level in range(num_levels) if spec in hierarchy.nodes(level)]
        if not levels:
            raise ValueError(f"unknown held-out class {spec!r}: not a node of {hierarchy!r}")
        if len(levels) > 1:
            raise ValueError(f"held-out class {spec!r} is a node at levels {levels}; give its label prefix instead")
        level = levels[0]
        return tuple(hierarchy.node_labels(level)[hierarchy.index(level, spec), : level + 1].tolist())
    prefix = [int(spec)] if isinstance(spec, (int, np.integer)) else [int(v) for v in spec]
    while prefix and prefix[-1] == -1:
        prefix.pop()
    if not prefix or len(prefix) > num_levels or min(prefix) < 0:
        raise ValueError(f"class {spec!r} is not a label prefix of at most {num_levels} known levels")
    return tuple(prefix)


def _describe(prefix: tuple[int, ...], hierarchy: Hierarchy | None) -> str:
    """``'Dress' (0, 1, 1)`` with a hierarchy, else the prefix."""
    level = len(prefix) - 1
    if hierarchy is not None and prefix[-1] < hierarchy.num_nodes(level):
        return f"{hierarchy.nodes(level)[prefix[-1]]!r} {prefix}"
    return str(prefix)
