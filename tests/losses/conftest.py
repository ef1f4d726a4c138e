"""Loss tests run single-threaded: their tensors are tiny, and intra-op threads only add
synchronisation cost (large on a shared, loaded machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread: None) -> None:
    pass


@pytest.fixture(params=["grouped", "dense"])
def formulation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a paper-mode test with the grouped kernel (the CPU path) and with the dense form (the
    GPU path), forced here on the CPU."""
    import hcl.losses.functional as functional

    if request.param == "dense":
        monkeypatch.setattr(functional, "dense_fits", lambda *args: True)
    return request.param
