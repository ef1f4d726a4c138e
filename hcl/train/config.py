"""The training configuration: one typed dataclass, loadable from and saved as YAML or JSON.

The command line's ``--set key=value`` overrides are derived from the dataclass fields and their
types, so there is one source of truth for what a run can be configured with. Reading and writing
the files, parsing the overrides and the renamed keys are :mod:`hcl.train.config_io`'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcl._compat import deprecated_attribute, renamed_kwargs
from hcl.losses.constraints import CONSTRAINTS
from hcl.losses.registry import LOSS_MODULES_ENV, LossSpec, get_loss, list_losses
from hcl.train.config_io import override_mapping, read_config_file, upgrade_keys, write_config_file

__all__ = ["LOSSES", "LOSS_DISPLAY_NAMES", "TrainConfig", "apply_overrides", "load_config", "save_config"]

# The losses registered when hcl.train is imported, and their proper names, which reports show.
# The table itself (hcl.losses.list_losses) also holds losses registered later.
LOSSES = list_losses()
LOSS_DISPLAY_NAMES = {name: get_loss(name).display_name for name in LOSSES}
_CHOICES: dict[str, tuple[str, ...]] = {
    "loss_mode": ("paper", "reference"),
    "optimizer": ("sgd", "adamw"),
    "precision": ("fp32", "bf16", "fp16"),
    "sampler": ("hierarchical", "random"),
    "embedding": ("features", "projection"),
    "device": ("auto", "cpu", "cuda", "mps"),
}
_POSITIVE = (
    "num_views",
    "width",
    "embedding_dim",
    "batch_size",
    "epochs",
    "log_every",
    "eval_batch_size",
    "knn_k",
    "levels",
    "train_subset",
    "eval_subset",
    "image_size",
    "head_hidden_dim",
    "max_steps",
)
_NON_NEGATIVE = ("num_workers", "checkpoint_every", "weight_decay", "warmup_epochs", "min_lr", "momentum")
# Longer schedules are typos (epochs=10**12 once tried to allocate a 21.8 TiB learning-rate array).
_MAX_EPOCHS = 1_000_000


@dataclass
class TrainConfig:
    """Everything a training run depends on. Saved as ``<output_dir>/config.json``.

    Construction validates every field: an unknown key raises ValueError, a value of the wrong
    type raises TypeError, and an out-of-range value (NaN or infinity in any float, more than
    a million epochs or warm-up epochs) raises ValueError, each naming the key.
    The loss is looked up in the table of losses (:func:`hcl.losses.get_loss`), which says which
    options apply to it, and stored under its config name. :meth:`from_dict` (and with it YAML
    files and ``--set``) still takes a renamed key under its old name (:data:`hcl.train.config_io.RENAMED_KEYS`),
    with a FutureWarning; from Python, ``TrainConfig(n_views=)`` and ``cfg.n_views`` still work
    too, with a DeprecationWarning.
    """

    n_views = deprecated_attribute("n_views", "num_views")

    # --- data (hcl.data.build_dataset) ---
    dataset: str = "fashion_mnist"  # fashion_mnist, synthetic, deepfashion, cifar100, image_folder
    data_root: str | None = None  # dataset directory; None = the dataset's default location
    data_options: dict[str, Any] = field(default_factory=dict)  # extra build_dataset options
    levels: int | None = None  # hierarchy depth used (the coarsest `levels` levels); None = all
    train_split: str = "train"
    train_subset: int | None = None  # train on a subset of this many images; None = all
    heldout_classes: list[str] | None = None  # finest-level classes kept out of training; None/[] = none
    eval_split: str = "test"  # the gallery (and, without a query split, the query) set
    eval_query_split: str | None = None  # e.g. DeepFashion's "query" against the "gallery" split
    eval_subset: int | None = None  # evaluate on a subset of this many images; None = all
    image_size: int | None = None  # None = the dataset's native size
    num_views: int = 2  # augmented views per image in a batch (formerly n_views; cross_entropy uses 1)
    sampler: str = "hierarchical"  # "hierarchical" (HierarchicalBatchSampler) or "random"
    num_workers: int = 0  # DataLoader worker processes

    # --- model (hcl.models.build_encoder) ---
    backbone: str = "compact_cnn"  # "compact_cnn" or a torchvision model name ("resnet50")
    width: int = 32  # first-stage channels of compact_cnn
    small_images: bool | None = None  # 3x3 stem, no max-pool; None = when image_size <= 64
    pretrained: str | None = None  # local weights file (torchvision or SupCon/MoCo checkpoint)
    head_hidden_dim: int | None = None  # projection MLP hidden width; None = feature dimension
    embedding_dim: int = 128  # projection output dimension
    head_norm: bool = True  # batch norm in the projection head (prevents embedding collapse)
    embedding: str = "features"  # evaluated embedding: backbone "features" or "projection"

    # --- loss (hcl.losses; the table hcl.losses.list_losses(), any case: "HiMulConE" is fine) ---
    loss: str = "himulcone"  # a name in the table (hcl.losses.list_losses()), or one HCL_LOSS_MODULES registers
    loss_mode: str = "paper"  # "paper" or "reference" (the public reference code's behaviour)
    temperature: float = 0.1
    level_weights: list[float] | None = None  # lambda_l, coarse -> fine; None = the loss default
    bound_gradient: bool = True  # hicone/himulcone: False holds the constraint's bound m_i constant
    constraint: str | None = (
        None  # hicone/himulcone: pair, pair_held, level_max, hinge; None = the loss's (hinge, hicone: pair)
    )
    constraint_weight: float | None = None  # the hinge's beta in [0, 1]; None = the loss default
    cpcc_weight: float | None = None  # cpcc_* losses: the CPCC regulariser's lambda; None = 1
    soft_label_beta: float | None = None  # soft_cross_entropy: the soft labels' beta; None = 10

    # --- optimisation ---
    batch_size: int = 256  # images per step over all processes together
    epochs: int = 10
    optimizer: str = "sgd"  # "sgd" (momentum) or "adamw"
    lr: float = 0.1  # peak learning rate, reached after the warm-up
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 0.0
    grad_clip: float | None = None  # max gradient norm; None = no clipping
    max_steps: int | None = None  # cap on the total number of steps (the schedule spans them)

    # --- runtime ---
    device: str = "auto"  # auto = CUDA, else MPS, else CPU
    precision: str = "fp32"  # fp32, bf16 or fp16 autocast (fp16 uses a GradScaler)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    cuda_graphs: bool = True  # hierarchical losses on GPUs: replay the loss as a CUDA graph
    sync_batchnorm: bool = True  # SyncBatchNorm under multi-GPU DistributedDataParallel
    seed: int = 0
    output_dir: str = "runs/default"
    log_every: int = 10  # steps between training lines in metrics.jsonl
    checkpoint_every: int = 0  # steps between checkpoints; 0 = at epoch ends only
    eval_every: int = 0  # epochs between evaluations; 0 = after the last epoch only; -1 = never
    eval_batch_size: int = 512
    retrieval_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    knn_k: int = 10  # neighbours of the k-NN classifier in the evaluation
    progress: bool = True  # live bars on a terminal or notebook; a plain line per epoch is printed either way

    def __post_init__(self) -> None:
        hints = _field_types()
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        try:
            spec = get_loss(self.loss)
        except ValueError:
            raise ValueError(
                f"config key 'loss' must be one of {list(list_losses())}, got {self.loss!r} (a loss registered "
                f"in another module is found when the environment variable {LOSS_MODULES_ENV} names that module)"
            ) from None
        self.loss = spec.name
        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                raise ValueError(f"config key {key!r} must be one of {list(choices)}, got {getattr(self, key)!r}")
        for key in _POSITIVE:
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"config key {key!r} must be >= 1, got {value!r}")
        for key in _NON_NEGATIVE:
            if getattr(self, key) < 0:
                raise ValueError(f"config key {key!r} must be >= 0, got {getattr(self, key)!r}")
        for key in ("epochs", "warmup_epochs"):
            if getattr(self, key) > _MAX_EPOCHS:
                raise ValueError(f"config key {key!r} must be <= {_MAX_EPOCHS}, got {getattr(self, key)!r}")
        if self.eval_every < -1:
            raise ValueError(f"config key 'eval_every' must be >= -1 (-1 = never), got {self.eval_every!r}")
        if self.temperature <= 0:
            raise ValueError(f"config key 'temperature' must be > 0, got {self.temperature!r}")
        if self.lr <= 0:
            raise ValueError(f"config key 'lr' must be > 0, got {self.lr!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"config key 'grad_clip' must be > 0, got {self.grad_clip!r}")
        if not self.retrieval_ks or min(self.retrieval_ks) < 1:
            raise ValueError(f"config key 'retrieval_ks' must be a non-empty list of k >= 1, got {self.retrieval_ks!r}")
        if self.level_weights is not None and not spec.weighted:
            raise ValueError(f"config key 'level_weights' does not apply to loss {self.loss!r}; set it to null")
        if not self.bound_gradient and ("bound_gradient" not in spec.options or self.loss_mode != "paper"):
            holding = _english_list(sorted(n for n in list_losses() if "bound_gradient" in get_loss(n).options))
            raise ValueError(
                f"config key 'bound_gradient' applies to losses {holding} in loss_mode 'paper', not "
                f"{self.loss!r} in {self.loss_mode!r}; set it to true"
            )
        for key in ("constraint", "constraint_weight", "cpcc_weight", "soft_label_beta"):
            value = getattr(self, key)
            if value is not None and key not in spec.options:
                raise ValueError(f"config key {key!r} does not apply to loss {self.loss!r}; set it to null")
        if self.constraint is not None:
            if self.constraint not in CONSTRAINTS:
                raise ValueError(f"config key 'constraint' must be one of {list(CONSTRAINTS)}, got {self.constraint!r}")
            if self.loss_mode != "paper":
                raise ValueError(f"config key 'constraint' applies in loss_mode 'paper', not {self.loss_mode!r}")
            if not self.bound_gradient and self.constraint != "pair_held":
                raise ValueError(
                    f"config key 'bound_gradient' false means constraint 'pair_held' and contradicts constraint "
                    f"{self.constraint!r}; drop bound_gradient"
                )
        if self.constraint_weight is not None and not 0 <= self.constraint_weight <= 1:
            raise ValueError(f"config key 'constraint_weight' must be in [0, 1], got {self.constraint_weight!r}")
        for key in ("cpcc_weight", "soft_label_beta"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"config key {key!r} must be a finite number >= 0, got {value!r}")
        if self.heldout_classes and "unseen_classes" in self.data_options:
            raise ValueError(
                "config keys 'heldout_classes' and 'data_options.unseen_classes' both hold classes "
                "out of training; keep only 'heldout_classes'"
            )
        if spec.output != "embedding" and self.embedding == "projection":
            raise ValueError(
                f"config key 'embedding' must be 'features' for loss {self.loss!r} (it has no projection head)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; an unknown key raises ValueError naming it (and the closest key), as
        does a key given under both its current and its deprecated name."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a config must be a mapping of keys to values, got {type(data).__name__}")
        data = upgrade_keys(data)
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown config key {key!r}{hint}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every field."""
        return dataclasses.asdict(self)

    def loss_options(self) -> dict[str, Any]:
        """The loss options of :func:`hcl.train.build_objective`, from their config keys."""
        return {
            "temperature": self.temperature,
            "level_weights": self.level_weights,
            "mode": self.loss_mode,
            "bound_gradient": self.bound_gradient,
            "constraint": self.constraint,
            "constraint_weight": self.constraint_weight,
            "cpcc_weight": self.cpcc_weight,
            "soft_label_beta": self.soft_label_beta,
        }

    @property
    def loss_spec(self) -> LossSpec:
        """The loss's entry in the table of losses (:mod:`hcl.losses.registry`)."""
        return get_loss(self.loss)

    @property
    def views_per_image(self) -> int:
        """Views per image actually drawn: the loss's own count (1 for cross-entropy), else
        ``num_views``."""
        views = self.loss_spec.views
        return self.num_views if views is None else views

    @property
    def needs_classifier(self) -> bool:
        """Whether the model needs a classifier over the finest level's classes (a loss on
        logits, such as cross-entropy) instead of a projection head."""
        return self.loss_spec.output != "embedding"


