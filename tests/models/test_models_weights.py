"""Loading initial weights: torchvision, SupCon (module.encoder.) and MoCo (module.encoder_q.) files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hcl.models import build_backbone, build_encoder, load_weights


def _source() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    backbone, _ = build_backbone("resnet18")
    return backbone.state_dict()


def _assert_backbone_equal(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    for key, value in source.items():
        if key.startswith("fc."):
            continue
        torch.testing.assert_close(state["backbone." + key], value, rtol=0, atol=0)


def test_torchvision_state_dict(tmp_path: Path) -> None:
    source = _source()
    source["fc.weight"] = torch.zeros(1000, 512)
    source["fc.bias"] = torch.zeros(1000)
    torch.save(source, tmp_path / "tv.pth")
    model = build_encoder("resnet18")
    report = load_weights(model, tmp_path / "tv.pth")
    _assert_backbone_equal(model, source)
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert report.missing == ["head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"]
    assert "missing in the file" in str(report) and "fc.weight" in str(report)


def test_supcon_checkpoint_with_module_encoder_prefix(tmp_path: Path) -> None:
    source = _source()
    torch.manual_seed(2)
    head = build_encoder("resnet18").head.state_dict()
    state = {f"module.encoder.{k}": v for k, v in source.items() if not k.startswith("fc.")}
    state.update({f"module.head.{k}": v for k, v in head.items()})
    torch.save({"model": state, "optimizer": {}, "epoch": 100}, tmp_path / "supcon.pth")
    model = build_encoder("resnet18")
    report = load_weights(model, tmp_path / "supcon.pth", strict=True)
    _assert_backbone_equal(model, source)
    torch.testing.assert_close(model.head.state_dict()["2.weight"], head["2.weight"])
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []


def test_moco_checkpoint_ignores_key_encoder_and_queue(tmp_path: Path) -> None:
    source = _source()
    state = {f"module.encoder_q.{k}": v for k, v in source.items() if not k.startswith("fc.")}
    state.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in source.items()})
    state["module.queue"] = torch.zeros(128, 65536)
    state["module.encoder_q.fc.0.weight"] = torch.zeros(2048, 512)
    torch.save({"state_dict": state, "arch": "resnet18"}, tmp_path / "moco.pth.tar")
    backbone, _ = build_backbone("resnet18")
    report = load_weights(backbone, tmp_path / "moco.pth.tar")
    for key, value in source.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(backbone.state_dict()[key], value, rtol=0, atol=0)
    assert report.unexpected == ["module.encoder_q.fc.0.weight"]
    assert len(report.ignored) == len(source) + 1


def test_shape_mismatch_is_reported_not_loaded(tmp_path: Path) -> None:
    source = _source()  # ImageNet stem: conv1 is 64x3x7x7
    torch.save(source, tmp_path / "tv.pth")
    model = build_encoder("resnet18", small_images=True, in_channels=1)
    before = model.backbone.conv1.weight.clone()
    report = load_weights(model, tmp_path / "tv.pth")
    assert report.mismatched == [("backbone.conv1.weight", (64, 3, 7, 7), (64, 1, 3, 3))]
    torch.testing.assert_close(model.backbone.conv1.weight, before)
    assert "shape mismatch" in str(report)
    with pytest.raises(ValueError, match="do not match the model exactly"):
        load_weights(model, tmp_path / "tv.pth", strict=True)


def test_bad_files(tmp_path: Path) -> None:
    model = build_encoder("compact_cnn", width=4)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_weights(model, tmp_path / "nowhere.pt")
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="none of the 1 tensors"):
        load_weights(model, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights"):
        load_weights(model, tmp_path / "junk.pt")


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="cannot read weights"):
        load_weights(build_encoder("compact_cnn", width=4), tmp_path / "evil.pt")
