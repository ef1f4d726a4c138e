"""The table of losses: every entry builds and runs, the hierarchical losses' per-level terms come
out of the loss pass and match the loop oracle level by level, and a loss registered from outside
trains through hcl.train and is captured as a CUDA graph exactly when its entry says so."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from oracles import oracle_level_terms, paper_default_weights

import hcl.losses.graphed as graphed_module
from hcl import Hierarchy
from hcl.losses import (
    CUDAGraphLoss,
    HiMulCon,
    LossSpec,
    get_loss,
    list_losses,
    loss_display_name,
    register_loss,
    registry,
    spec_of,
)
from hcl.losses.baselines import SupConFinest

REPO = Path(__file__).resolve().parents[2]
# Two coarse classes, ragged finer levels, unknown labels: groups of very different sizes.
LABELS = torch.tensor(
    [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, -1], [0, -1, -1], [1, 2, 0], [1, 2, 0], [1, 2, 1], [1, 3, 0]]
)
LEVEL_TERM_LOSSES = [name for name in list_losses() if get_loss(name).level_terms]
# A hierarchy and labels encoded by it (finest ids global per level), for the losses that use
# tree distances (the hierarchy-aware baselines); the others ignore the hierarchy.
TREE = Hierarchy.from_paths(
    [("a", "a1", "x"), ("a", "a1", "y"), ("a", "a2", "z"), ("b", "b1", "u"), ("b", "b1", "v"), ("b", "b2", "w")]
)
TREE_LABELS = TREE.encode_leaf(["x", "x", "y", "z", "z", "u", "v", "v", "w", "w"])


def features(seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(10, 2, 5, generator=generator, dtype=dtype)


def model_outputs(spec: LossSpec, seed: int, num_classes: int) -> torch.Tensor:
    """What a model gives the loss: embeddings, logits over the finest level's node ids, or
    features followed by those logits."""
    generator = torch.Generator().manual_seed(seed)
    if spec.output == "logits":
        return torch.randn(10, spec.views or 2, num_classes, generator=generator)
    if spec.output == "features_and_logits":
        return torch.randn(10, spec.views or 2, 5 + num_classes, generator=generator)
    return features(seed, torch.float32)


@pytest.mark.parametrize("name", list_losses())
def test_every_registered_loss_builds_and_runs(name: str) -> None:
    spec = get_loss(name)
    module = spec.build(hierarchy=TREE)
    assert type(module) is spec.module_class and spec_of(module) is spec
    outputs = model_outputs(spec, 0, TREE.num_nodes(2)).requires_grad_()
    loss = module(outputs, TREE_LABELS)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert outputs.grad is not None and bool(torch.isfinite(outputs.grad).all())
    if spec.level_terms:
        assert module.last_level_terms.shape == (TREE_LABELS.shape[1],)
        torch.testing.assert_close(module.last_level_terms.sum(), loss.detach(), rtol=1e-6, atol=0)
    assert spec.weighted == ("level_weights" in spec.options)
    assert get_loss(spec.display_name.upper()) is spec and get_loss(spec.module_class.__name__) is spec


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_takes_pml_indices_tuple_none_and_refuses_a_mined_one(name: str) -> None:
    spec = get_loss(name)
    module = spec.build(hierarchy=TREE)
    outputs = model_outputs(spec, 1, TREE.num_nodes(2))
    assert torch.equal(module(outputs, TREE_LABELS, indices_tuple=None), module(outputs, TREE_LABELS))
    mined = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0, 2]), torch.tensor([2, 0]))
    message = f"{spec.module_class.__name__} uses every pair of the batch and takes no indices_tuple"
    with pytest.raises(ValueError, match=message):
        module(outputs, TREE_LABELS, indices_tuple=mined)
    with pytest.raises(ValueError, match=message):
        CUDAGraphLoss(module)(outputs, TREE_LABELS, indices_tuple=mined)


def test_every_exported_loss_module_has_the_pml_signature() -> None:
    import inspect

    import hcl.losses

    modules = [getattr(hcl.losses, n) for n in hcl.losses.__all__]
    modules = [m for m in modules if isinstance(m, type) and issubclass(m, torch.nn.Module)]
    assert len(modules) >= 12
    for module in modules:
        parameter = inspect.signature(module.forward).parameters.get("indices_tuple")
        assert parameter is not None and parameter.default is None, module.__name__
        assert "indices_tuple" in module.forward.__doc__, module.__name__


def test_code_written_for_pml_supcon_runs_after_changing_the_import() -> None:
    from pytorch_metric_learning import losses as pml_losses

    from hcl import losses as hcl_losses

    embeddings = features(2, torch.float64).flatten(0, 1)
    labels = torch.tensor([0, 0, 1, 1, 2, 0, 1, 2, 2, 0] * 2)
    values = [
        lib.SupConLoss(temperature=0.1)(embeddings, labels, indices_tuple=None) for lib in (pml_losses, hcl_losses)
    ]
    torch.testing.assert_close(values[1], values[0].to(values[1].dtype))
    with pytest.raises(ValueError, match="SupConLoss uses every pair"):
        hcl_losses.SupConLoss()(embeddings, labels, (torch.tensor([0]), torch.tensor([1])))


@pytest.mark.parametrize("name", LEVEL_TERM_LOSSES)
@pytest.mark.parametrize("variant", ["defaults", "options"])
def test_level_terms_sum_to_the_loss_and_match_the_oracle_per_level(formulation: str, name: str, variant: str) -> None:
    spec = get_loss(name)
    options: dict = {"temperature": 0.3}
    if variant == "options":
        if spec.weighted:
            options["level_weights"] = [0.5, 2.0, 1.5]
        if "bound_gradient" in spec.options:
            options["bound_gradient"] = False
    module = spec.build(hierarchy=None, **options)
    x = features(1)
    loss = module(x, LABELS)
    terms = module.last_level_terms
    assert terms.dtype == torch.float64 and not terms.requires_grad
    # lambda_l: the given weights, the paper's default, or all ones for a loss without weights.
    weights = options.get("level_weights") or (paper_default_weights(3) if spec.weighted else [1.0] * 3)
    reading = getattr(module, "constraint", None) or "pair"
    expected = torch.stack(oracle_level_terms(x, LABELS, 0.3, weights, spec.constrained, reading))
    torch.testing.assert_close(terms, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(terms.sum(), loss, rtol=1e-12, atol=0)


def test_level_terms_follow_each_call_and_are_none_in_reference_mode() -> None:
    module = get_loss("himulcone").build(hierarchy=None)
    module(features(2), LABELS)
    first = module.last_level_terms
    # One view of distinct classes: no positive pair, so the loss and every term are zero.
    module(features(3)[:3, :1], torch.tensor([[0, 0, 0], [1, 2, 0], [2, 4, 1]]))
    assert not torch.equal(module.last_level_terms, first)
    assert torch.equal(module.last_level_terms, torch.zeros(3, dtype=torch.float64))
    reference = get_loss("himulcone").build(hierarchy=None, mode="reference")
    reference.last_level_terms = first  # as if left over: a reference-mode call must clear it
    reference(features(2), LABELS.clamp(min=0))
    assert reference.last_level_terms is None


def test_names_are_found_in_any_case_and_unknown_names_list_the_choices() -> None:
    assert get_loss("HiMulConE").name == "himulcone"
    assert get_loss("cross-entropy").name == get_loss("CrossEntropyFinest").name == "cross_entropy"
    # Every class name, display name and alias, in any case (an alias: the plain SupConLoss class).
    for name in list_losses():
        spec = get_loss(name)
        for text in (spec.module_class.__name__, spec.display_name, *spec.aliases):
            assert get_loss(text.upper()) is get_loss(text.lower()) is spec, text
    assert get_loss("supconloss").name == get_loss("SupConLoss").name == "supcon"
    assert loss_display_name("hicone") == "HiConE" and loss_display_name("my-run") == "my-run"
    with pytest.raises(ValueError, match=r"unknown loss 'triplet'; choose one of \['himulcone'"):
        get_loss("triplet")


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the table for the test, so that what it registers does not outlive it."""
    monkeypatch.setattr(registry, "_LOSSES", dict(registry._LOSSES))


