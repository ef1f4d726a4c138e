"""Study config: every bad key or value is refused before anything trains, naming the key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from hcl.study import HeldoutSpec, StudyConfig, load_study_config, plan_study, run_study

BASE = {
    "dataset": "synthetic",
    "data_options": {"depth": 3, "branching": [3, 2, 3], "samples_per_leaf": 4, "image_size": 16},
    "width": 8,
    "batch_size": 16,
}


def study(**changes) -> dict:
    data = {
        "base": dict(BASE),
        "variants": {"SupCon": {"loss": "supcon"}, "HiMulCon": {"loss": "himulcon"}},
        "protocols": ["all"],
        "output_dir": "unused",
    }
    data.update(changes)
    return data


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults() -> None:
    cfg = StudyConfig.from_dict(study(protocols=["all", "heldout"]))
    assert cfg.seeds == [0, 1, 2, 3, 4]
    assert cfg.embeddings == ["features", "projection"]
    assert cfg.baseline == "SupCon"  # the first variant
    assert cfg.executor == "process" and cfg.threads_per_worker == 1
    assert cfg.num_workers >= 1
    assert isinstance(cfg.heldout, HeldoutSpec)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"seed": [1]}, ValueError, "unknown study key 'seed'; did you mean 'seeds'?"),
        ({"heldout": {"cont": 2}}, ValueError, "unknown study key 'heldout.cont'; did you mean 'heldout.count'?"),
        ({"seeds": []}, ValueError, "study key 'seeds' must be a non-empty list"),
        ({"seeds": [0, 1, 1, 2, 2]}, ValueError, "study key 'seeds' lists seed(s) [1, 2] more than once"),
        ({"seeds": [0, -1]}, ValueError, "study key 'seeds' must be a list of integers >= 0, got -1"),
        ({"seeds": 3}, TypeError, "study key 'seeds' must be a non-empty list"),
        (
            {"baseline": "HiConE"},
            ValueError,
            "study key 'baseline' must be one of the variants ['SupCon', 'HiMulCon'], got 'HiConE'",
        ),
        ({"variants": {}}, ValueError, "study key 'variants' must map at least one name"),
        ({"variants": {"A": {"seed": 3}}}, ValueError, "study key 'variants.A.seed' is set by the study"),
        ({"variants": {"A": {"output_dir": "x"}}}, ValueError, "study key 'variants.A.output_dir' is set by the study"),
        ({"variants": {"a/b": {}}}, ValueError, "without '/'"),
        ({"variants": {"A": "supcon"}}, TypeError, "study key 'variants.A' must be a mapping"),
        (
            {"protocols": ["all", "unseen"]},
            ValueError,
            "study key 'protocols' must hold values from ['all', 'heldout'], got 'unseen'",
        ),
        ({"protocols": ["all", "all"]}, ValueError, "study key 'protocols' lists a value twice"),
        (
            {"embeddings": ["logits"]},
            ValueError,
            "study key 'embeddings' must hold values from ['features', 'projection']",
        ),
        ({"workers": 0}, ValueError, "study key 'workers' must be an integer >= 1, got 0"),
        ({"workers": "2"}, TypeError, "study key 'workers' must be an integer >= 1, got '2'"),
        ({"heldout": {"per_seed": "yes"}}, TypeError, "study key 'heldout.per_seed' must be true or false"),
        ({"threads_per_worker": 0}, ValueError, "study key 'threads_per_worker' must be an integer >= 1"),
        ({"executor": "slurm"}, ValueError, "study key 'executor' must be one of ['process', 'submitit'], got 'slurm'"),
        ({"base": 3}, TypeError, "study key 'base' must be a TrainConfig mapping or a file path"),
        ({"heldout": {"count": 0}}, ValueError, "study key 'heldout.count' must be an integer >= 1, got 0"),
        ({"heldout": {"classes": []}}, ValueError, "study key 'heldout.classes' must be a non-empty list"),
        ({"heldout": {"classes": ["a", "a"]}}, ValueError, "study key 'heldout.classes' lists a class twice"),
        (
            {"heldout": {"classes": ["a"], "per_seed": True}},
            ValueError,
            "study key 'heldout.per_seed' needs the classes chosen",
        ),
    ],
)
def test_bad_study_keys_are_named(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        StudyConfig.from_dict(study(**changes))
    assert message in str(raised.value)


def test_base_may_not_hold_out_classes() -> None:
    with pytest.raises(ValueError, match="'base.heldout_classes' is set by the 'heldout' protocol"):
        StudyConfig.from_dict(study(base={**BASE, "heldout_classes": ["f0.c0.v0"]}))


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"loss": "supcom"}, "variant 'Bad': config key 'loss' must be one of"),
        ({"lrr": 0.1}, "variant 'Bad': unknown config key 'lrr'; did you mean 'lr'?"),
        ({"loss": "supcon", "bound_gradient": False}, "variant 'Bad': config key 'bound_gradient'"),
        ({"temperature": -1.0}, "config key 'temperature' must be > 0"),
    ],
)
def test_bad_variant_is_named_before_any_training(tmp_path: Path, variant: dict, message: str) -> None:
    data = study(output_dir=str(tmp_path / "out"))
    data["variants"]["Bad"] = variant
    with pytest.raises(ValueError) as error:
        run_study(StudyConfig.from_dict(data), progress=False)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["f0.c0.v0"], "held-out class 'f0.c0.v0' (0, 0, 0) is the only child of 'f0.c0' (0, 0)"),
        (["f0.c0.v9"], "unknown held-out class 'f0.c0.v9'"),
        (["f0.c0"], "held-out class 'f0.c0' (0, 0) is at level 1, not at level 2"),
    ],
)
def test_heldout_class_check_runs_before_any_training(tmp_path: Path, classes: list, message: str) -> None:
    """The held-out spec is checked by hcl.metrics.check_heldout_classes against the training split,
    and its error is the study's, naming the class, raised before any cell starts."""
    data = study(
        protocols=["all", "heldout"], output_dir=str(tmp_path / "out"), seeds=[0, 1], heldout={"classes": classes}
    )
    data["base"]["data_options"] = {**BASE["data_options"], "branching": [3, 2, 1]}  # every variant an only child
    with pytest.raises(ValueError) as error:
        run_study(StudyConfig.from_dict(data), progress=False)
    assert str(error.value).startswith("study key 'heldout': ") and message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_heldout_count_beyond_what_can_be_held_out_is_refused(tmp_path: Path) -> None:
    data = study(protocols=["heldout"], output_dir=str(tmp_path / "out"), heldout={"count": 13})
    with pytest.raises(ValueError, match=r"study key 'heldout': .*count"):
        run_study(StudyConfig.from_dict(data), progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_submitit_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    with pytest.raises(ImportError, match="pip install submitit"):
        run_study(StudyConfig.from_dict(study(executor="submitit", output_dir=str(tmp_path / "out"))), progress=False)
    assert not (tmp_path / "out").exists()


def test_load_resolves_base_file_and_applies_dotted_overrides(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**BASE, "lr": 0.05, "output_dir": "runs/x", "seed": 7}))
    path = write(tmp_path, {**study(), "base": "train.yaml"})
    cfg = load_study_config(
        path, ["base.epochs=2", "variants.SupCon.lr=0.2", "workers=3", "seeds=[4, 5]", "heldout.count=3"]
    )
    assert cfg.base["lr"] == 0.05 and cfg.base["epochs"] == 2 and cfg.base["dataset"] == "synthetic"
    assert cfg.variants["SupCon"] == {"loss": "supcon", "lr": 0.2}
    assert cfg.workers == 3 and cfg.seeds == [4, 5] and cfg.heldout.count == 3
    plan = plan_study(cfg)
    configs = list(plan.configs.values())
    assert [c.seed for c in configs] == [4, 4, 5, 5]  # the base's seed and output_dir are replaced
    assert all(c.output_dir.startswith("unused/cells/") for c in configs)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["workers"], ValueError, "an override must look like key=value"),
        (["protocols.first=1"], TypeError, "study key 'protocols' is not a mapping"),
        (["variants.SupCon.lr=[1"], ValueError, "cannot parse the value of study key 'variants.SupCon.lr'"),
        (["workrs=2"], ValueError, "unknown study key 'workrs'; did you mean 'workers'?"),
    ],
)
def test_bad_overrides(tmp_path: Path, overrides: list[str], error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("[", r"\[")):
        load_study_config(write(tmp_path, study()), overrides)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="study config not found"):
        load_study_config(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="no_train.yaml"):
        load_study_config(write(tmp_path, {**study(), "base": "no_train.yaml"}))


