"""fit(cfg) on the synthetic set: the loss falls, the run directory, exact resume, faults."""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from train.tiny import SYNTHETIC, tiny_config

from hcl import Hierarchy
from hcl.data import HierarchicalBatchSampler
from hcl.losses import get_loss, list_losses
from hcl.train import (
    NonFiniteLossError,
    SeededViews,
    TrainConfig,
    build_objective,
    build_split,
    fit,
    load_checkpoint,
    load_run,
    train,
)


def _config(tmp_path: Path, name: str = "run", **changes) -> TrainConfig:
    return tiny_config(tmp_path, name, **changes)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fit_loss_falls_and_writes_the_run_directory(tmp_path: Path) -> None:
    cfg = _config(tmp_path, epochs=4)
    result = fit(cfg)
    run = Path(cfg.output_dir)
    assert result.step == 12 and result.epoch == 4 and not result.interrupted
    assert np.mean(result.history[-3:]) < np.mean(result.history[:3]) - 0.1
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    assert Hierarchy.from_json(run / "hierarchy.json").level_names == ["family", "class", "variant"]
    records = _records(run)
    assert [r["step"] for r in records] == list(range(1, 13))
    first = records[0]
    assert set(first) == {"kind", "step", "epoch", "loss", "loss_levels", "lr", "images_per_s"}
    assert first["kind"] == "train" and len(first["loss_levels"]) == 3
    # The per-level terms of the paper-mode loss add up to the loss.
    assert sum(first["loss_levels"]) == pytest.approx(first["loss"], rel=1e-5)
    assert records[-1]["epoch"] == 4.0 and records[1]["lr"] == pytest.approx(0.05)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 12 and state["epoch"] == 4 and state["config"] == cfg.to_dict()
    assert {"model", "optimizer", "scaler", "rng", "model_spec"} <= set(state)


