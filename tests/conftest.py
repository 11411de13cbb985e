"""Shared fixtures: the real datasets beside the repo and a small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgglm.synthetic.small import make_synthetic_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ml-100k" / "ml-100k.inter").exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def toy_dataset():
    return make_synthetic_dataset()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny models: one intra-op thread avoids OpenMP spinning on a shared 2-core machine
    (measured 10-15x the CPU time with two threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