def test_study_files_read_yaml_as_training_configs_do(tmp_path: Path) -> None:
    """One YAML reader: exponent floats are floats, a key given twice is an error with its line."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study()))
    cfg = load_study_config(path, ["variants.SupCon.lr=1e-3", "base.weight_decay=5E-4"])
    assert cfg.variants["SupCon"]["lr"] == 0.001 and cfg.base["weight_decay"] == 0.0005
    path.write_text(yaml.safe_dump(study()) + "seeds: [0]\nseeds: [1]\n")
    with pytest.raises(ValueError, match=r"study\.yaml:\d+:1: key 'seeds' is given twice \(first on line \d+\)"):
        load_study_config(path)
    path.write_bytes("seeds: [0]\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"study config .*study\.yaml is not UTF-8 text"):
        load_study_config(path)


def test_shipped_study_configs_load() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    fashion = load_study_config(configs / "study_fashion_mnist.yaml")
    assert list(fashion.variants)[:4] == ["SupCon", "HiMulCon", "HiMulConE", "HiMulConE-paper"]
    assert fashion.base["loss"] == "himulcone" and fashion.base["bound_gradient"] is False
    assert fashion.seeds == [0, 1, 2, 3, 4] and fashion.protocols == ["all", "heldout"]
    fast = load_study_config(configs / "study_fast.yaml")
    assert len(fast.variants) == 2 and len(fast.seeds) == 2
    synthetic = load_study_config(configs / "study_synthetic.yaml")
    assert synthetic.base["dataset"] == "synthetic" and len(synthetic.seeds) == 5


@pytest.mark.parametrize(
    "name",
    ["study_fashion_mnist", "study_fashion_mnist_long", "study_synthetic", "study_cifar100", "study_deepfashion"],
)
def test_every_variant_of_a_shipped_study_is_a_valid_training_config(name: str) -> None:
    from hcl.train import TrainConfig

    cfg = load_study_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    assert len(cfg.seeds) >= 5 and cfg.baseline in cfg.variants
    for variant, overrides in cfg.variants.items():
        train = TrainConfig.from_dict({**cfg.base, **overrides})
        assert train.loss, variant