def test_seeded_views_are_a_pure_function_of_seed_epoch_index() -> None:
    cfg = TrainConfig(dataset="synthetic", data_options=SYNTHETIC)
    views = SeededViews(build_split(cfg, "train", augment=True), seed=3)
    first = views[(1, 5)][0]
    torch.manual_seed(123)  # the global stream does not matter, and is left as it was
    state = torch.get_rng_state()
    views[(0, 7)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(views[(1, 5)][0], first)
    assert not torch.equal(views[(2, 5)][0], first)
    assert not torch.equal(first[0], first[1])  # two different views of one image


def test_seeded_views_equal_torchvision_pipeline_under_the_global_seed() -> None:
    # The views a run trains on are those of torchvision's ToTensor + Normalize under
    # torch.manual_seed(item seed): the fast path changes no bit of the training data.
    import random

    from torchvision import transforms as T

    from hcl.data import MultiViewTransform

    cfg = TrainConfig(dataset="synthetic", data_options=SYNTHETIC)
    dataset = build_split(cfg, "train", augment=True)
    views = SeededViews(dataset, seed=3)
    steps = [*dataset.transform.transform.transforms[:-1], T.ToTensor(), T.Normalize(dataset.mean, dataset.std)]
    plain = MultiViewTransform(T.Compose(steps), num_views=cfg.views_per_image)
    for epoch, index in [(0, 0), (1, 5), (2, 17)]:
        seed = views.item_seed(epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            expected = plain(dataset.get_image(index))
        assert torch.equal(views[(epoch, index)][0], expected)


def _interrupt_at(step_to_stop: int):
    def on_step(step: int, model: torch.nn.Module, loss: float) -> None:
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGINT)

    return on_step


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    # 2 epochs x 3 steps, a checkpoint every 2 steps; Ctrl-C after step 4 (mid-epoch 2).
    straight = fit(_config(tmp_path, "straight", checkpoint_every=2))
    stopped = fit(_config(tmp_path, "resumed", checkpoint_every=2), on_step=_interrupt_at(4))
    assert stopped.interrupted and stopped.step == 4
    resumed_dir = tmp_path / "resumed"
    assert load_checkpoint(resumed_dir / "checkpoint.pt")["step"] == 4
    # Resume with DataLoader workers: the augmentation does not depend on who loads a sample.
    resumed = fit(_config(tmp_path, "resumed", checkpoint_every=2, num_workers=2), resume=True)
    assert resumed.step == 6 and not resumed.interrupted
    assert straight.history[4:] == resumed.history
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(resumed_dir / "checkpoint.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    # The log holds each step once, as if the run had not stopped.
    assert [r["step"] for r in _records(resumed_dir)] == list(range(1, 7))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    cfg = _config(tmp_path, checkpoint_every=2)

    def poison(step: int, model: torch.nn.Module, loss: float) -> None:
        if step == 2:  # after step 2's checkpoint: step 3's loss is NaN
            with torch.no_grad():
                last_linear = [m for m in model.head if isinstance(m, torch.nn.Linear)][-1]
                last_linear.weight.fill_(float("nan"))

    with pytest.raises(
        NonFiniteLossError, match=r"the loss became non-finite at step 3\b.*checkpoint.pt \(step 2\)"
    ) as info:
        fit(cfg, on_step=poison)
    assert info.value.step == 3
    state = load_checkpoint(Path(cfg.output_dir) / "checkpoint.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_existing_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    cfg = _config(tmp_path, max_steps=1)
    fit(cfg)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        fit(cfg)
    with pytest.raises(ValueError, match=r"the config differs in lr: 0.05 -> 0.1"):
        fit(_config(tmp_path, max_steps=1, lr=0.1), resume=True)
    assert fit(cfg, overwrite=True).step == 1


def test_resuming_a_finished_run_says_it_is_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, max_steps=1)
    fit(cfg)
    capsys.readouterr()
    assert fit(cfg, resume=True).step == 1
    err = capsys.readouterr().err
    assert "is already complete (step 1 of 1): nothing left to train" in err
    assert not any(line.startswith("resuming ") for line in err.splitlines())


def test_a_run_saved_with_the_old_key_n_views_resumes(tmp_path: Path) -> None:
    """A run folder from before the rename (config key ``n_views``) resumes under ``num_views``,
    without a warning (hcl wrote that file); a real difference in the count is still refused."""
    cfg = _config(tmp_path, checkpoint_every=1)
    assert fit(cfg, on_step=_interrupt_at(2)).interrupted
    run_dir = Path(cfg.output_dir)

    def write_old(views: int) -> None:
        state = load_checkpoint(run_dir / "checkpoint.pt")
        old = {
            ("n_views" if k == "num_views" else k): (views if k == "num_views" else v) for k, v in cfg.to_dict().items()
        }
        torch.save({**state, "config": old}, run_dir / "checkpoint.pt")
        (run_dir / "config.json").write_text(json.dumps(old))

    write_old(3)
    with pytest.raises(ValueError, match=r"the config differs in num_views: 3 -> 2"):
        fit(cfg, resume=True)
    write_old(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert load_run(run_dir)[0].num_views == 2  # evaluate/embed read the old config.json too
        resumed = fit(cfg, resume=True)
    assert resumed.step == 6 and [r["step"] for r in _records(run_dir) if r["kind"] == "train"] == list(range(1, 7))


def test_output_dir_problems_are_reported_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match="cannot create the output directory .*a_file/run"):
        fit(_config(tmp_path, "a_file/run"))

    class Full:
        free = 1024

    monkeypatch.setattr("hcl.train.faults.shutil.disk_usage", lambda path: Full())
    with pytest.raises(OSError, match="MiB free, but the run needs about"):
        fit(_config(tmp_path, "full"))
    assert not (tmp_path / "full" / "checkpoint.pt").exists()


def test_missing_data_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_root '.*/no/such/dir' does not exist"):
        fit(_config(tmp_path, dataset="fashion_mnist", data_options={}, data_root=str(tmp_path / "no/such/dir")))


@pytest.mark.parametrize("loss", [*list_losses(), "himulcone-held"])
def test_every_loss_trains_in_the_same_harness(tmp_path: Path, loss: str) -> None:
    held = loss.endswith("-held")
    loss = loss.removesuffix("-held")
    result = fit(_config(tmp_path, loss=loss, max_steps=2, bound_gradient=not held))
    assert result.step == 2 and all(np.isfinite(result.history))
    record = _records(tmp_path / "run")[0]
    assert len(record["loss_levels"]) == (3 if get_loss(loss).level_terms else 0)


def test_low_level_train_on_a_loader() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(dataset="synthetic", data_options=SYNTHETIC)
    dataset = build_split(cfg, "train", augment=True)
    sampler = HierarchicalBatchSampler(dataset.labels, 32, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    from hcl.models import build_encoder

    model = build_encoder("compact_cnn", width=8, embedding_dim=16)
    losses = train(model, build_objective("himulcon"), loader, epochs=4, lr=0.05, device="cpu")
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_a_crash_while_resume_trims_the_log_keeps_every_line_before_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hcl import atomic
    from hcl.rundir import truncate_metrics_log

    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": step}) for step in range(1, 7)]
    log.write_text("".join(line + "\n" for line in lines) + '{"kind": "tr')  # torn by a kill

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies inside the rewrite

    monkeypatch.setattr(atomic.os, "replace", killed)
    with (
        pytest.raises(KeyboardInterrupt),
        pytest.warns(UserWarning, match=r"metrics\.jsonl:7: skipping a torn last line"),
    ):
        truncate_metrics_log(tmp_path, 4)
    assert log.read_text().splitlines()[:6] == lines  # untouched, nothing lost
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="torn last line"):
        truncate_metrics_log(tmp_path, 4)
    assert log.read_text().splitlines() == lines[:4]
    assert list(tmp_path.iterdir()) == [log]  # no temporary file left behind
