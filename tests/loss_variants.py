"""Every loss of the table that takes embeddings, with each of its modes and constraint readings:
the variants the scale and fuzz tests run through. Imported as ``loss_variants`` (tests/ is on
sys.path)."""

from __future__ import annotations

from hcl.losses import get_loss, list_losses
from hcl.losses.constraints import CONSTRAINTS


def embedding_loss_variants() -> list[tuple[str, dict[str, str]]]:
    """``[(loss name, options)]``: the defaults, reference mode where there is one, and every
    constraint reading where the loss takes one."""
    variants: list[tuple[str, dict[str, str]]] = []
    for name in list_losses():
        spec = get_loss(name)
        if spec.output != "embedding":
            continue
        variants.append((name, {}))
        if "mode" in spec.options:
            variants.append((name, {"mode": "reference"}))
        if "constraint" in spec.options:
            variants += [(name, {"constraint": reading}) for reading in CONSTRAINTS]
    return variants