class RampHiMulCon(HiMulCon):
    """HiMulCon with fixed weights growing toward the fine levels (it takes none from the config)."""


RAMP_WEIGHTS = (0.5, 1.0, 2.0)


def ramp_spec(built: list, graph_capturable: bool) -> LossSpec:
    def build(*, hierarchy: object, temperature: float = 0.1) -> RampHiMulCon:
        module = RampHiMulCon(temperature, level_weights=RAMP_WEIGHTS, check_inputs=False)
        built.append(module)
        return module

    return LossSpec(
        name="ramp_himulcon",
        display_name="HiMulCon (ramp)",
        module_class=RampHiMulCon,
        build=build,
        options={"temperature"},
        hierarchical=True,
        graph_capturable=graph_capturable,
        level_terms=True,
    )


class PlainSupCon(SupConFinest):
    """SupCon under a name of its own; like SupCon, it has no per-level terms."""


def tiny_run_config(loss: str, run_dir: Path) -> Any:
    """A one-step training config on a small synthetic data set."""
    from hcl.train import TrainConfig

    return TrainConfig(
        dataset="synthetic",
        data_options={"depth": 3, "branching": [2, 2, 3], "samples_per_leaf": 8, "image_size": 16, "cache": False},
        loss=loss,
        width=8,
        embedding_dim=16,
        batch_size=32,
        max_steps=1,
        eval_every=-1,
        log_every=1,
        progress=False,
        output_dir=str(run_dir),
    )


