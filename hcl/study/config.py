"""The study configuration: a typed dataclass loaded from YAML, checked before anything trains.

A study is a grid ``variants x seeds x protocols`` over one base training config::

    base: fashion_mnist_himulcone.yaml     # a TrainConfig file (relative to this file) or mapping
    variants:                              # name -> TrainConfig keys that differ from base
      SupCon: {loss: supcon, bound_gradient: true}
      HiMulConE: {}
    baseline: SupCon                       # paired tests compare every variant against it
    seeds: [0, 1, 2, 3, 4]
    protocols: [all, heldout]
    heldout: {count: 2, seed: 0}           # or {classes: [Shirt, Sneaker]}
    output_dir: studies/fashion_mnist

Each cell's seed, ``output_dir`` and (under ``heldout``) held-out classes are set by the study,
so a variant may not set them; the base's values of ``seed`` and ``output_dir`` are replaced.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["EMBEDDINGS", "EXECUTORS", "PROTOCOLS", "HeldoutSpec", "StudyConfig", "load_study_config"]

PROTOCOLS = ("all", "heldout")
EMBEDDINGS = ("features", "projection")
EXECUTORS = ("process", "submitit")
# TrainConfig keys that every cell sets itself: a variant that sets one is an error.
CELL_KEYS = ("seed", "output_dir", "heldout_classes")


@dataclass
class HeldoutSpec:
    """Which finest-level classes the ``heldout`` protocol keeps out of training.

    Every held-out class must have a sibling that is trained on (a parent's only child cannot be
    held out: its parent would be unseen too).
    """

    classes: list[str] | None = None  # finest-level class names; None = chosen at random
    count: int = 2  # classes chosen when `classes` is None
    seed: int = 0  # seed of that choice
    per_seed: bool = False  # choose anew for each training seed (choice seed = seed + training seed)

    def __post_init__(self) -> None:
        if self.classes is not None:
            if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
                raise TypeError(f"study key 'heldout.classes' must be a list of class names, got {self.classes!r}")
            if not self.classes:
                raise ValueError("study key 'heldout.classes' must be a non-empty list of class names (or null)")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"study key 'heldout.classes' lists a class twice: {self.classes!r}")
            if self.per_seed:
                raise ValueError(
                    "study key 'heldout.per_seed' needs the classes chosen at random; remove 'heldout.classes'"
                )
        _check_int("heldout.count", self.count, minimum=1)
        _check_int("heldout.seed", self.seed, minimum=0)
        if not isinstance(self.per_seed, bool):
            raise TypeError(f"study key 'heldout.per_seed' must be true or false, got {self.per_seed!r}")


@dataclass
class StudyConfig:
    """A grid of training runs: ``variants x seeds x protocols``, everything else identical.

    Construction checks the study's own keys, each error naming its key (TypeError for a value of
    the wrong type, ValueError for a bad value); the TrainConfig of
    every cell is checked by :func:`hcl.study.plan_study` (through :class:`hcl.train.TrainConfig`).
    """

    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys shared by every cell
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> keys that differ
    baseline: str | None = None  # the variant paired tests compare against; None = the first
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    heldout: HeldoutSpec = field(default_factory=HeldoutSpec)
    embeddings: list[str] = field(default_factory=lambda: list(EMBEDDINGS))  # evaluated in every cell
    workers: int | None = None  # cells run at once; None = the CPU cores available
    threads_per_worker: int = 1  # torch / BLAS threads inside each cell
    executor: str = "process"  # "process" (a local process pool) or "submitit" (SLURM)
    submitit: dict[str, Any] = field(default_factory=dict)  # "cluster" + AutoExecutor parameters
    output_dir: str = "studies/default"
    title: str | None = None  # study.html's title; None = the output folder's name

    def __post_init__(self) -> None:
        if isinstance(self.heldout, Mapping):
            self.heldout = _from_mapping(HeldoutSpec, self.heldout, "heldout.")
        if not isinstance(self.base, Mapping):
            raise TypeError(f"study key 'base' must be a TrainConfig mapping or a file path, got {self.base!r}")
        if self.base.get("heldout_classes"):
            raise ValueError("study key 'base.heldout_classes' is set by the 'heldout' protocol; remove it")
        if not isinstance(self.variants, Mapping):
            raise TypeError(f"study key 'variants' must be a mapping of names to overrides, got {self.variants!r}")
        if not self.variants:
            raise ValueError("study key 'variants' must map at least one name to TrainConfig overrides")
        for name, overrides in self.variants.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"study key 'variants': a name must be a non-empty string without '/', got {name!r}")
            if overrides is None:
                self.variants[name] = overrides = {}
            if not isinstance(overrides, Mapping):
                raise TypeError(f"study key 'variants.{name}' must be a mapping of TrainConfig keys, got {overrides!r}")
            for key in CELL_KEYS:
                if key in overrides:
                    raise ValueError(f"study key 'variants.{name}.{key}' is set by the study for each cell; remove it")
        if self.baseline is None:
            self.baseline = next(iter(self.variants))
        if self.baseline not in self.variants:
            raise ValueError(
                f"study key 'baseline' must be one of the variants {list(self.variants)}, got {self.baseline!r}"
            )
        if not isinstance(self.seeds, list):
            raise TypeError(f"study key 'seeds' must be a non-empty list of seeds, got {self.seeds!r}")
        if not self.seeds:
            raise ValueError("study key 'seeds' must be a non-empty list of seeds, got []")
        for seed in self.seeds:
            _check_int("seeds", seed, minimum=0, what="a list of integers")
        duplicates = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if duplicates:
            raise ValueError(f"study key 'seeds' lists seed(s) {duplicates} more than once")
        _check_choices("protocols", self.protocols, PROTOCOLS)
        _check_choices("embeddings", self.embeddings, EMBEDDINGS)
        if self.workers is not None:
            _check_int("workers", self.workers, minimum=1)
        _check_int("threads_per_worker", self.threads_per_worker, minimum=1)
        if self.executor not in EXECUTORS:
            raise ValueError(f"study key 'executor' must be one of {list(EXECUTORS)}, got {self.executor!r}")
        if not isinstance(self.submitit, Mapping):
            raise TypeError(f"study key 'submitit' must be a mapping of executor parameters, got {self.submitit!r}")
        if not isinstance(self.output_dir, str):
            raise TypeError(f"study key 'output_dir' must be a folder path, got {self.output_dir!r}")
        if not self.output_dir:
            raise ValueError("study key 'output_dir' must be a folder path, got ''")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | os.PathLike[str] = ".") -> StudyConfig:
        """Build from a mapping; a ``base`` given as a path is loaded relative to ``base_dir``.

        Raises:
            ValueError: an unknown key (named, with the closest key) or a bad value.
            FileNotFoundError: the ``base`` file does not exist.
        """
        data = dict(data)
        if isinstance(data.get("base"), (str, os.PathLike)):
            data["base"] = _load_base(Path(base_dir) / data["base"])
        return _from_mapping(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every key (``base`` as the mapping it was resolved to)."""
        return dataclasses.asdict(self)

    @property
    def num_workers(self) -> int:
        """``workers``, or the CPU cores this process may use."""
        if self.workers is not None:
            return self.workers
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_study_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> StudyConfig:
    """Load a study from YAML or JSON, then apply ``key=value`` overrides.

    Override keys are dotted paths: ``workers=2``, ``seeds=[0,1]``, ``base.epochs=1``,
    ``variants.SupCon.lr=0.1``, ``heldout.count=3``. Values are parsed as YAML. A relative
    ``base`` path is resolved against the study file's folder.

    Raises:
        FileNotFoundError: the file (or its ``base`` file) does not exist (named).
        ValueError: unparsable file, unknown key or bad value (the key named).
    """
    from hcl.train.config_io import describe_yaml_error, parse_yaml, read_config_text

    path = Path(path)
    text = read_config_text(path, "study config")
    try:
        data = parse_yaml(text, str(path))
    except yaml.YAMLError as error:
        raise ValueError(f"cannot parse study config {path}: {describe_yaml_error(error)}") from None
    if not isinstance(data, Mapping):
        raise TypeError(f"study config {path} must hold a mapping of keys to values")
    data = dict(data)
    if isinstance(data.get("base"), str):
        data["base"] = _load_base(path.parent / data["base"])
    data = apply_study_overrides(data, overrides)
    try:
        return StudyConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{path}: {error}") from error


