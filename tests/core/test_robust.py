"""Robust defaults: losses, the radiometry gauge, outlier weights, robust vs plain fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import splatsr
from splatsr.core.model import SplatGrid, render_observations
from splatsr.core.robust import (
    MAX_LOG_GAIN,
    apply_radiometry,
    bright_dates,
    observation_weights,
    penalty_sum,
    regauge,
    rho,
)
from splatsr.core.solver import PLAIN, FitConfig, fit_arrays
from splatsr.errors import ConfigError
from splatsr.evaluate.simulate import read_truth

FAST = dict(adam_steps=60, lbfgs_iters=30, coarse_levels=0)
# the solver before the robust pieces: least squares, no radiometry, pixel-scale noise level
OLD = dict(PLAIN, noise_from_residuals=False)


def _psnr_5m(result, truth):
    """PSNR at 5 m against the truth after a least-squares gain/offset, 20 m border off."""
    img = result.render(5.0)[0, 4:-4, 4:-4].astype(np.float64)
    B, H, W = truth.shape
    ref = truth.reshape(B, H // 2, 2, W // 2, 2).mean((2, 4))[0, 4:-4, 4:-4]
    A = np.stack([img.ravel(), np.ones(img.size)], 1)
    coef, *_ = np.linalg.lstsq(A, ref.ravel(), rcond=None)
    err = (A @ coef).reshape(ref.shape) - ref
    return 10 * math.log10(np.ptp(ref) ** 2 / np.mean(err ** 2))


@pytest.mark.parametrize("loss", ["l2", "charbonnier", "cauchy"])
def test_losses_are_quadratic_near_zero(loss):
    r = torch.tensor([1e-3, -2e-3])
    assert torch.allclose(rho(r, loss=loss, scale=2.0), 0.5 * r * r, rtol=1e-5)


@pytest.mark.parametrize("loss", ["l2", "charbonnier", "cauchy"])
def test_penalty_sum_matches_rho_in_value_and_gradient(loss):
    """The one-node data term (hand-written backward) against autograd of the reference
    ``sum(weight' * rho(r / sigma, scale=c) * sigma**2)`` in float64, as the objective
    folds it (weight = weight' * const, inv_scale = 1 / (sigma c))."""
    gen = torch.Generator().manual_seed(0)
    r = (torch.randn(3, 2, 5, 4, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    w = torch.rand(3, 2, 5, 4, generator=gen, dtype=torch.float64)
    s, c = 0.7, 2.0
    const = {"cauchy": 0.5 * (c * s) ** 2, "charbonnier": (c * s) ** 2, "l2": 0.5}[loss]
    k = torch.tensor(1.0 / (s * c) if loss != "l2" else 1.0, dtype=torch.float64)
    got = penalty_sum(r, inv_scale=k, weight=w * const, loss=loss)
    (g_got,) = torch.autograd.grad(got, r)
    scale = c if loss != "l2" else float("inf")
    want = (w * rho(r / s, loss=loss, scale=scale) * s * s).sum() if loss != "l2" \
        else (w * rho(r, loss=loss, scale=scale)).sum()
    (g_want,) = torch.autograd.grad(want, r)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-15)


def test_cauchy_bounds_the_pull_of_outliers():
    r = torch.tensor([100.0], requires_grad=True)
    rho(r, loss="cauchy", scale=2.0).sum().backward()
    # d/dr c^2/2 log(1 + r^2/c^2) = r / (1 + r^2/c^2) -> c^2 / r: 0.04 at r = 100, c = 2
    assert float(r.grad) == pytest.approx(100 / (1 + 2500), rel=1e-5)
    with pytest.raises(ConfigError, match="loss must be one of"):
        rho(r, loss="huberish", scale=1.0)
    with pytest.raises(ConfigError, match="loss must be one of"):
        FitConfig(loss="huberish").validate()


def test_regauge_keeps_predictions_and_anchors_the_median_date():
    rng = np.random.default_rng(0)
    grid = SplatGrid.for_raster(height=6, width=5, pixel_m=10.0, spacing_m=5.0,
                                psf_sigma_m=4.0, max_shift_m=3.0)
    w = rng.normal(size=(2, grid.ny, grid.nx))
    a, o = rng.normal(0, 0.2, (5, 2)), rng.normal(0, 0.5, (5, 2))
    shifts = torch.from_numpy(rng.normal(0, 1, (5, 2)))

    def predict(w, g, o):
        pred = render_observations(torch.from_numpy(w), shifts, grid=grid, psf_sigma_m=4.0)
        return pred.numpy() * g[:, :, None, None] + o[:, :, None, None]

    ac, oc = a - a.mean(0), o - o.mean(0)
    w2, g2, o2 = regauge(w, a, o)
    # exact up to the ripple of a constant field rendered by 0.8 x spacing splats (~1e-5 of
    # the constant; offsets here are ~0.5)
    np.testing.assert_allclose(predict(w2, g2, o2), predict(w, np.exp(ac), oc), atol=1e-4)
    np.testing.assert_allclose(np.median(g2, axis=0), 1.0, atol=1e-12)


def test_a_runaway_log_gain_is_bounded_the_same_way_in_the_fit_and_the_result():
    # a flat scene leaves a date's gain undetermined; exp(50) once overflowed a fit
    pred = torch.full((3, 1, 2, 2), 0.5, dtype=torch.float32)
    a = torch.tensor([[40.0], [-20.0], [-20.0]])  # centred
    out = apply_radiometry(pred, a, torch.zeros(3, 1))
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0, 0, 0].numpy(), 0.5 * np.exp([MAX_LOG_GAIN, -20, -20]),
                               rtol=1e-5)
    _, gains, _ = regauge(np.ones((1, 2, 2)), a.numpy().astype(np.float64), np.zeros((3, 1)))
    # the result's gains are relative to the median date's (-20)
    np.testing.assert_allclose(gains[:, 0], np.exp([MAX_LOG_GAIN + 20, 0, 0]), rtol=1e-12)


def test_observation_weights_downweight_a_noisy_date():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(6, 1, 100, 100, generator=gen)
    r[2] *= 3.0  # three times the typical spread
    w = observation_weights(r, torch.ones_like(r), tolerance=1.5)
    # a MAD of 10^4 values is within ~1.2 % (1 sigma); the squared ratio of two within ~3.5 %
    assert float(w[2]) == pytest.approx((1.5 / 3.0) ** 2, rel=0.1)
    assert torch.all(w[[0, 1, 3, 4, 5]] == 1.0)


@pytest.fixture(scope="module")
def dirty(texture):
    """24 x 24 px, 8 dates, real texture: drift on every date, one haze date, one cloud."""
    truth = texture[0:1, 64:160, 64:160]
    data, shifts = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=8, noise_sigma=0.002,
                                    seed=3)
    rng = np.random.default_rng(3)
    data = data * rng.normal(1, 0.06, (8, 1, 1, 1)) + rng.normal(0, 0.01, (8, 1, 1, 1))
    yy, xx = np.mgrid[:24, :24]
    data[3] = data[3] * 0.5 + 0.5 * 0.15 * (1 + 0.3 * np.sin(xx / 5.0))  # haze
    cloud = (yy - 6) ** 2 + (xx - 16) ** 2 < 36  # ~20 % of the frame, unmasked
    data[5, 0][cloud] = 0.4
    return truth, data.astype(np.float32), shifts