@pytest.mark.usefixtures("table")
def test_a_registered_loss_trains_through_hcl_train(tmp_path: Path) -> None:
    from hcl.train import TrainConfig, fit

    built: list = []
    register_loss(ramp_spec(built, graph_capturable=False))
    assert list_losses()[-1] == "ramp_himulcon" and get_loss("RampHiMulCon").name == "ramp_himulcon"
    with pytest.raises(ValueError, match="'level_weights' does not apply to loss 'ramp_himulcon'"):
        TrainConfig(loss="ramp_himulcon", level_weights=[1.0, 1.0, 1.0])
    cfg = tiny_run_config("Ramp_HiMulCon", tmp_path / "run")
    assert cfg.loss == "ramp_himulcon"
    result = fit(cfg)
    assert result.step == 1 and torch.isfinite(torch.tensor(result.history)).all()
    assert len(built) == 1 and tuple(built[0].level_weights) == RAMP_WEIGHTS
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert len(record["loss_levels"]) == 3
    assert sum(record["loss_levels"]) == pytest.approx(record["loss"], rel=1e-5)


@pytest.mark.usefixtures("table")
def test_the_training_log_takes_level_terms_from_the_table(tmp_path: Path) -> None:
    from hcl.train import fit

    # The module sets last_level_terms, but its entry says it has none: none are logged.
    register_loss(dataclasses.replace(ramp_spec([], graph_capturable=False), level_terms=False))
    fit(tiny_run_config("ramp_himulcon", tmp_path / "quiet"))
    record = json.loads((tmp_path / "quiet" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["kind"] == "train" and record["loss_levels"] == []
    # The entry says it has them, but its module never sets them: an error naming the loss.
    register_loss(
        LossSpec(
            name="plain_supcon",
            display_name="SupCon (plain)",
            module_class=PlainSupCon,
            build=lambda *, hierarchy, temperature=0.1: PlainSupCon(temperature=temperature),
            level_terms=True,
        )
    )
    with pytest.raises(AttributeError, match="loss 'plain_supcon' is registered with level_terms=True, but its module"):
        fit(tiny_run_config("plain_supcon", tmp_path / "claims"))


# A module of the user's own that registers a loss when imported.
LOSS_MODULE = '''
from hcl.losses import LossSpec, register_loss
from hcl.losses.baselines import SupConFinest


class EnvSupCon(SupConFinest):
    """SupCon, registered by a module that HCL_LOSS_MODULES names."""


register_loss(
    LossSpec(
        name="env_supcon",
        display_name="SupCon (env)",
        module_class=EnvSupCon,
        build=lambda *, hierarchy, temperature=0.1: EnvSupCon(temperature=temperature),
    )
)
'''


@pytest.mark.usefixtures("table")
def test_hcl_loss_modules_names_modules_that_register_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hcl_env_losses.py").write_text(LOSS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_IMPORTED_LOSS_MODULES", set())
    monkeypatch.delenv("HCL_LOSS_MODULES", raising=False)
    with pytest.raises(ValueError, match="unknown loss 'env_supcon'.* found when HCL_LOSS_MODULES names that module"):
        get_loss("env_supcon")
    try:
        monkeypatch.setenv("HCL_LOSS_MODULES", " hcl_env_losses, ")
        assert get_loss("EnvSupCon").name == "env_supcon" and list_losses()[-1] == "env_supcon"
        assert registry._IMPORTED_LOSS_MODULES == {"hcl_env_losses"}
        with pytest.raises(ValueError, match="unknown loss 'triplet'"):
            get_loss("triplet")  # the module is not imported again (it would register twice)
    finally:
        sys.modules.pop("hcl_env_losses", None)
    monkeypatch.setenv("HCL_LOSS_MODULES", "hcl_env_losses,hcl_no_such_module")
    with pytest.raises(ImportError, match="HCL_LOSS_MODULES names module 'hcl_no_such_module', which cannot be"):
        get_loss("triplet")


def test_hcl_loss_modules_reaches_a_new_process(tmp_path: Path) -> None:
    """What a CLI command or a study's worker does: a fresh interpreter loads a config naming a
    registered loss."""
    (tmp_path / "hcl_env_losses.py").write_text(LOSS_MODULE)
    config = tmp_path / "run.yaml"
    config.write_text("dataset: synthetic\nloss: env_supcon\n")
    code = f"from hcl.train import load_config; print(load_config({str(config)!r}).loss_spec.display_name)"
    env = {**os.environ, "HCL_LOSS_MODULES": "hcl_env_losses"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), str(REPO), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SupCon (env)"


@pytest.mark.usefixtures("table")
def test_registering_checks_names_classes_and_options() -> None:
    spec = register_loss(ramp_spec([], graph_capturable=False))
    with pytest.raises(ValueError, match="'ramp_himulcon' is registered already; pass replace=True"):
        register_loss(spec)
    assert register_loss(spec, replace=True) is spec
    with pytest.raises(ValueError, match="the name 'himulcone' already means loss 'himulcone'"):
        register_loss(
            LossSpec(name="other", display_name="HiMulConE", module_class=torch.nn.Identity, build=spec.build)
        )
    with pytest.raises(ValueError, match="the name 'ramphimulcon' already means loss 'ramp_himulcon'"):
        register_loss(LossSpec(name="other", display_name="Other", module_class=RampHiMulCon, build=spec.build))
    with pytest.raises(ValueError, match=r"unknown options \['margin'\]"):
        LossSpec(
            name="other", display_name="Other", module_class=torch.nn.Identity, build=spec.build, options={"margin"}
        )
    with pytest.raises(ValueError, match="output must be one of"):
        LossSpec(name="other", display_name="Other", module_class=torch.nn.Identity, build=spec.build, output="scores")
    with pytest.raises(ValueError, match="lower-case letters"):
        LossSpec(name="Other Loss", display_name="Other", module_class=torch.nn.Identity, build=spec.build)
    with pytest.raises(ValueError, match="the name 'supconloss' already means loss 'supcon'"):
        register_loss(
            LossSpec(
                name="other",
                display_name="Other",
                module_class=torch.nn.Identity,
                build=spec.build,
                aliases=("SupConLoss",),
            )
        )
    with pytest.raises(TypeError, match="aliases must be a tuple of non-empty names"):
        LossSpec(name="other", display_name="Other", module_class=torch.nn.Identity, build=spec.build, aliases="x")


@pytest.mark.usefixtures("table")
@pytest.mark.parametrize("graph_capturable", [True, False])
def test_the_graph_wrapper_asks_the_table(monkeypatch: pytest.MonkeyPatch, graph_capturable: bool) -> None:
    from hcl.train import build_objective

    monkeypatch.setattr(graphed_module, "dense_fits", lambda *args: True)  # as on a GPU
    register_loss(ramp_spec([], graph_capturable=graph_capturable))
    module = get_loss("ramp_himulcon").build(hierarchy=None)
    x, labels = features(0, torch.float32), LABELS
    assert CUDAGraphLoss(module)._capturable(x, labels) is graph_capturable
    objective = build_objective("ramp_himulcon")
    assert isinstance(objective, CUDAGraphLoss) is graph_capturable
    assert not isinstance(build_objective("ramp_himulcon", cuda_graphs=False), CUDAGraphLoss)
    # The same module is captured or not with its entry, whatever its class could do.
    register_loss(ramp_spec([], graph_capturable=not graph_capturable), replace=True)
    assert CUDAGraphLoss(module)._capturable(x, labels) is not graph_capturable
