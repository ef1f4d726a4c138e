"""Loss tests run single-threaded: their tensors are tiny, and intra-op threads only add
synchronisation cost (large on a shared, loaded machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread: None) -> None:
    pass


@pytest.fixture(params=["compiled", "grouped", "dense"])
def formulation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a paper-mode test through every form of the loss, all on the CPU here: the kernel with
    the compiled constraint loops (the CPU path), the kernel with array ops only (the path on GPUs
    when the dense form does not fit) and the dense form (the GPU path)."""
    import hcl.losses._constraint as constraint
    import hcl.losses.functional as functional

    if request.param == "grouped":
        monkeypatch.setattr(constraint, "compiled_module", lambda: None)
    if request.param == "dense":
        monkeypatch.setattr(functional, "dense_fits", lambda *args: True)
    return request.param
