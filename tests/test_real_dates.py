"""Real dates with unmasked clouds, scored against a held-out real date.

The five eo-learn dates (tests/data/eolearn_5dates_B02-B08.npz: two fully cloudy, three
clear) are each read as a 2.5 m scene and observed by a simulated 10 m sensor; the fit sees
four of them, clouds and all, and is scored by cPSNR against the fifth, a clear real date it
never saw (benchmarks/real_proxy.py runs every reference date and the other baselines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import zoom

import splatsr
from splatsr.core.products.consensus import median_weights
from splatsr.core.solver import PLAIN, FitConfig, fit_arrays
from splatsr.evaluate.metrics import cpsnr

DATA = Path(__file__).parent / "data" / "eolearn_5dates_B02-B08.npz"


def test_default_fit_beats_bicubic_of_median_on_real_cloudy_dates():
    z = np.load(DATA)
    dates = z["dn"].astype(np.float64) / 10000.0  # (5, 4, 100, 100) B02 B03 B04 B08
    cloud = z["cloud_fraction"]
    assert (cloud[:2] == 1).all() and (cloud[2:] == 0).all()
    h = 3  # reference: 2015-08-30, clear; inputs: two clear dates and both cloudy ones
    inputs = [k for k in range(5) if k != h]
    rng = np.random.default_rng(1003)
    shifts = rng.normal(0.0, 1.5, (len(inputs), 2))
    shifts -= shifts.mean(0)
    obs = np.concatenate([splatsr.simulate(dates[k], truth_pixel_m=2.5, shifts_m=shifts[i:i + 1],
                                           noise_sigma=0.002, seed=1003 + i)[0]
                          for i, k in enumerate(inputs)])  # (4, 4, 25, 25)
    med = np.median(obs, axis=0)
    bicubic = np.stack([zoom(b, 4, order=3, grid_mode=True, mode="grid-mirror") for b in med])
    base = cpsnr(bicubic, dates[h])
    robust = fit_arrays(obs, pixel_m=10.0)
    plain = fit_arrays(obs, pixel_m=10.0, config=FitConfig(**PLAIN))
    got, got_plain = cpsnr(robust.render(2.5), dates[h]), cpsnr(plain.render(2.5), dates[h])
    # measured (2026-11-23): bicubic-of-median 20.1, robust 23.9, plain 18.6 dB. The target
    # is +0.5 dB; the margin asked here is 1 dB below the measured +3.7. Since the consensus
    # is anchored to the median of the dates (2026-12-05): +3.3 dB; half the dates are bright
    # outliers, so the median leaves them out (without that: +0.4).
    assert got > base + 2.5, (got, base)
    # the thick cloud (input 0) gets (almost) no weight in the fit; the haze (input 1) is
    # partly absorbed by the per-pixel change layer (weight 0.78, measured 2026-12-06), and
    # both are left out of the median the consensus is anchored to
    assert robust.obs_weights[0] < 0.2 and (robust.obs_weights[2:] == 1).all()
    weights = median_weights(obs, obs_weights=robust.obs_weights,
                             noise_level=robust.noise_level)
    np.testing.assert_array_equal(weights, [0.0, 0.0, 1.0, 1.0])
    # a least-squares fit is dragged by the clouds below bicubic-of-median: the test has teeth
    assert got_plain < base, (got_plain, base)
