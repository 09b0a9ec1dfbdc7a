"""Shared fixtures: real Sentinel-2 texture (see tests/data/README.md) and simulated stacks."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads spin by default; on a busy 2-core CI machine that made torch's CPU
# kernels up to 10x slower (measured: a 64 px fit took 49 s instead of 5 s). Set before torch
# starts its thread pool; the CLI does the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def texture() -> np.ndarray:
    """(3, 256, 256) real S2 green-band reflectance crops, used as 2.5 m truth."""
    return np.load(DATA / "s2_green_crops.npy").astype(np.float32) / 10000.0


@pytest.fixture(scope="session")
def small_stack(tmp_path_factory, texture):
    """A 32 x 32 px, 8-observation, 2-band stack simulated from real texture (known shifts)."""
    import splatsr

    truth = texture[:2, :128, :128]
    root = tmp_path_factory.mktemp("stack")
    return splatsr.simulate_stack(root, truth, truth_pixel_m=2.5, bands=["B03", "B04"],
                                  n_obs=8, shift_std_m=1.5, psf_sigma_m=4.0,
                                  noise_sigma=0.002, seed=1)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a shared, busy machine two threads mostly spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

