"""Opt-in (``pytest -m gpu``): a default fit on CUDA against the same fit on the CPU, and the
memory plan against a CUDA fit's peak allocation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from splatsr import FitConfig, fit_arrays, simulate
from splatsr.core import memory

CROPS = Path(__file__).resolve().parents[1] / "data" / "s2_green_crops.npy"
NOISE = 0.003  # reflectance


def _stack(size: int, n_obs: int, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, B, size, size) 10 m stack simulated from real S2 texture at 2.5 m, its shifts."""
    crops = np.load(CROPS).astype(np.float32) / 1e4  # (3, 256, 256)
    truth = np.stack([np.tile(crops[b % 3], (2, 2))[: 4 * size, : 4 * size]
                      for b in range(n_bands)])
    return simulate(truth, truth_pixel_m=2.5, n_obs=n_obs, seed=3, noise_sigma=NOISE)


@pytest.mark.gpu
def test_cuda_fit_matches_the_cpu_fit():
    """Two devices fit the same data to the same optimum, up to float32 rounding carried
    through the iterations: the shifts agree to 0.02 m (a tenth of the fit's own error
    against the planted shifts here, up to 0.19 m) and the predicted observations to a tenth
    of the noise; each fit leaves residuals at the noise level (many more pixels than
    parameters: within 10 %). On the CPU, 1 against 2 threads (another summation order)
    differ by 0.004 m and 0.003 noise units."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    data, _ = _stack(32, 8, 2)
    fits = [fit_arrays(data, pixel_m=10.0, config=FitConfig(device=dev))
            for dev in ("cpu", "cuda")]
    cpu, cuda = fits
    for f in fits:
        assert 0.9 * NOISE <= np.median(f.residual_rms) <= 1.1 * NOISE
    assert np.abs(cuda.shifts_m - cpu.shifts_m).max() <= 0.02
    diff = cuda.predict() - cpu.predict()
    assert np.sqrt(np.mean(diff ** 2)) <= 0.1 * NOISE


@pytest.mark.gpu
def test_cuda_fit_peak_stays_within_the_planned_budget():
    """The automatic tiling trusts ``plan_fit_memory``: a fit it admits must not allocate
    more than the free memory the plan's budget is a share of (plan / SAFETY)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    data, _ = _stack(128, 16, 4)
    cfg = FitConfig(device="cuda")
    resolved = cfg.with_change_cell(data, pixel_m=10.0)
    plan = memory.plan_fit_memory(n_obs=16, n_bands=4, height=128, width=128, pixel_m=10.0,
                                  spacing_m=cfg.splat_spacing_m, psf_sigma_m=cfg.psf_sigma_m,
                                  lbfgs_history=cfg.lbfgs_history,
                                  change_cell_m=resolved.change_cell())
    memory.reset_peak("cuda")
    fit_arrays(data, pixel_m=10.0, config=cfg)
    assert memory.peak_allocated("cuda") <= plan.total / memory.SAFETY