def test_robust_fit_beats_plain_fit_on_a_dirty_stack(dirty):
    truth, data, _ = dirty
    # the fits themselves (the median anchor of the consensus also removes the cloud and the
    # haze from the plain fit: measured 27.1 vs 24.8 dB, robust 29.9 vs 30.1 dB)
    robust = fit_arrays(data, pixel_m=10.0, config=FitConfig(**FAST, median_anchor=False))
    plain = fit_arrays(data, pixel_m=10.0, config=FitConfig(**FAST, **OLD, median_anchor=False))
    gain_db = _psnr_5m(robust, truth) - _psnr_5m(plain, truth)
    assert gain_db > 3.0, gain_db  # measured: see docs/quality.md
    assert robust.obs_weights[3] < 0.5 <= min(np.delete(robust.obs_weights, [3, 5]))
    assert robust.outlier_fraction[5] > 0.1 > max(np.delete(robust.outlier_fraction, [3, 5]))
    # predict() applies the fitted gains and offsets: clean dates fit to about the noise
    clean = [0, 1, 2, 4, 6, 7]
    assert max(robust.residual_rms[clean]) < 0.004


def test_clean_stack_gains_near_one_and_no_loss_of_quality(small_stack):
    data = small_stack.load()[:, :1]  # one band keeps it fast
    truth = read_truth(small_stack.root / "truth.tif")[0]
    # the fits themselves (the median anchor of the consensus also removes the cloud and the
    # haze from the plain fit: measured 27.1 vs 24.8 dB, robust 29.9 vs 30.1 dB)
    robust = fit_arrays(data, pixel_m=10.0, config=FitConfig(**FAST, median_anchor=False))
    plain = fit_arrays(data, pixel_m=10.0, config=FitConfig(**FAST, **OLD, median_anchor=False))
    assert np.abs(robust.gains - 1).max() < 0.02 and np.abs(robust.offsets).max() < 0.003
    assert robust.obs_weights.min() > 0.9
    # the noise level the fit worked in is the simulated one (0.002), not the texture-inflated
    # pixel-scale estimate
    assert robust.noise_level == pytest.approx(0.002, rel=0.35)
    assert _psnr_5m(robust, truth[:1]) > _psnr_5m(plain, truth[:1]) - 0.3


def test_flat_stack_gives_flat_output():
    rng = np.random.default_rng(1)
    data = (0.1 + rng.normal(0, 0.002, (6, 1, 16, 16))).astype(np.float32)
    # bicubic of the mean would keep 0.002 / sqrt(6) = 0.0008 of noise
    robust = fit_arrays(data, pixel_m=10.0, config=FitConfig(**FAST))
    assert robust.render(5.0)[0, 4:-4, 4:-4].std() < 0.0008
    # the plain fit keeps about as much as bicubic of the mean: no structure invented, but
    # no denoising beyond averaging either
    plain = fit_arrays(data, pixel_m=10.0, config=FitConfig(**FAST, **PLAIN))
    assert plain.render(5.0)[0, 4:-4, 4:-4].std() < 1.5 * 0.0008


def test_bright_dates_are_clouds_in_every_band_of_a_minority():
    def bright(y, valid):
        data = np.where(valid, y, np.nan)
        return bright_dates(data, np.nanmedian(data, axis=0))

    rng = np.random.default_rng(2)
    y = rng.normal(0.0, 1.0, (7, 3, 16, 16))  # noise units
    valid = np.ones(y.shape, bool)
    y[2] += 50.0  # a cloud: every band far brighter
    y[4, :2] += 50.0  # growth: two bands brighter, one darker
    y[4, 2] -= 50.0
    y[5] += 10.0  # brighter everywhere, but within the threshold of 20 units
    valid[2, :, :12] = False  # the cloud date is valid on a quarter of the tile only
    np.testing.assert_array_equal(bright(y, valid), [0, 0, 1, 0, 0, 0, 0])
    # a single band (an index such as NDVI) has no such test
    assert not bright(y[:, :1], valid[:, :1]).any()
    # half the dates bright: the season, not outliers
    y[[0, 1, 3]] += 50.0
    assert not bright(y, valid).any()
