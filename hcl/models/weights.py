"""Initial weights from a local file: torchvision, SupCon/MoCo-style and hcl checkpoints.

Nothing is downloaded. Files are read with ``torch.load(..., weights_only=True)``, so a
checkpoint cannot run code when it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hcl.atomic import check_zip_crc, describe_load_error

__all__ = ["LoadReport", "load_weights"]

# Containers that training scripts wrap a state dict in, tried in this order.
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net")
# Prefixes of the encoder inside SupCon (``module.encoder.``) and MoCo (``module.encoder_q.``)
# checkpoints; ``module.`` comes from DataParallel/DistributedDataParallel.
_ENCODER_PREFIXES = ("encoder_q.", "encoder.")
# MoCo's momentum encoder and queue are not part of the model being trained.
_IGNORED_PREFIXES = ("encoder_k.", "queue")


@dataclass
class LoadReport:
    """What :func:`load_weights` did, key by key (names as in the target model)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.path}"]

        def listing(title: str, keys: list[str]) -> None:
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")

        listing("missing in the file (kept as initialised)", self.missing)
        listing("unexpected in the file (not used)", self.unexpected)
        if self.mismatched:
            shown = ", ".join(f"{k} file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:8])
            lines.append(f"  shape mismatch (not used) ({len(self.mismatched)}): {shown}")
        listing("ignored (momentum encoder / queue)", self.ignored)
        return "\n".join(lines)


def _unwrap_state_dict(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path} holds no tensors; keys: {list(obj)[:10]}")
    return tensors


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = False) -> LoadReport:
    """Load initial weights from a local file into ``model`` (an :class:`Encoder` or a backbone).

    Accepted files: a torchvision state dict (``conv1.weight``, ..., the classifier's ``fc.*``
    is reported as unexpected); a SupCon or MoCo checkpoint whose keys carry ``module.encoder.``
    or ``module.encoder_q.`` prefixes (nested under ``state_dict`` or ``model``), as the
    reference's pre-training checkpoints; an hcl ``checkpoint.pt``. Tensors whose shape differs
    from the model's (a 7x7 stem into the small-image 3x3 stem, 3 input channels into 1) are not
    loaded and are reported.

    Args:
        model: the module to load into, modified in place.
        path: the weights file.
        strict: raise when anything is missing, unexpected or mismatched.

    Returns:
        A :class:`LoadReport`; ``str(report)`` lists every key that was not loaded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a state dict, or none of its tensors fits the model (or,
            with ``strict``, any key does not fit).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        check_zip_crc(path)  # torch.load does not: a flipped bit would load as a wrong weight
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever damaged bytes make the parsers raise, name the file
        raise ValueError(f"cannot read weights from {path}: {describe_load_error(error)}") from None
    state = _unwrap_state_dict(obj, path)

    target = model.state_dict()
    into_encoder = any(k.startswith("backbone.") for k in target)
    report = LoadReport(path=str(path))
    selected: dict[str, torch.Tensor] = {}
    for original, tensor in state.items():
        key = original
        while key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith(_IGNORED_PREFIXES):
            report.ignored.append(original)
            continue
        encoder_key = next((key[len(p) :] for p in _ENCODER_PREFIXES if key.startswith(p)), None)
        candidates = []
        if encoder_key is not None:
            candidates.append(("backbone." + encoder_key) if into_encoder else encoder_key)
        else:
            candidates.append(key)
            if into_encoder:
                candidates.append("backbone." + key)
        name = next((c for c in candidates if c in target), None)
        if name is None:
            report.unexpected.append(original)
        elif tuple(target[name].shape) != tuple(tensor.shape):
            report.mismatched.append((name, tuple(tensor.shape), tuple(target[name].shape)))
        else:
            selected[name] = tensor
    model.load_state_dict(selected, strict=False)
    report.loaded = sorted(selected)
    report.missing = [k for k in target if k not in selected]
    if not selected:
        raise ValueError(f"none of the {len(state)} tensors in {path} fits the model:\n{report}")
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise ValueError(f"weights in {path} do not match the model exactly:\n{report}")
    return report
