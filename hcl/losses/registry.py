"""The table of losses: one entry per loss that training can use, saying what it is and can do.

Every part of hcl that must know the losses asks this table instead of matching names or
classes: the config (which loss names exist, which options each takes, whether the model needs
a classifier), :func:`hcl.train.build_objective` (which builds from it), the report (display
names), :class:`hcl.losses.CUDAGraphLoss` (which modules it may capture) and the tests (every
loss). A new loss is one :func:`register_loss` call, after which ``TrainConfig(loss=name)``
trains with it::

    register_loss(LossSpec(
        name="linear_himulcon", display_name="HiMulCon (linear)", module_class=LinearHiMulCon,
        build=lambda *, hierarchy, temperature=0.1: LinearHiMulCon(temperature),
        options={"temperature"}, hierarchical=True, level_terms=True,
    ))

The table lives in the process that registered the loss. So that other processes find it too
(``hcl evaluate``, :func:`hcl.train.load_config` in a new session, a study's spawned workers),
name the modules that register losses in the environment variable ``HCL_LOSS_MODULES``,
comma-separated (``HCL_LOSS_MODULES=my_project.losses``): :func:`get_loss` imports each of them,
once, before it reports a name as unknown. Child processes inherit the variable.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from hcl.losses.baselines import CrossEntropyFinest, SimCLRObjective, SupConFinest
from hcl.losses.cpcc_regularizer import CPCCCrossEntropy, CPCCSupCon
from hcl.losses.hierarchical import HiConE, HiMulCon, HiMulConE
from hcl.losses.soft_labels import SoftLabelCrossEntropy

if TYPE_CHECKING:
    from hcl.hierarchy import Hierarchy

__all__ = [
    "LOSS_MODULES_ENV",
    "LOSS_OPTIONS",
    "LossSpec",
    "get_loss",
    "list_losses",
    "loss_display_name",
    "register_loss",
    "spec_of",
]

# The options a loss may take, each set by the TrainConfig key of the same name (mode: loss_mode).
# ``temperature`` and ``mode`` are shared settings that a loss without them ignores; each of the
# others has a value meaning "not set" (below), and setting it for a loss that does not take it
# is an error. An option left unset is not passed to ``build``, so the loss's own default holds.
OPTION_UNSET: dict[str, Any] = {
    "level_weights": None,
    "bound_gradient": True,
    "constraint": None,
    "constraint_weight": None,
    "cpcc_weight": None,
    "soft_label_beta": None,
}
SHARED_OPTIONS = ("temperature", "mode")
LOSS_OPTIONS = (*SHARED_OPTIONS, *OPTION_UNSET)
_OUTPUTS = ("embedding", "logits", "features_and_logits")


@dataclass(frozen=True)
class LossSpec:
    """One loss of the table.

    Attributes:
        name: the config name (``TrainConfig.loss``): lower-case letters, digits and ``_``.
        display_name: the proper name that reports show, e.g. ``"HiMulConE"``.
        module_class: the class of the modules ``build`` returns. :func:`spec_of` finds a
            module's entry by its exact class, so no two entries share one.
        build: ``build(*, hierarchy, **options) -> nn.Module``, given ``hierarchy`` (the
            :class:`hcl.Hierarchy` of the labels, or None when the caller has none) and those of
            its ``options`` that the caller sets. The module is called as
            ``module(outputs, labels)`` and returns a scalar; built for training, it skips the
            input checks that would wait for the GPU (the training step checks the loss value).
        options: which of :data:`LOSS_OPTIONS` it takes: ``temperature``, ``level_weights``
            (lambda_l, coarse to fine), ``mode`` (``"paper"`` or ``"reference"``),
            ``bound_gradient``, ``constraint`` and ``constraint_weight`` (the constraint's
            reading, :mod:`hcl.losses.constraints`), ``cpcc_weight`` (the CPCC regulariser's
            lambda), ``soft_label_beta`` (the soft labels' beta).
        hierarchical: it uses every level of the labels (else one level, or none).
        constrained: it applies the hierarchy constraint.
        output: ``"embedding"``: trained on the projection head's embeddings; ``"logits"``: on
            the logits of a classifier over the finest level's classes, which the model then
            needs instead of a projection head; ``"features_and_logits"``: on the backbone
            features followed by those logits, (B, V, D + K).
        views: views per image it trains on; None: the config's ``num_views``.
        graph_capturable: its modules never wait for the GPU when their ``check_inputs`` is False
            and their ``mode`` is ``"paper"`` (where they have these), so
            :class:`hcl.losses.CUDAGraphLoss` may capture them.
        level_terms: its modules set ``last_level_terms`` in every call: that call's per-level
            terms, an (L,) detached tensor summing to the loss, computed in the same pass (None
            in a mode without such a split).
        aliases: further names :func:`get_loss` finds it by, in any case, e.g. the class name
            users know from another library (``"SupConLoss"`` for ``supcon``).

    Shape:
        outputs: (B, V, D) embeddings or (B, V, K) logits; labels: (B, L) int64, column 0
        coarsest, -1 unknown. The module returns a scalar.
    """

    name: str
    display_name: str
    module_class: type[nn.Module]
    build: Callable[..., nn.Module]
    options: frozenset[str] = frozenset({"temperature"})
    hierarchical: bool = False
    constrained: bool = False
    output: str = "embedding"
    views: int | None = None
    graph_capturable: bool = False
    level_terms: bool = False
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"a loss name must be lower-case letters, digits and '_', got {self.name!r}")
        if not isinstance(self.display_name, str) or not self.display_name.strip():
            raise ValueError(f"loss {self.name!r}: display_name must be a non-empty string, got {self.display_name!r}")
        if not (isinstance(self.module_class, type) and issubclass(self.module_class, nn.Module)):
            raise TypeError(f"loss {self.name!r}: module_class must be an nn.Module class, got {self.module_class!r}")
        if not callable(self.build):
            raise TypeError(f"loss {self.name!r}: build must be callable, got {self.build!r}")
        if isinstance(self.options, str):
            raise TypeError(f"loss {self.name!r}: options must be a collection of names, got {self.options!r}")
        options = frozenset(self.options)
        unknown = sorted(options - set(LOSS_OPTIONS))
        if unknown:
            raise ValueError(
                f"loss {self.name!r}: unknown options {unknown}; a loss takes some of {list(LOSS_OPTIONS)} "
                "(a new option needs a TrainConfig key and a build_objective argument)"
            )
        object.__setattr__(self, "options", options)
        if self.output not in _OUTPUTS:
            raise ValueError(f"loss {self.name!r}: output must be one of {list(_OUTPUTS)}, got {self.output!r}")
        if isinstance(self.aliases, str) or not all(isinstance(a, str) and a.strip() for a in self.aliases):
            raise TypeError(f"loss {self.name!r}: aliases must be a tuple of non-empty names, got {self.aliases!r}")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if self.views is not None and (
            isinstance(self.views, bool) or not isinstance(self.views, int) or self.views < 1
        ):
            raise ValueError(f"loss {self.name!r}: views must be None or an int >= 1, got {self.views!r}")

    @property
    def weighted(self) -> bool:
        """Whether it takes level weights lambda_l (the ``level_weights`` option)."""
        return "level_weights" in self.options

    def lookup_keys(self) -> frozenset[str]:
        """The names :func:`get_loss` finds it by, normalised: config, display and class name, and aliases."""
        names = (self.name, self.display_name, self.module_class.__name__, *self.aliases)
        return frozenset(_normalise(text) for text in names)


_LOSSES: dict[str, LossSpec] = {}
# The environment variable naming modules that register losses (comma-separated), and those
# of its modules imported so far.
LOSS_MODULES_ENV = "HCL_LOSS_MODULES"
_IMPORTED_LOSS_MODULES: set[str] = set()


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register_loss(spec: LossSpec, *, replace: bool = False) -> LossSpec:
    """Add a loss to the table (the extension point for new losses); returns ``spec``.

    Raises:
        ValueError: ``spec.name`` is registered already (unless ``replace``), or one of its
            names (:meth:`LossSpec.lookup_keys`, its class name among them) belongs to another
            entry, which also keeps every entry's ``module_class`` its own.
        TypeError: ``spec`` is not a :class:`LossSpec`.
    """
    if not isinstance(spec, LossSpec):
        raise TypeError(f"register_loss takes a LossSpec, got {type(spec).__name__}")
    if spec.name in _LOSSES and not replace:
        raise ValueError(f"loss {spec.name!r} is registered already; pass replace=True to replace it")
    for other in _LOSSES.values():
        if other.name == spec.name:
            continue
        shared = sorted(spec.lookup_keys() & other.lookup_keys())
        if shared:
            raise ValueError(
                f"loss {spec.name!r}: the name {shared[0]!r} already means loss {other.name!r} (a loss needs a "
                "config name, display name and module class of its own; a subclass will do)"
            )
    _LOSSES[spec.name] = spec
    return spec


def get_loss(name: str) -> LossSpec:
    """The entry of a loss, by its config name, display name, class name or an alias, in any
    case (``"himulcone"``, ``"HiMulConE"``, ``"cross-entropy"``, ``"SupConLoss"``).

    A name not in the table is looked up again after importing the modules that
    ``HCL_LOSS_MODULES`` names (:data:`LOSS_MODULES_ENV`; see :mod:`hcl.losses.registry`).

    Raises:
        ValueError: no loss has that name (the registered names are listed).
        TypeError: ``name`` is not a string.
        ImportError: a module that ``HCL_LOSS_MODULES`` names cannot be imported (named).
    """
    if not isinstance(name, str):
        raise TypeError(f"a loss name must be a string, got {name!r} ({type(name).__name__})")
    key = _normalise(name)
    for attempt in range(2):
        for spec in _LOSSES.values():
            if key in spec.lookup_keys():
                return spec
        if attempt == 0 and not _import_loss_modules():
            break
    raise ValueError(
        f"unknown loss {name!r}; choose one of {list(_LOSSES)} (a loss registered in another module is "
        f"found when {LOSS_MODULES_ENV} names that module)"
    )


def _import_loss_modules() -> bool:
    """Import the modules of ``HCL_LOSS_MODULES`` not imported yet; returns whether there were any."""
    names = [name.strip() for name in os.environ.get(LOSS_MODULES_ENV, "").split(",")]
    new = [name for name in names if name and name not in _IMPORTED_LOSS_MODULES]
    for name in new:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"{LOSS_MODULES_ENV} names module {name!r}, which cannot be imported: {error}") from error
        _IMPORTED_LOSS_MODULES.add(name)
    return bool(new)


def list_losses() -> tuple[str, ...]:
    """The config names of every registered loss, in registration order."""
    return tuple(_LOSSES)


def spec_of(module: Any) -> LossSpec | None:
    """The entry whose ``module_class`` is exactly ``type(module)``, or None."""
    for spec in _LOSSES.values():
        if type(module) is spec.module_class:
            return spec
    return None


def loss_display_name(name: str) -> str:
    """The display name of a registered config name (``"himulcone"`` -> ``"HiMulConE"``); any
    other name unchanged."""
    spec = _LOSSES.get(name)
    return name if spec is None else spec.display_name


def _build_hierarchical(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    def build(*, hierarchy: Hierarchy | None = None, **options: Any) -> nn.Module:
        if options.get("mode") == "reference":
            # hcl's data sets carry no per-image instance column, which the reference code
            # expects last and never uses as a level: append one so the finest label is a level.
            options["instance_column"] = "absent"
        return cls(**options, check_inputs=False)

    return build


def _build_supcon(*, hierarchy: Hierarchy | None = None, temperature: float = 0.1) -> nn.Module:
    return SupConFinest(temperature=temperature)


def _build_simclr(*, hierarchy: Hierarchy | None = None, temperature: float = 0.1) -> nn.Module:
    return SimCLRObjective(temperature=temperature)


def _build_cross_entropy(*, hierarchy: Hierarchy | None = None) -> nn.Module:
    return CrossEntropyFinest()


def _needs_hierarchy(name: str, hierarchy: Hierarchy | None) -> Hierarchy:
    if hierarchy is None:
        raise ValueError(f"loss {name!r} needs the label hierarchy (its tree distances); pass hierarchy=")
    return hierarchy


def _build_cpcc_supcon(*, hierarchy: Hierarchy | None = None, temperature: float = 0.1, cpcc_weight: float = 1.0):
    tree = _needs_hierarchy("cpcc_supcon", hierarchy)
    return CPCCSupCon(tree, temperature=temperature, cpcc_weight=cpcc_weight, check_inputs=False)


def _build_cpcc_cross_entropy(*, hierarchy: Hierarchy | None = None, cpcc_weight: float = 1.0) -> nn.Module:
    return CPCCCrossEntropy(
        _needs_hierarchy("cpcc_cross_entropy", hierarchy), cpcc_weight=cpcc_weight, check_inputs=False
    )


def _build_soft_cross_entropy(*, hierarchy: Hierarchy | None = None, soft_label_beta: float = 10.0) -> nn.Module:
    return SoftLabelCrossEntropy(
        _needs_hierarchy("soft_cross_entropy", hierarchy), beta=soft_label_beta, check_inputs=False
    )


# The paper's losses: every level, capturable as a CUDA graph, per-level terms from the same pass.
_PAPER_LOSS: dict[str, Any] = {"hierarchical": True, "graph_capturable": True, "level_terms": True}
_BUILTIN_LOSSES = (
    LossSpec(
        name="himulcone",
        display_name="HiMulConE",
        module_class=HiMulConE,
        build=_build_hierarchical(HiMulConE),
        options=frozenset(
            {"temperature", "level_weights", "mode", "bound_gradient", "constraint", "constraint_weight"}
        ),
        constrained=True,
        **_PAPER_LOSS,
    ),
    LossSpec(
        name="himulcon",
        display_name="HiMulCon",
        module_class=HiMulCon,
        build=_build_hierarchical(HiMulCon),
        options=frozenset({"temperature", "level_weights", "mode"}),
        **_PAPER_LOSS,
    ),
    LossSpec(
        name="hicone",
        display_name="HiConE",
        module_class=HiConE,
        build=_build_hierarchical(HiConE),
        options=frozenset({"temperature", "mode", "bound_gradient", "constraint", "constraint_weight"}),
        constrained=True,
        **_PAPER_LOSS,
    ),
    # SupConLoss: the plain loss class, hcl.losses.SupConLoss, and pytorch-metric-learning's name.
    LossSpec(
        name="supcon", display_name="SupCon", module_class=SupConFinest, build=_build_supcon, aliases=("SupConLoss",)
    ),
    LossSpec(name="simclr", display_name="SimCLR", module_class=SimCLRObjective, build=_build_simclr),
    LossSpec(
        name="cross_entropy",
        display_name="cross-entropy",
        module_class=CrossEntropyFinest,
        build=_build_cross_entropy,
        options=frozenset(),
        output="logits",
        views=1,
    ),
    # Hierarchy-aware baselines: Zeng et al. (ICLR 2023) and Bertinetto et al. (CVPR 2020).
    LossSpec(
        name="cpcc_supcon",
        display_name="SupCon + CPCC",
        module_class=CPCCSupCon,
        build=_build_cpcc_supcon,
        options=frozenset({"temperature", "cpcc_weight"}),
        hierarchical=True,
    ),
    LossSpec(
        name="cpcc_cross_entropy",
        display_name="cross-entropy + CPCC",
        module_class=CPCCCrossEntropy,
        build=_build_cpcc_cross_entropy,
        options=frozenset({"cpcc_weight"}),
        hierarchical=True,
        output="features_and_logits",
        views=1,
    ),
    LossSpec(
        name="soft_cross_entropy",
        display_name="soft-label CE",
        module_class=SoftLabelCrossEntropy,
        build=_build_soft_cross_entropy,
        options=frozenset({"soft_label_beta"}),
        hierarchical=True,
        output="logits",
        views=1,
    ),
)
for _spec in _BUILTIN_LOSSES:
    register_loss(_spec)
