"""The observed-date scene: its sensor view reproduces its own observation, the shared detail
stays where the date agrees with the shared scene, a changed field follows the date."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import splatsr
from splatsr.core.config import FitConfig
from splatsr.core.model import SplatGrid
from splatsr.core.products.observed import axis_operators, min_norm_correction, risk_lambda

pytestmark = pytest.mark.usefixtures("one_thread")


def test_risk_lambda_leaves_pure_noise_alone_and_fits_a_strong_signal():
    rng = np.random.default_rng(1)
    s = torch.from_numpy(np.logspace(-3, 0, 400))
    noise = torch.from_numpy(rng.normal(0.0, 1.0, 400))
    assert risk_lambda(s, noise, noise_sigma=1.0) is None
    # a signal 30 sigma strong in the well-seen components: a weight well below them
    signal = noise + 30.0 * (s > 0.5)
    lam = risk_lambda(s, signal, noise_sigma=1.0)
    assert lam is not None and lam < 0.05


def test_min_norm_correction_reproduces_a_change_and_not_the_noise():
    grid = SplatGrid.for_raster(height=12, width=10, pixel_m=10.0, spacing_m=2.0,
                                psf_sigma_m=4.0)
    a_y, a_x = axis_operators(grid, shift_m=(1.3, -0.7), psf_sigma_m=4.0)
    rng = np.random.default_rng(0)
    sigma = 0.3
    change = np.outer(np.hanning(12), np.hanning(10)) * 20
    r = rng.normal(0.0, sigma, (12, 10)) + change
    dw = min_norm_correction(r, a_y, a_x, noise_sigma=sigma)
    seen = (a_y @ torch.from_numpy(dw) @ a_x.T).numpy()
    # the change (20 noise units at its peak) is reproduced to within the noise, with less
    # error than taking the residual as it is (whose error is the noise itself)
    assert np.sqrt(np.mean((seen - change) ** 2)) < 0.95 * sigma
    # a residual of noise alone changes little: what the risk estimate keeps of it is a
    # chance fluctuation, well below the noise
    quiet = rng.normal(0.0, sigma, (12, 10))
    dq = min_norm_correction(quiet, a_y, a_x, noise_sigma=sigma)
    assert np.sqrt(np.mean((a_y @ torch.from_numpy(dq) @ a_x.T).numpy() ** 2)) < 0.5 * sigma


@pytest.fixture(scope="module")
def changed(texture):
    """8 dates of one 2.5 m texture; date 2 has a 40 x 40 m field 0.05 brighter (a change
    the other dates do not share). Returns (truths, data, fit)."""
    truth = texture[0, :128, :128].astype(np.float64)
    truths = np.repeat(truth[None], 8, axis=0)
    truths[2, 40:56, 60:76] += 0.05
    rng = np.random.default_rng(3)
    shifts = rng.normal(0, 1.5, (8, 2))
    data = np.concatenate([splatsr.simulate(t[None], truth_pixel_m=2.5, n_obs=1,
                                            shifts_m=shifts[k:k + 1], psf_sigma_m=4.0,
                                            noise_sigma=0.002, seed=k)[0]
                           for k, t in enumerate(truths)])
    fit = splatsr.fit_arrays(data, pixel_m=10.0, config=splatsr.FitConfig(
        adam_steps=40, lbfgs_iters=40, coarse_levels=0, change_cell_m=0.0))
    return truths, data, fit


def test_date_scene_follows_its_own_observation(changed):
    from splatsr.core.products.observed import date_scene

    truths, data, fit = changed
    ds = date_scene(fit, data[2], 2)
    img = ds.render(fit, 2.5)[0]  # (128, 128)
    shared = fit.render(2.5)[0]
    field = (slice(40, 56), slice(60, 76))
    # the shared scene averages the change away (1 date in 8); the date's scene shows it
    assert truths[2][field].mean() - shared[field].mean() > 0.03
    # ... and the date's scene shows most of it (the field's sharp edges are partly below
    # what one 10 m date resolves, hence not all)
    assert (img[field] - shared[field]).mean() > 0.67 * 0.05
    # away from the field the date agrees with the shared scene: the detail is kept
    away = (slice(0, 32), slice(0, 32))
    assert np.abs(img[away] - shared[away]).max() < 0.01
    # the date's sensor view reproduces its observation to within ~the noise
    pred = fit.predict(dates=[2])[0, 0]
    assert ds.corrected[0]
    seen = pred + _sensor(fit, ds.weights[0] - fit.weights[0] * fit.gains[2, 0], 2)
    assert np.sqrt(np.mean((seen - data[2, 0]) ** 2)) < 1.5 * fit.noise_level[0]


def _sensor(fit, w, t):
    a_y, a_x = axis_operators(fit.grid, shift_m=tuple(fit.shifts_m[t]),
                              psf_sigma_m=fit.config.psf_sigma_m)
    return (a_y @ torch.from_numpy(w.astype(np.float64)) @ a_x.T).numpy()


def test_dates_that_agree_keep_the_shared_scene(changed):
    from splatsr.core.products.observed import date_scene

    truths, data, fit = changed
    ds = date_scene(fit, data[5], 5)
    img = ds.render(fit, 2.5)[0]
    shared = fit.render(2.5)[0] * fit.gains[5, 0] + fit.offsets[5, 0]
    # date 5 has no change: within the noise of the shared scene everywhere but the field
    # whose change the shared scene absorbed in part (1/8 of 0.05)
    outside = np.ones_like(img, bool)
    outside[32:64, 52:84] = False
    diff = np.abs(img - shared)[outside]
    assert np.sqrt(np.mean(diff ** 2)) < 0.5 * fit.noise_level[0]
    assert np.percentile(diff, 99) < fit.noise_level[0]


def test_target_date_on_an_acquisition_blends_the_season_fit(changed):
    """With a target date that is an acquisition, the product is the mean of the
    time-weighted fit's observed scene and the season fit's (both reproduce the date's
    observation); ``season_blend=False`` gives the first alone, from the plain window."""
    from splatsr.core.products.observed import date_scene

    truths, data, _ = changed
    dates = [f"2020-05-{d + 1:02d}" for d in range(8)]
    kw = dict(adam_steps=40, lbfgs_iters=40, coarse_levels=0, change_cell_m=0.0,
              target_date="2020-05-03")
    both = splatsr.fit_arrays(data, pixel_m=10.0, dates=dates, config=splatsr.FitConfig(**kw))
    alone = splatsr.fit_arrays(data, pixel_m=10.0, dates=dates,
                               config=splatsr.FitConfig(**kw, season_blend=False))
    assert alone.date_scene.partner is None and alone.date_scene.index == 2
    assert both.date_scene.fill is None  # the date is seen everywhere: two fits
    scene, season = both.date_scene.partner
    assert season.config.target_date is None and season.time_weight is None
    assert scene.index == 2 and scene.frame_shift_m == (0.0, 0.0)
    # the render is the mean of the two observed scenes, the time-weighted fit's moved into
    # the season fit's frame: date 2 sits at its shift in either
    move = both.date_scene.frame_shift_m
    np.testing.assert_allclose(move, both.shifts_m[2] - season.shifts_m[2])
    as_came = date_scene(both, data[2], 2)
    mine = replace(as_came, frame_shift_m=move).render(both, 2.5)
    theirs = scene.render(season, 2.5)
    np.testing.assert_allclose(both.render(2.5), 0.5 * (mine + theirs), atol=1e-6)
    # so moved, the two scenes agree better than as they came (here half a metre or more
    # apart) and than moved the wrong way: what is left is their fine detail
    wrong = replace(as_came, frame_shift_m=tuple(-np.asarray(move))).render(both, 2.5)
    assert np.hypot(*move) > 0.5
    inner = (slice(None), slice(8, -8), slice(8, -8))
    spread = [np.std((img - theirs)[inner]) for img in (mine, as_came.render(both, 2.5), wrong)]
    assert spread[0] < 0.9 * spread[1] < 0.9 * spread[2]
    # the shifts written out and the trust map are in the product's frame too
    np.testing.assert_allclose(both.reported_shifts_m(), both.shifts_m - np.asarray(move))
    np.testing.assert_allclose(both.reported_shifts_m()[2], season.shifts_m[2])
    from splatsr.core.products.uncertainty import in_frame, sigma_map
    as_fitted = sigma_map(both, data, resolution_m=2.5, mode="fast", frame_shift_m=(0.0, 0.0))
    np.testing.assert_allclose(
        sigma_map(both, data, resolution_m=2.5, mode="fast"),
        np.sqrt(in_frame(as_fitted.astype(np.float64) ** 2, move, resolution_m=2.5)),
        rtol=1e-5)
    # the date is seen everywhere: the blended fit weighs the dates by the own window (a day)
    # where the fit alone keeps the automatic one (10 days), and its scene follows the date
    # and, one of two scenes in a mean, with half the prior's weight
    assert both.config.time_window_days == alone.config.time_window_days == 10.0
    assert both.tv_weight_used() == 0.5 * both.config.tv_weight == 0.5 * FitConfig().tv_weight
    assert alone.tv_weight_used() == season.tv_weight_used() == FitConfig().tv_weight
    own = splatsr.fit_arrays(data, pixel_m=10.0, dates=dates, config=splatsr.FitConfig(
        **kw, season_blend=False, time_window_days=both.config.own_window_days,
        tv_weight=both.tv_weight_used()))
    np.testing.assert_allclose(as_came.render(both, 2.5),
                               date_scene(own, data[2], 2).render(own, 2.5),
                               atol=0.1 * both.noise_level.max())
    # each half shows the changed field; so does the mean
    field = (slice(40, 56), slice(60, 76))
    assert (both.render(2.5)[0][field] - truths[0][field]).mean() > 0.67 * 0.05


def test_where_the_asked_date_is_masked_the_plain_time_weighted_fit_fills_in(changed):
    """A cloud over a third of the asked date: inside it (beyond the bridged gap) the
    date's scene is the plain time-weighted fit's, outside the own-window fit's; the
    season's is averaged in everywhere."""
    from splatsr.core.dates import GAP_PX
    from splatsr.core.products.observed import date_scene, nearest_pixels

    truths, data, _ = changed
    data = data.copy()
    data[2, :, :, :12] = np.nan  # the western 12 px of the asked date
    dates = [f"2020-05-{d + 1:02d}" for d in range(8)]
    kw = dict(adam_steps=40, lbfgs_iters=40, coarse_levels=0, change_cell_m=0.0,
              target_date="2020-05-03")
    both = splatsr.fit_arrays(data, pixel_m=10.0, dates=dates, config=splatsr.FitConfig(**kw))
    ds = both.date_scene
    fill, plain, masked = ds.fill
    assert plain.config.season_blend is False and fill.index == 2
    # masked: the cloud less the GAP_PX columns at its edge, which the date bridges
    edge = 12 - int(GAP_PX)
    assert masked[:, :, :edge].all() and not masked[:, :, edge:].any()
    scene, season = ds.partner
    # every scene in the season fit's frame: each fit moved by the asked date's shifts
    assert fill.frame_shift_m == pytest.approx(tuple(plain.shifts_m[2] - season.shifts_m[2]))
    own = replace(date_scene(both, data[2], 2), frame_shift_m=ds.frame_shift_m).render(both, 2.5)
    inner = nearest_pixels(masked, own.shape[1:])
    expect = 0.5 * (np.where(inner, fill.render(plain, 2.5), own) + scene.render(season, 2.5))
    np.testing.assert_allclose(both.render(2.5), expect, atol=1e-6)
    # the plain fit is the one season_blend=False gives
    alone = splatsr.fit_arrays(data, pixel_m=10.0, dates=dates,
                               config=splatsr.FitConfig(**kw, season_blend=False))
    np.testing.assert_allclose(replace(fill, frame_shift_m=(0.0, 0.0)).render(plain, 2.5),
                               alone.render(2.5), atol=1e-6)
