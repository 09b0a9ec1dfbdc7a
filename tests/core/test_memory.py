"""The memory plan of a fit (:mod:`splatsr.core.memory`): sizes, budget and tile choice."""

from __future__ import annotations

import pytest
import torch

from splatsr.core import memory

GEO = dict(pixel_m=10.0, spacing_m=2.0, psf_sigma_m=4.0)


def _plan(n: int, T: int = 8, B: int = 4) -> memory.MemoryPlan:
    return memory.plan_fit_memory(n_obs=T, n_bands=B, height=n, width=n, **GEO)


def test_plan_scales_with_pixels_and_dates():
    """Every part grows about as pixels (x4 per doubling, within the margins' share)."""
    small, big = _plan(128), _plan(256)
    for part in ("images", "render", "params"):
        ratio = getattr(big, part) / getattr(small, part)
        assert 3.0 < ratio <= 4.0 + 1e-9, part
    assert _plan(128, T=16).images == 2 * small.images
    # 128^2 x 8 x 4: the images alone are 10 x 2 MiB; the whole plan stays below 1 GiB
    assert small.images == 10 * 8 * 4 * 128 * 128 * 4
    assert small.total < 2 ** 30


def test_plan_counts_the_change_layer():
    """A node per pixel (and one past the last) for each date and band, held with the same
    optimiser copies as the scene's weights; a 40 m lattice is 16 x smaller."""
    without = _plan(128)
    per_param = memory.PARAM_COPIES + 2 * 20  # the default L-BFGS history
    for cell, nodes in ((10.0, 129 * 129), (40.0, 33 * 33)):
        plan = memory.plan_fit_memory(n_obs=8, n_bands=4, height=128, width=128,
                                      change_cell_m=cell, **GEO)
        assert plan.params - without.params == per_param * 8 * 4 * nodes * memory.BYTES
        assert (plan.images, plan.render) == (without.images, without.render)


def test_fits_on_device_uses_the_budget(monkeypatch):
    plan = _plan(64)
    monkeypatch.setattr(memory, "device_budget_bytes", lambda device: plan.total)
    assert memory.fits_on_device(plan, "cpu")
    monkeypatch.setattr(memory, "device_budget_bytes", lambda device: plan.total - 1)
    assert not memory.fits_on_device(plan, "cpu")


def test_largest_tile_is_the_largest_that_fits():
    budget = _plan(512 + 16).total  # a 512 px tile with 8 px overlap fits exactly
    side = memory.largest_tile(n_obs=8, n_bands=4, overlap=8, budget_bytes=budget, **GEO)
    assert side == 512
    assert memory.largest_tile(n_obs=8, n_bands=4, overlap=8, budget_bytes=1000, **GEO) is None


def test_cpu_budget_and_peak():
    assert memory.device_budget_bytes("cpu") > 2 ** 20
    assert memory.peak_allocated("cpu") is None
    assert memory.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.gpu
def test_cuda_peak_is_reported():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    memory.reset_peak("cuda")
    x = torch.ones(2 ** 20, device="cuda")
    assert memory.peak_allocated("cuda") >= x.numel() * 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device")
def test_missing_cuda_is_a_config_error_before_any_cuda_call(small_stack):
    """A CPU-only torch: "cuda" is refused with one line by the device check itself, by the
    config's validation and by the route choice (which would ask CUDA for its free memory)."""
    from splatsr.core.solver import FitConfig
    from splatsr.errors import ConfigError
    from splatsr.pipeline import choose_route

    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        memory.resolve_device("cuda")
    with pytest.raises(ConfigError, match="use --device cpu"):
        FitConfig(device="cuda").validate()
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        choose_route(small_stack, FitConfig(device="cuda"))
    assert memory.resolve_device("auto") == torch.device("cpu")