# The generated __init__ exists only after the class body, so it is wrapped here.
TrainConfig.__init__ = renamed_kwargs(n_views="num_views")(TrainConfig.__init__)  # type: ignore[method-assign]


def _english_list(items: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``; ``[]`` -> ``"none"``."""
    if len(items) < 2:
        return items[0] if items else "none"
    return ", ".join(items[:-1]) + " and " + items[-1]


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except TypeError:
                continue
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range
                number = math.inf
            if not math.isfinite(number):
                raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")
            return number
        if isinstance(value, str) and value.strip().lower().lstrip("+-.") in ("nan", "inf", "infinity"):
            raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise TypeError(f"config key {key!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied (``--set`` on the CLI).

    Values are parsed as YAML (``lr=0.05``, ``channels_last=true``, ``level_weights=[1,2,3]``,
    ``pretrained=null``), except that a string field keeps the text as written.
    ``data_options.<name>=value`` sets one entry of ``data_options``.

    Raises:
        ValueError: an override without ``=``, or an unknown key (named).
        TypeError: a value of the wrong type for its key (named).
    """
    return TrainConfig.from_dict(override_mapping(cfg.to_dict(), overrides, _field_types()))


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> TrainConfig:
    """Load a config from YAML (``.yaml``/``.yml``) or JSON (``.json``), then apply overrides.

    Raises:
        FileNotFoundError: the file does not exist (named).
        ValueError / TypeError: unparsable file, unknown key or wrong type (the key named).
    """
    path = Path(path)
    data = read_config_file(path)
    try:
        cfg = TrainConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{path}: {error}") from error
    return apply_overrides(cfg, overrides) if overrides else cfg


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write ``cfg`` as JSON (``.json``) or YAML (any other suffix); returns the path."""
    return write_config_file(cfg.to_dict(), path)
