"""The per-pixel uncertainty: exact pieces against brute force, coverage against truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from splatsr.core.model import SplatGrid, render_latent, render_observations
from splatsr.core.prior import smoothed_tv
from splatsr.core.products.error_spectrum import texture_energy
from splatsr.core.products.uncertainty import (
    COMPONENTS,
    data_precision,
    date_variance,
    fit_uncertainty,
    in_frame,
    latent_operators,
    latent_variance,
    observation_operators,
    sigma_map,
    tv_curvature,
)
from splatsr.core.solver import FitConfig, fit_arrays
from splatsr.errors import ConfigError
from splatsr.evaluate.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread")
BORDER = 8  # output pixels (20 m) left out of the truth comparisons


@pytest.fixture(scope="module")
def tiny():
    grid = SplatGrid.for_raster(height=3, width=4, pixel_m=10.0, spacing_m=5.0,
                                psf_sigma_m=4.0, max_shift_m=3.0)
    rng = np.random.default_rng(0)
    shifts = rng.normal(0, 1.5, (3, 2))
    return grid, shifts, rng


def test_observation_operators_reproduce_the_render(tiny):
    grid, shifts, rng = tiny
    w = rng.normal(size=(2, grid.ny, grid.nx))
    a_y, a_x = observation_operators(grid, shifts, psf_sigma_m=4.0)
    a_y, a_x = (np.stack([m.toarray() for m in a]) for a in (a_y, a_x))
    mine = np.einsum("tik,bkl,tjl->tbij", a_y, w, a_x)
    ref = render_observations(torch.from_numpy(w), torch.from_numpy(shifts), grid=grid,
                              psf_sigma_m=4.0).numpy()
    np.testing.assert_allclose(mine, ref, atol=1e-9)


def test_data_precision_is_the_exact_jacobian_diagonal(tiny):
    grid, shifts, rng = tiny
    sp_y, sp_x = observation_operators(grid, shifts, psf_sigma_m=4.0)
    a_y, a_x = (np.stack([m.toarray() for m in a]) for a in (sp_y, sp_x))
    pw = rng.uniform(0, 1, (3, 1, grid.height, grid.width))
    jac = np.einsum("tik,tjl->tijkl", a_y, a_x).reshape(-1, grid.ny * grid.nx)
    ref = np.einsum("pk,p,pk->k", jac, pw.reshape(-1), jac).reshape(grid.ny, grid.nx)
    np.testing.assert_allclose(data_precision(sp_y, sp_x, pw)[0], ref, rtol=1e-10, atol=1e-14)


def test_tv_curvature_is_the_hessian_diagonal():
    w = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 5, 6)))
    hess = torch.autograd.functional.hessian(lambda x: smoothed_tv(x.reshape(1, 5, 6)),
                                             w.reshape(-1))
    np.testing.assert_allclose(tv_curvature(w.numpy())[0].ravel(), hess.diagonal().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_latent_variance_matches_sampling(tiny):
    grid, _, rng = tiny
    l_y, l_x = latent_operators(grid, resolution_m=2.5)
    var_w = rng.uniform(0.5, 2.0, (1, grid.ny, grid.nx))
    w = rng.normal(size=(4000, grid.ny, grid.nx)) * np.sqrt(var_w)
    samples = render_latent(torch.from_numpy(w), grid=grid, resolution_m=2.5).numpy()
    # 4000 samples: the sample variance is within ~3 x sqrt(2 / 4000) = 7 % of the truth
    np.testing.assert_allclose(samples.var(0), latent_variance(var_w, l_y, l_x)[0], rtol=0.07)


def test_a_map_moves_into_a_frame_as_the_scene_does():
    """``in_frame`` displaces a map as ``render_latent(shift_m=)`` displaces the scene: by
    whole output pixels exactly (inside), by a fraction to within bilinear interpolation."""
    grid = SplatGrid.for_raster(height=8, width=8, pixel_m=10.0, spacing_m=2.5,
                                psf_sigma_m=4.0, max_shift_m=3.0)
    rng = np.random.default_rng(3)
    w = torch.from_numpy(rng.normal(0, 1, (1, grid.ny, grid.nx)))
    still = render_latent(w, grid=grid, resolution_m=2.5).numpy()
    inner = (slice(None), slice(4, -4), slice(4, -4))
    for shift in ((5.0, -2.5), (-2.5, 7.5)):  # east, north, whole 2.5 m pixels
        moved = render_latent(w, grid=grid, resolution_m=2.5, shift_m=shift).numpy()
        np.testing.assert_allclose(in_frame(still, shift, resolution_m=2.5)[inner],
                                   moved[inner], atol=1e-9)
    yy, xx = np.meshgrid(np.arange(grid.ny), np.arange(grid.nx), indexing="ij")
    wave = torch.from_numpy(np.sin(2 * np.pi * (yy - xx) / 48.0)[None])  # 85 m across
    smooth = render_latent(wave, grid=grid, resolution_m=5.0).numpy()
    for shift in ((1.25, 1.25), (-1.25, -1.25)):  # a quarter of a 5 m pixel, across the wave
        moved = render_latent(wave, grid=grid, resolution_m=5.0, shift_m=shift).numpy()
        quarter = in_frame(smooth, shift, resolution_m=5.0)
        err, still_err = (np.abs(x - moved)[inner].mean() for x in (quarter, smooth))
        assert err < 0.25 * still_err
    assert in_frame(still, (0.0, 0.0), resolution_m=2.5) is still


def test_date_variance_is_the_weighted_mean_variance():
    r = np.array([1.0, -1.0, 2.0, np.nan]).reshape(4, 1, 1, 1)
    u = np.array([1.0, 1.0, 0.5, 1.0]).reshape(4, 1, 1, 1)
    out = date_variance(r, u, factor=2)
    assert out.shape == (1, 2, 2)
    np.testing.assert_allclose(out, (1 + 1 + 1) / 2.5 ** 2)


def test_date_variance_fills_unseen_pixels_with_the_largest():
    r = np.ones((3, 1, 1, 2))
    r[:, 0, 0, 1] = np.nan
    out = date_variance(r, np.ones_like(r), factor=1)
    np.testing.assert_allclose(out[0, 0], [1 / 3, 1 / 3], atol=0.05)


def test_texture_energy_marks_edges_not_flat_ground():
    data = np.zeros((4, 1, 20, 20))
    data[..., 10:] = 0.2
    tex = texture_energy(data, factor=4)
    assert tex.shape == (1, 80, 80)
    assert tex[0, :, 38:42].min() > 100 * tex[0, :, :8].max()


def _case(truth, *, n_obs, cloudy=0, noise=0.003, seed=3):
    data, _ = simulate(truth, truth_pixel_m=2.5, n_obs=n_obs, noise_sigma=noise, seed=seed)
    if cloudy:  # the last `cloudy` dates lose the left 60 % of the scene (masked as NaN)
        data[-cloudy:, :, :, : round(0.6 * data.shape[3])] = np.nan
    res = fit_arrays(data, pixel_m=10.0, config=FitConfig())
    return data, res


@pytest.fixture(scope="module")
def fits(texture):
    truth = texture[2, :128, :128].astype(np.float64)  # a crop the calibration did not see
    out = {}
    for name, kw in {"clean16": dict(n_obs=16), "cloudy10": dict(n_obs=10, cloudy=7),
                     "clean8": dict(n_obs=8), "noisy16": dict(n_obs=16, noise=0.006)}.items():
        data, res = _case(truth, **kw)
        sigma = sigma_map(res, data, resolution_m=2.5)[0]
        out[name] = (data, res, sigma)
    return truth, out


def _inner(a):
    return a[BORDER:-BORDER, BORDER:-BORDER]


@pytest.mark.parametrize("case", ["clean16", "cloudy10"])
def test_sigma_is_calibrated_and_ranks_errors(fits, case):
    truth, out = fits
    _, res, sigma = out[case]
    err = _inner(np.abs(res.render(2.5)[0] - truth))
    sig = _inner(sigma)
    coverage = float((err <= sig).mean())
    # no calibration constant: the scale comes from the stack's own spectrum and shifts
    # (docs/uncertainty.md); a 1-sigma map should cover 55-85 % (68 % for Gaussian errors).
    # Measured on this crop: 71.7 % and 72.1 %, Spearman 0.55 and 0.59
    assert 0.55 <= coverage <= 0.85, coverage
    n = err.shape[0] // 8 * 8
    blocks = (lambda a: np.sqrt((a[:n, :n] ** 2).reshape(n // 8, 8, n // 8, 8).mean((1, 3))))
    rho = spearmanr(blocks(sig).ravel(), blocks(err).ravel()).statistic
    assert rho >= 0.4, rho


def test_clouded_area_has_larger_sigma(fits):
    _, out = fits
    data, _, sigma = out["cloudy10"]
    left = _inner(sigma)[:, : round(0.6 * 112) - 8]
    right = _inner(sigma)[:, round(0.6 * 112) + 8:]
    assert np.median(left) > np.median(right)


def test_more_dates_and_less_noise_lower_sigma(fits):
    _, out = fits
    s16, s8, noisy = (_inner(out[k][2]) for k in ("clean16", "clean8", "noisy16"))
    # the detail term dominates and falls slowly with dates (its error is mostly the
    # scene's detail beyond what any number of these shifts resolves); the two stacks also
    # estimate the scene's spectrum from different composites, which moves it by a few per
    # cent (measured on this crop: median 0.00640 with 16 dates, 0.00638 with 8)
    assert np.median(s16) < 1.05 * np.median(s8)
    assert np.median(s16) < np.median(noisy) and s16.mean() < noisy.mean()
    assert (s16 <= noisy).mean() > 0.9


def test_components_are_finite_and_non_negative(fits):
    _, out = fits
    data, res, _ = out["cloudy10"]
    parts = fit_uncertainty(res, data, resolution_m=2.5)
    for k in COMPONENTS:
        v = getattr(parts, k)
        assert v.shape == (1, 128, 128) and np.isfinite(v).all() and (v >= 0).all(), k
    fast = fit_uncertainty(res, data, resolution_m=2.5, mode="fast")
    assert not fast.posterior.any()


def test_nan_scene_gives_nan_sigma(fits):
    _, out = fits
    data, res, _ = out["clean8"]
    scene = res.render(5.0)
    scene[0, :3, :3] = np.nan
    sigma = sigma_map(res, data, resolution_m=5.0, scene=scene)
    assert sigma.dtype == np.float32 and sigma.shape == scene.shape
    assert np.isnan(sigma[0, :3, :3]).all() and np.isfinite(sigma[0, 3:]).all()


def test_bad_mode_and_resolution_are_config_errors(fits):
    _, out = fits
    data, res, _ = out["clean8"]
    with pytest.raises(ConfigError, match="mode must be one of"):
        fit_uncertainty(res, data, resolution_m=2.5, mode="slow")
    with pytest.raises(ConfigError, match="divides 10 m"):
        fit_uncertainty(res, data, resolution_m=4.0)


def test_a_dates_own_scene_carries_its_noise_where_seen_and_the_spread_where_masked(fits):
    """The observed-date scene follows its date's observation: its dates term is that
    date's noise variance where the date is seen, the dates' spread where it is masked."""
    from splatsr.core.products.uncertainty import date_spread, robust_pixel_weight
    from splatsr.core.scaling import noise_sigma

    _, out = fits
    data, res, _ = out["cloudy10"]  # dates 3-9 clouded over the western 60 % (cols < 19)
    parts = fit_uncertainty(res, data, resolution_m=2.5, mode="fast", own=9)
    residual = data - res.predict()
    noise = noise_sigma(residual[9, 0][None]) ** 2
    assert 0.0 < noise < 0.006 ** 2  # the simulation's noise (0.003) and pixel-scale texture
    np.testing.assert_allclose(parts.dates[0][:, 80:], noise, rtol=1e-6)  # seen: cols >= 20
    weight = robust_pixel_weight(residual, noise_level=res.noise_level, loss=res.config.loss,
                                 robust_scale=res.config.robust_scale) * \
        res.obs_weights[:, None, None, None]
    spread = date_spread(residual, weight, factor=4)[0]
    np.testing.assert_allclose(parts.dates[0][:, :72], spread[:, :72], rtol=1e-6)  # masked