def apply_study_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of the study mapping ``data`` with dotted ``key=value`` overrides applied."""
    from hcl.train.config_io import describe_yaml_error, parse_yaml

    data = _deep_copy(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"an override must look like key=value, got {item!r}")
        key, text = (part.strip() for part in item.split("=", 1))
        try:
            value = parse_yaml(text, f"--set {key}")
        except yaml.YAMLError as error:
            raise ValueError(
                f"cannot parse the value of study key {key!r}: {text!r} ({describe_yaml_error(error)})"
            ) from None
        *parents, leaf = key.split(".")
        node = data
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TypeError(f"study key {'.'.join(parents[: i + 1])!r} is not a mapping; cannot set {key!r}")
            node = child
        node[leaf] = value
    return data


def _load_base(path: Path) -> dict[str, Any]:
    from hcl.train import load_config

    return load_config(path).to_dict()


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"study key {prefix.rstrip('.')!r} must be a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ValueError(f"unknown study key {prefix + str(key)!r}{hint}")
    return cls(**dict(data))


def _check_int(key: str, value: Any, *, minimum: int, what: str = "an integer") -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"study key {key!r} must be {what} >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"study key {key!r} must be {what} >= {minimum}, got {value!r}")


def _check_choices(key: str, values: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(values, list):
        raise TypeError(f"study key {key!r} must be a non-empty list drawn from {list(choices)}, got {values!r}")
    if not values:
        raise ValueError(f"study key {key!r} must be a non-empty list drawn from {list(choices)}, got []")
    for value in values:
        if value not in choices:
            raise ValueError(f"study key {key!r} must hold values from {list(choices)}, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"study key {key!r} lists a value twice: {values!r}")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
