"""Shared fixtures: real Sentinel-2 texture, simulated stacks, a loopback STAC API."""

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



# --- a loopback STAC API with planted scenes (tests/stac_scenes.py, tests/stac_server.py) ---

@pytest.fixture(scope="module")
def planted():
    """The planted scenes of :data:`stac_scenes.SCENES` by name (items, COG bytes, truth)."""
    from stac_scenes import SCENES, plant_scene

    return {s[0]: plant_scene(i, *s) for i, s in enumerate(SCENES)}


@pytest.fixture
def pc_env(monkeypatch):
    """Point planetary-computer and GDAL at whatever server the test starts."""
    import planetary_computer

    def use(srv):
        monkeypatch.setenv("PC_SDK_SAS_URL", srv.sas_url)
        monkeypatch.setenv("GDAL_HTTP_PROXY", srv.proxy)
        planetary_computer.settings.Settings.get.cache_clear()
        return srv
    yield use
    planetary_computer.settings.Settings.get.cache_clear()
    planetary_computer.sas.TOKEN_CACHE.clear()


@pytest.fixture
def server(planted, pc_env):
    """A loopback STAC server with the planted scenes behind Azure-blob-style, signed hrefs."""
    from stac_scenes import serve

    srv = pc_env(serve(planted, blob=True))
    yield srv
    srv.stop()


@pytest.fixture
def plain_server(planted, pc_env):
    """The same scenes behind plain loopback hrefs (what signing leaves alone)."""
    from stac_scenes import serve

    srv = pc_env(serve(planted, blob=False))
    yield srv
    srv.stop()
