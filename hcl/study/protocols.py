"""Evaluation protocols of a study: train on all classes, or hold some finest-level classes out.

A protocol is a small object: ``overrides(seed)`` gives the TrainConfig keys it sets for a cell
trained with that seed, and ``evaluate(model, cfg, device=...)`` the metrics it adds to the
standard per-level evaluation (which every cell gets, see :mod:`hcl.study.cell`).
"""

from __future__ import annotations

import dataclasses
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

    def evaluate(self, model: Any, cfg: Any, *, device: Any) -> dict[str, Any]:
        """Metrics beyond the standard evaluation, for the embedding ``cfg.embedding``."""


@dataclass(frozen=True)
class AllClasses:
    """Train on every class; the standard evaluation is the whole protocol."""

    name: ClassVar[str] = "all"

    def overrides(self, seed: int) -> dict[str, Any]:
        return {}

    def evaluate(self, model: Any, cfg: Any, *, device: Any) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class HeldoutClasses:
    """Train without some finest-level classes, then measure how their test images are placed.

    Attributes:
        classes_by_seed: the held-out class names of the cell trained with each seed.
    """

    classes_by_seed: Mapping[int, tuple[str, ...]]
    name: ClassVar[str] = "heldout"

    @classmethod
    def resolve(cls, spec: HeldoutSpec, hierarchy: Any, seeds: list[int]) -> HeldoutClasses:
        """Fix the held-out classes of every seed from ``spec``, checked against ``hierarchy``.

        Raises:
            ValueError: a class that is unknown or is its parent's only child (named).
        """
        from hcl.metrics import check_heldout_classes, choose_heldout_classes

        by_seed: dict[int, tuple[str, ...]] = {}
        for seed in seeds:
            if spec.classes is not None:
                classes = list(spec.classes)
            else:
                choice_seed = spec.seed + seed if spec.per_seed else spec.seed
                classes = list(choose_heldout_classes(hierarchy, spec.count, seed=choice_seed))
            try:
                check_heldout_classes(hierarchy, classes)
            except ValueError as error:
                raise ValueError(f"study key 'heldout': {error}") from error
            by_seed[seed] = tuple(classes)
        return cls(by_seed)

    def overrides(self, seed: int) -> dict[str, Any]:
        return {"heldout_classes": list(self.classes_by_seed[seed])}

    def evaluate(self, model: Any, cfg: Any, *, device: Any) -> dict[str, Any]:
        """Held-out metrics of ``cfg.embedding``: test queries of held-out classes against the whole
        test gallery, their parents' placement among the seen classes, and fine-level k-NN with the
        held-out classes' training images in the reference set."""
        from hcl.metrics import heldout_metrics
        from hcl.train import build_split, embed_dataset

        everything = dataclasses.replace(cfg, heldout_classes=[])  # the splits with every class
        options = {"which": cfg.embedding, "batch_size": cfg.eval_batch_size, "device": device,
                   "precision": cfg.precision, "channels_last": cfg.channels_last}
        test_set = build_split(everything, cfg.eval_split)
        test, test_labels, _ = embed_dataset(model, test_set, **options)
        train, train_labels, _ = embed_dataset(model, build_split(everything, cfg.train_split), **options)
        return heldout_metrics(
            test, test_labels, train, train_labels, list(cfg.heldout_classes), hierarchy=test_set.hierarchy, k=cfg.knn_k
        )
