"""PSF width: the held-out error of a fit, the selection curve and its knee."""

from __future__ import annotations

import numpy as np
import pytest

import splatsr
from splatsr.core.psf import heldout_error, pick_psf_sigma, select_psf_sigma
from splatsr.core.solver import FitConfig, fit_arrays
from splatsr.errors import ConfigError, StackError

FAST = dict(adam_steps=60, lbfgs_iters=30, coarse_levels=0)


def test_heldout_error_recovers_shift_and_noise(texture):
    truth = texture[1:2, :96, :96]
    data, shifts = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=7, noise_sigma=0.002,
                                    seed=4)
    res = fit_arrays(data[1:], pixel_m=10.0, config=FitConfig(**FAST))
    err, shift = heldout_error(res, data[0])
    assert err < 0.004  # noise 0.002 plus the scene's own error
    # fitted shifts are mean zero over dates 1..6; the truth's over all 7
    expect = shifts[0] - shifts[1:].mean(0)
    assert np.abs(shift - expect).max() <= 0.5


def test_select_psf_sigma_finds_the_simulated_width(texture):
    truth = texture[2:3, :64, :64]
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=8, noise_sigma=0.002,
                               psf_sigma_m=4.0, seed=5)
    sel = select_psf_sigma(data, pixel_m=10.0, candidates_m=(1.0, 4.0, 8.0),
                           config=FitConfig(adam_steps=40, lbfgs_iters=20, coarse_levels=0))
    assert sel.psf_sigma_m == 4.0, sel.curve
    err = {row["psf_sigma_m"]: row["heldout_rmse"] for row in sel.curve}
    # too wide is clearly worse (measured +38 %); too narrow only slightly better (-8 %)
    assert err[8.0] > 1.2 * err[4.0] and err[1.0] > 0.8 * err[4.0]
    assert len(sel.curve) == 3 and len(sel.holdout) == 2
    with pytest.raises(StackError, match="at least 3 dates"):
        select_psf_sigma(data[:3], pixel_m=10.0, n_holdout=2)


@pytest.mark.parametrize("sigmas, errors, expect", [
    # measured curves (true PSF 4 m): flat below the truth, rising above it
    ((2, 3, 4, 5, 6), (0.002106, 0.002094, 0.002091, 0.002078, 0.002126), 5.0),
    ((2, 3, 4, 5, 6), (0.002114, 0.002094, 0.002092, 0.002099, 0.002154), 5.0),
    ((8, 1, 4), (1.38, 0.92, 1.0), 4.0),  # small stack: 1 m scores lowest; any order
    # no rise above 1 %: the truth is at least the widest candidate
    ((2, 3, 4, 5, 6), (1.00, 0.99, 0.995, 0.98, 0.97), 6.0),
    # rising everywhere: the narrowest (the others are beyond the 10 % tolerance)
    ((2, 3, 4, 5, 6), (1.0, 1.2, 1.5, 1.9, 2.5), 2.0),
    ((4,), (0.3,), 4.0),
])
def test_pick_psf_sigma_reads_the_knee(sigmas, errors, expect):
    assert pick_psf_sigma(sigmas, errors) == expect


def test_pick_psf_sigma_bad_curve():
    with pytest.raises(ConfigError, match="as many errors"):
        pick_psf_sigma([2, 3], [1.0])
