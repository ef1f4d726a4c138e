"""TrainConfig: typed fields, YAML/JSON round trips, --set overrides, errors naming the key."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hcl.losses import get_loss, list_losses
from hcl.train import LOSS_DISPLAY_NAMES, LOSSES, TrainConfig, apply_overrides, load_config, save_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = TrainConfig(dataset="synthetic", level_weights=[1, 2.5, 3], data_options={"depth": 3}, lr=1)
    path = save_config(cfg, tmp_path / f"run{suffix}")
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.level_weights == [1.0, 2.5, 3.0] and isinstance(loaded.lr, float)


def test_overrides_follow_field_types() -> None:
    cfg = apply_overrides(
        TrainConfig(),
        [
            "lr=0.5",
            "epochs=3",
            "channels_last=true",
            "level_weights=[1, 2, 3]",
            "pretrained=null",
            "output_dir=123",
            "data_options.depth=3",
            "max_steps=7",
        ],
    )
    assert cfg.lr == 0.5 and cfg.epochs == 3 and cfg.channels_last is True
    assert cfg.level_weights == [1.0, 2.0, 3.0] and cfg.pretrained is None
    assert cfg.output_dir == "123"  # a string field keeps the text
    assert cfg.data_options == {"depth": 3} and cfg.max_steps == 7


@pytest.mark.parametrize(
    ("override", "error", "pattern"),
    [
        ("lrr=0.1", ValueError, "unknown config key 'lrr'; did you mean 'lr'"),
        ("epochs=1.5", TypeError, "config key 'epochs' must be int, got 1.5"),
        ("lr=fast", TypeError, "config key 'lr' must be float"),
        ("channels_last=1", TypeError, "config key 'channels_last' must be bool"),
        ("retrieval_ks=[1, x]", TypeError, r"config key 'retrieval_ks\[1\]' must be int"),
        ("loss=triplet", ValueError, "config key 'loss' must be one of"),
        ("precision=fp8", ValueError, "config key 'precision' must be one of"),
        ("batch_size=0", ValueError, "config key 'batch_size' must be >= 1"),
        ("temperature=0", ValueError, "config key 'temperature' must be > 0"),
        ("eval_every=-2", ValueError, "config key 'eval_every' must be >= -1"),
        ("lr", ValueError, "must look like key=value"),
    ],
)
def test_override_errors_name_the_key(override: str, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        apply_overrides(TrainConfig(), [override])


def _float_keys() -> list[str]:
    """Every config key whose type holds a float (``float``, ``float | None``, ``list[float] | None``)."""
    return [f.name for f in dataclasses.fields(TrainConfig) if "float" in str(f.type)]


def test_the_float_keys_are_found() -> None:
    assert set(_float_keys()) >= {"lr", "momentum", "weight_decay", "grad_clip", "min_lr", "warmup_epochs"}
    assert set(_float_keys()) >= {"temperature", "level_weights", "constraint_weight", "cpcc_weight"}


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400", "nan", "-inf", "Infinity"])
@pytest.mark.parametrize("key", _float_keys())
def test_every_float_key_refuses_nan_and_infinity(key: str, value: str) -> None:
    loss = {"cpcc_weight": "cpcc_supcon", "soft_label_beta": "soft_cross_entropy"}.get(key, "himulcone")
    text = f"[1, {value}, 1]" if key == "level_weights" else value
    name = f"{key}[1]" if key == "level_weights" else key
    with pytest.raises(
        ValueError, match=rf"config key '{re.escape(name)}' must be a finite number, got '?[-+]?(nan|inf|Infinity)"
    ):
        apply_overrides(TrainConfig(loss=loss), [f"{key}={text}"])
    with pytest.raises(ValueError, match=rf"config key '{re.escape(name)}' must be a finite number"):
        number = float(value.replace(".", ""))
        TrainConfig.from_dict({"loss": loss, key: [1, number] if key == "level_weights" else number})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=1000000000000", r"config key 'epochs' must be <= 1000000, got 1000000000000"),
        ("warmup_epochs=1e300", r"config key 'warmup_epochs' must be <= 1000000, got 1e\+300"),
    ],
)
def test_the_schedule_length_is_bounded_in_the_config(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_overrides(TrainConfig(), [override])
    assert apply_overrides(TrainConfig(), ["epochs=1000000"]).epochs == 1_000_000


def test_a_schedule_longer_than_a_run_may_take_is_refused_before_allocating_it(tmp_path: Path) -> None:
    from hcl.train import fit

    # 12 leaves of 9 training images: 108 steps an epoch at batch size 1, 1.08e8 steps in all.
    cfg = TrainConfig(
        dataset="synthetic",
        data_options={"depth": 3, "branching": [2, 2, 3], "samples_per_leaf": 9, "image_size": 16, "cache": False},
        sampler="random",
        batch_size=1,
        epochs=1_000_000,
        loss="supcon",
        progress=False,
        output_dir=str(tmp_path / "run"),
    )
    with pytest.raises(ValueError, match=r"'epochs' \(1000000\) at 108 steps per epoch gives 108000000 steps"):
        fit(cfg)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("text", ["1e-3", "1E-3", "1.0e-3", "+1e-3", "0.001"])
def test_exponent_floats_parse_as_floats_in_set_and_in_files(tmp_path: Path, text: str) -> None:
    assert apply_overrides(TrainConfig(), [f"lr={text}", f"level_weights=[{text}, 2e0, 3]"]).lr == 0.001
    path = tmp_path / "c.yaml"
    path.write_text(f"lr: {text}\nweight_decay: 5e-4\nlevel_weights: [{text}, 1e0, 2]\n")
    cfg = load_config(path)
    assert (cfg.lr, cfg.weight_decay, cfg.level_weights) == (0.001, 0.0005, [0.001, 1.0, 2.0])
    assert apply_overrides(TrainConfig(), ["data_options.scale=1e-3"]).data_options == {"scale": 0.001}


@pytest.mark.parametrize(
    ("suffix", "text", "message"),
    [
        (".yaml", "lr: 0.1\nepochs: 3\nlr: 0.2\n", r"c\.yaml:3:1: key 'lr' is given twice \(first on line 1\)"),
        (".yaml", "data_options:\n  depth: 3\n  depth: 4\n", r"c\.yaml:3:3: key 'depth' is given twice"),
        (".yaml", "{lr: 0.1, lr: 0.2}\n", r"c\.yaml:1:11: key 'lr' is given twice"),
        (".json", '{"lr": 0.1, "lr": 0.2}', r"c\.json: key 'lr' is given twice"),
    ],
)
def test_a_key_given_twice_is_refused_naming_the_key_and_line(
    tmp_path: Path, suffix: str, text: str, message: str
) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data_options:\n  <<: {depth: 3, cache: true}\n  depth: 2\n")
    assert load_config(path).data_options == {"depth": 2, "cache": True}


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00\x01binary\x80\x81", "lr: 0.1\n".encode("utf-16"), b"lr: 0.1\x00\x01\n"],
    ids=["binary", "utf-16", "control-characters"],
)
def test_a_config_file_that_is_not_text_is_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value), info.value


def test_file_errors_name_the_key_and_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: synthetic\nbatchsize: 64\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key 'batchsize'; did you mean 'batch_size'"):
        load_config(path)
    path.write_text("epochs: ten\n")
    with pytest.raises(TypeError, match="config key 'epochs' must be int, got 'ten'"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "c.json").write_text(json.dumps({"loss": "hicone", "level_weights": [1, 1]}))
    with pytest.raises(ValueError, match="'level_weights' does not apply to loss 'hicone'"):
        load_config(tmp_path / "c.json")


@pytest.mark.parametrize(("loss", "mode"), [("supcon", "paper"), ("himulcon", "paper"), ("himulcone", "reference")])
def test_held_bound_needs_a_constrained_paper_loss(loss: str, mode: str) -> None:
    with pytest.raises(ValueError, match=f"'bound_gradient' applies to losses hicone and himulcone.*not '{loss}'"):
        TrainConfig(loss=loss, loss_mode=mode, bound_gradient=False)
    assert TrainConfig(loss="hicone", bound_gradient=False).bound_gradient is False


def test_losses_come_from_the_table_under_any_of_their_names() -> None:
    assert LOSSES == list_losses()
    assert LOSS_DISPLAY_NAMES == {name: get_loss(name).display_name for name in list_losses()}
    for name in list_losses():
        spec = get_loss(name)
        for given in (name, spec.display_name, spec.display_name.upper(), spec.module_class.__name__, *spec.aliases):
            assert TrainConfig(loss=given).loss == name
    assert apply_overrides(TrainConfig(), ["loss=HiConE"]).loss == "hicone"
    assert apply_overrides(TrainConfig(), ["loss=supconloss"]).loss == "supcon"


def test_cross_entropy_uses_one_view() -> None:
    assert TrainConfig(loss="cross_entropy", num_views=2).views_per_image == 1
    assert TrainConfig(loss="supcon", num_views=3).views_per_image == 3
    assert TrainConfig(loss="cross_entropy").needs_classifier and not TrainConfig(loss="supcon").needs_classifier
    with pytest.raises(ValueError, match="'embedding' must be 'features' for loss 'cross_entropy'"):
        TrainConfig(loss="cross_entropy", embedding="projection")


def test_old_key_n_views_still_works_with_a_future_warning(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match="config key 'n_views' is deprecated, use 'num_views'"):
        assert TrainConfig.from_dict({"n_views": 3}).num_views == 3
    path = tmp_path / "old.yaml"
    path.write_text("loss: supcon\nn_views: 4\n")
    with pytest.warns(FutureWarning, match="'n_views' is deprecated"):
        assert load_config(path).num_views == 4
    with pytest.warns(FutureWarning, match="'n_views' is deprecated"):
        assert apply_overrides(TrainConfig(), ["n_views=5"]).num_views == 5
    both = r"config keys 'num_views' and 'n_views' \(its deprecated name\) are both given"
    with pytest.raises(ValueError, match=both):
        TrainConfig.from_dict({"n_views": 3, "num_views": 3})
    with pytest.raises(ValueError, match=both):
        apply_overrides(TrainConfig(), ["num_views=2", "n_views=2"])
    path.write_text("n_views: 4\nnum_views: 4\n")
    with pytest.raises(ValueError, match=f"{path}: {both}"):
        load_config(path)
    assert "n_views" not in TrainConfig().to_dict() and TrainConfig().to_dict()["num_views"] == 2


def test_the_old_python_name_n_views_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"TrainConfig.__init__\(\): 'n_views' is deprecated, use 'num_views'"):
        cfg = TrainConfig(loss="supcon", n_views=3)
    assert cfg.num_views == 3 and cfg == TrainConfig(loss="supcon", num_views=3)
    with pytest.warns(DeprecationWarning, match="'n_views' is deprecated, use 'num_views'"):
        assert cfg.n_views == 3
    with pytest.warns(DeprecationWarning, match="'n_views' is deprecated, use 'num_views'"):
        cfg.n_views = 4
    assert cfg.num_views == 4 and "n_views" not in cfg.to_dict()
    with pytest.raises(TypeError, match="got both 'num_views' and its deprecated name 'n_views'"):
        TrainConfig(n_views=3, num_views=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataclasses.replace(cfg, num_views=5).num_views == 5  # the current name stays silent


def test_an_old_config_key_is_reported_outside_tests_too(tmp_path: Path) -> None:
    """Python's default warning filters show a FutureWarning raised in library code (a
    DeprecationWarning there would be hidden): a plain ``python`` process reports the old key."""
    path = tmp_path / "old.yaml"
    path.write_text("n_views: 4\n")
    code = f"from hcl.train import load_config; print(load_config({str(path)!r}).num_views)"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "4"
    assert "FutureWarning: config key 'n_views' is deprecated, use 'num_views'" in out.stderr, out.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("study_")))
def test_shipped_configs_load(name: str) -> None:
    """Every training config (the study configs have tests/study/test_study_config.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated keys in what we ship
        cfg = load_config(CONFIGS / name)
    assert cfg.output_dir.startswith("runs/")


def test_shipped_configs_exist() -> None:
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {
        "fashion_mnist_himulcone.yaml",
        "fashion_mnist_supcon.yaml",
        "fashion_mnist_cross_entropy.yaml",
        "synthetic_quick.yaml",
        "deepfashion_resnet50.yaml",
        "cifar100_resnet18.yaml",
    } <= names


@pytest.mark.parametrize(("key", "split"), [("train_subset", "train"), ("eval_subset", "test")])
def test_a_subset_larger_than_the_split_names_its_config_key(key: str, split: str) -> None:
    from hcl.demo import find_configs_dir
    from hcl.train import build_split

    cfg = load_config(find_configs_dir() / "synthetic_quick.yaml", [f"{key}=100000"])
    with pytest.raises(
        ValueError, match=rf"config key '{key}': subset must be an int in 1\.\.\d+ .* got 100000 in the '{split}' split"
    ):
        build_split(cfg, split)
