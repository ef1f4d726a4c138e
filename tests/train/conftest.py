"""Training tests: one intra-op thread each.

The models here are tiny and the machines shared; a pool of spinning OpenMP threads on an
oversubscribed CPU makes a step several times slower than one thread.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
