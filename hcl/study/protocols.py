"""Evaluation protocols of a study: train on all classes, or hold some finest-level classes out.

A protocol is a small object: ``overrides(seed)`` gives the TrainConfig keys it sets for a cell
trained with that seed, and ``evaluate(results)`` the metric table it adds to the standard
per-level evaluation of one embedding (:func:`hcl.train.evaluate_run`, which every cell gets, see
:mod:`hcl.study.cell`), read off that evaluation: ``{metric: {level: value} | value}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from hcl.study.config import HeldoutSpec

__all__ = ["AllClasses", "EvaluationProtocol", "HeldoutClasses"]


class EvaluationProtocol(Protocol):
    """What the study asks of a protocol."""

    name: ClassVar[str]

    def overrides(self, seed: int) -> dict[str, Any]:
        """TrainConfig keys this protocol sets for the cell trained with ``seed``."""

    def evaluate(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """This protocol's metrics, read off ``results`` (one embedding's :func:`hcl.train.evaluate_run`)."""


@dataclass(frozen=True)
class AllClasses:
    """Train on every class; the standard evaluation is the whole protocol."""

    name: ClassVar[str] = "all"

    def overrides(self, seed: int) -> dict[str, Any]:
        return {}

    def evaluate(self, results: Mapping[str, Any]) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class HeldoutClasses:
    """Train without some finest-level classes, then measure how their test images are placed.

    The cell's config holds the classes (``heldout_classes``), so its training leaves them out
    and its evaluation reports them (:func:`hcl.metrics.heldout_metrics`, under ``"heldout"``).

    Attributes:
        classes_by_seed: the held-out class names of the cell trained with each seed.
    """

    classes_by_seed: Mapping[int, tuple[str, ...]]
    name: ClassVar[str] = "heldout"

    @classmethod
    def resolve(cls, spec: HeldoutSpec, labels: Any, hierarchy: Any, seeds: list[int]) -> HeldoutClasses:
        """Fix the held-out classes of every seed from ``spec``, checked against the training
        split's ``labels`` (N, L) encoded in ``hierarchy``.

        Raises:
            ValueError: a class that is unknown, not at the finest level, or its parent's only
                child (named, with the parent); more classes than can be held out.
        """
        from hcl.metrics import check_heldout_classes, choose_unseen_classes

        finest = hierarchy.nodes(hierarchy.num_levels - 1)
        by_seed: dict[int, tuple[str, ...]] = {}
        for seed in seeds:
            try:
                if spec.classes is not None:
                    classes = list(spec.classes)
                else:
                    choice_seed = spec.seed + seed if spec.per_seed else spec.seed
                    chosen = choose_unseen_classes(labels, level=-1, seed=choice_seed, count=spec.count)
                    classes = [finest[prefix[-1]] for prefix in chosen]
                check_heldout_classes(labels, classes, hierarchy=hierarchy, level=-1)
            except (TypeError, ValueError) as error:
                raise ValueError(f"study key 'heldout': {error}") from error
            by_seed[seed] = tuple(classes)
        return cls(by_seed)

    def overrides(self, seed: int) -> dict[str, Any]:
        return {"heldout_classes": list(self.classes_by_seed[seed])}

    def evaluate(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """The held-out report of ``results`` as a metric table: for the held-out classes' test
        images, ``map@r`` and ``precision@1`` (retrieval against the whole test split),
        ``ancestor_knn_accuracy`` (levels above theirs) and ``knn_accuracy`` (their level and
        finer), each ``{level: value}``; the same for the seen classes' test images prefixed
        ``seen_``; and ``classes``, their names.

        Raises:
            KeyError: ``results`` without a held-out report (a config without ``heldout_classes``).
        """
        report = results["heldout"]
        table: dict[str, Any] = {"classes": report.get("heldout_class_names", report["heldout_classes"])}
        for group, prefix in (("heldout", ""), ("seen", "seen_")):
            part = report[group]
            for metric in ("map@r", "precision@1"):
                table[prefix + metric] = {level: m[metric] for level, m in part["retrieval"].items()}
            for metric in ("ancestor_knn_accuracy", "knn_accuracy"):
                table[prefix + metric] = dict(part[metric])
        return table
