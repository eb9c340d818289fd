"""Shared test fixtures."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores, two xdist workers: one intra-op thread each keeps the suite from thrashing.
torch.set_num_threads(int(os.environ.get("STAREDGE_TEST_THREADS", "1")))


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded torch generator."""
    return torch.Generator().manual_seed(0)
