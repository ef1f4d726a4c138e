"""Model tests: tiny inputs, one intra-op thread each (see ``one_torch_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    pass
