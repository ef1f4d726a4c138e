"""Training with held-out classes (``heldout_classes``): the classes never reach a training batch,
the evaluation reports them, a resume is exact, and a bad choice is named before anything trains."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from train.tiny import SYNTHETIC, tiny_config

import hcl.train.loop
import hcl.train.run
from hcl.metrics import seen_unseen_split
from hcl.train import TrainConfig, build_split, fit, load_checkpoint

HELD = ["f1.c1.v2", "f0.c0.v1"]  # (1, 3, 11) and (0, 0, 1): 16 of the 96 training images


def _config(tmp_path: Path, name: str = "run", **changes) -> TrainConfig:
    return tiny_config(tmp_path, name, **{"knn_k": 5, "heldout_classes": HELD, **changes})


def _record_batches(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The labels of every training batch, as train_step receives them."""
    seen: list[torch.Tensor] = []
    real = hcl.train.loop.train_step

    def recording(net, objective, images, labels, *args, **kwargs):
        seen.append(labels.cpu().clone())
        return real(net, objective, images, labels, *args, **kwargs)

    monkeypatch.setattr(hcl.train.loop, "train_step", recording)
    return seen


def test_heldout_classes_never_reach_a_batch_and_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = _record_batches(monkeypatch)
    cfg = _config(tmp_path, eval_every=0)
    result = fit(cfg)
    # 80 seen images: 2 batches of 32 per epoch (not the 3 of all 96).
    assert result.step == 4 and len(batches) == 4
    labels = torch.cat(batches)
    assert labels.shape == (4 * 32, 3)
    held_prefixes = [(0, 0, 1), (1, 3, 11)]
    _, unseen = seen_unseen_split(labels, held_prefixes)
    assert not unseen.any()
    # ... while every seen leaf is trained on (the selection drops only the held-out classes).
    assert {tuple(row) for row in labels.tolist()} == {
        tuple(row) for row in build_split(cfg, "train").labels.tolist() if tuple(row) not in held_prefixes
    }
    saved = json.loads((Path(cfg.output_dir) / "results.json").read_text())
    report = saved["heldout"]
    assert report["heldout_class_names"] == ["f0.c0.v1", "f1.c1.v2"]
    assert report["heldout_classes"] == [list(p) for p in held_prefixes] and report["heldout_level"] == 2
    assert report["k"] == 5 and report["heldout"]["num_test"] == 16 and report["seen"]["num_test"] == 80
    assert set(report["heldout"]["ancestor_knn_accuracy"]) == {"0", "1"}
    assert set(report["heldout"]["knn_accuracy"]) == {"2"}
    # The standard k-NN reference set is the whole training split, held-out classes included.
    assert saved["knn_accuracy"].keys() == {"0", "1", "2"} and result.results["heldout"] == report


def test_resume_with_heldout_classes_is_exact(tmp_path: Path) -> None:
    straight = fit(_config(tmp_path, "straight", checkpoint_every=1))

    def stop_at_3(step: int, model: torch.nn.Module, loss: float) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: fit checkpoints and stops

    stopped = fit(_config(tmp_path, "resumed", checkpoint_every=1), on_step=stop_at_3)
    assert stopped.interrupted and stopped.step == 3
    resumed = fit(_config(tmp_path, "resumed", checkpoint_every=1), resume=True)
    assert resumed.step == 4 and straight.history[3:] == resumed.history
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["model"]
    assert all(torch.equal(value, b[key]) for key, value in a.items())
    with pytest.raises(ValueError, match=r"config differs in heldout_classes"):
        fit(_config(tmp_path, "resumed", heldout_classes=["f0.c0.v1"]), resume=True)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["f0.c0.v9"], "config key 'heldout_classes': unknown held-out class 'f0.c0.v9'"),
        (["f0.c1"], "config key 'heldout_classes': held-out class 'f0.c1' (0, 1) is at level 1, not at level 2"),
        (
            ["f0.c0.v0", "f0.c0.v1", "f0.c0.v2"],
            (
                "config key 'heldout_classes': holding out all of 'f0.c0.v0' (0, 0, 0), 'f0.c0.v1' (0, 0, 1), "
                "'f0.c0.v2' (0, 0, 2) leaves 'f0.c0' (0, 0) with no seen child"
            ),
        ),
    ],
)
def test_bad_heldout_classes_are_named_before_the_model_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, classes: list, message: str
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(hcl.train.run, "build_model", no_model)
    with pytest.raises(ValueError) as error:
        fit(_config(tmp_path, heldout_classes=classes))
    assert message in str(error.value)


def test_a_parents_only_child_cannot_be_held_out(tmp_path: Path) -> None:
    cfg = _config(tmp_path, data_options={**SYNTHETIC, "branching": [2, 2, 1]}, heldout_classes=["f1.c0.v0"])
    with pytest.raises(ValueError, match=r"'f1.c0.v0' \(1, 2, 2\) is the only child of 'f1.c0' \(1, 2\)"):
        fit(cfg)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_heldout_classes_and_unseen_classes_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'heldout_classes' and 'data_options.unseen_classes'"):
        _config(tmp_path, data_options={**SYNTHETIC, "unseen_classes": ["f0.c0.v1"]})
    # either alone is fine; [] holds nothing out
    _config(tmp_path, data_options={**SYNTHETIC, "unseen_classes": ["f0.c0.v1"]}, heldout_classes=[])
    assert _config(tmp_path, heldout_classes=None).heldout_classes is None
