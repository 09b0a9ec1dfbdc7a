"""The 1-D operators and the separable render: fast path vs dense reference vs quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from splatsr.core.model import SplatGrid, render_latent, render_observations
from splatsr.core.render import Axis, axis_matrix, pixel_ratio, render, render_dense
from splatsr.errors import ConfigError

GEOMETRIES = [  # (spacing_m, pixel_m): integer, polyphase and fine-output ratios
    (3.0, 10.0), (2.5, 10.0), (2.0, 10.0), (4.0, 10.0), (3.0, 2.5), (5.0, 10.0)]


def _axes(spacing, pixel, n_pix, pad=6):
    k = math.ceil(n_pix * pixel / spacing) + 2 * pad
    org = (0.5 - pad) * spacing
    return Axis(k + 2, spacing, org, n_pix + 1, pixel), Axis(k, spacing, org, n_pix, pixel)


@pytest.mark.parametrize("spacing,pixel", GEOMETRIES)
# float64: the band stops at TAIL_SIGMAS = 5 sigma, whose neglected Gaussian mass is
# erfc(5 / sqrt 2) = 5.7e-7 of a unit weight spread over both tails -> 3e-7 relative bound.
# float32: 1e-5 relative (the bound; float32 rounding is ~1e-7 per operation).
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 3e-7), (torch.float32, 1e-5)])
def test_banded_matches_dense_forward_and_backward(spacing, pixel, dtype, tol):
    torch.manual_seed(0)
    ay, ax = _axes(spacing, pixel, 9)
    w = torch.randn(2, ay.n_splats, ax.n_splats, dtype=dtype, requires_grad=True)
    dx = (torch.randn(5, dtype=dtype) * 4).requires_grad_()  # shifts up to ~1 pixel
    dy = (torch.randn(5, dtype=dtype) * 4).requires_grad_()
    kw = dict(ax_y=ay, ax_x=ax, sigma_m=4.5)
    fast, ref = render(w, dy_m=dy, dx_m=dx, **kw), render_dense(w, dy_m=dy, dx_m=dx, **kw)
    scale = ref.abs().max()
    assert fast.shape == ref.shape == (5, 2, ay.n_pix, ax.n_pix)
    assert (fast - ref).abs().max() <= tol * scale
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((fast * g).sum(), (w, dx, dy)),
                    torch.autograd.grad((ref * g).sum(), (w, dx, dy))):
        assert (a - b).abs().max() <= tol * b.abs().max()


@pytest.mark.parametrize("spacing,pixel", [(3.0, 10.0), (2.5, 10.0)])
def test_matrix_entries_match_quadrature(spacing, pixel):
    """A[j, k] = (s/p) * integral over pixel j of the displaced Gaussian density."""
    ay, ax = _axes(spacing, pixel, 4, pad=2)
    sigma, delta = 4.2, 1.7
    A = axis_matrix(ax, sigma_m=sigma, delta_m=torch.tensor([delta], dtype=torch.float64))[0]
    for j in range(ax.n_pix):
        for k in range(ax.n_splats):
            mu = ax.splat_origin_m + k * spacing + delta
            val, _ = integrate.quad(lambda u: norm.pdf(u, mu, sigma), j * pixel,
                                    (j + 1) * pixel, epsabs=1e-13)
            assert A[j, k].item() == pytest.approx(spacing / pixel * val, abs=1e-12)


def test_2d_pixel_matches_double_quadrature():
    """One observed pixel of a 3-splat scene against dblquad of the continuous model."""
    s, p, sig_s, sig_psf = 3.0, 10.0, 3.0, 4.0
    grid = SplatGrid(height=3, width=3, pixel_m=p, spacing_m=s, sigma_m=sig_s, pad=4)
    w = torch.zeros(1, grid.ny, grid.nx, dtype=torch.float64)
    spots = [(6, 7, 0.8), (9, 8, -0.3), (7, 11, 0.5)]
    for r, c, v in spots:
        w[0, r, c] = v
    shift = torch.tensor([[1.3, -0.6]], dtype=torch.float64)  # dx east, dy north
    img = render_observations(w, shift, grid=grid, psf_sigma_m=sig_psf)[0, 0]
    se = math.hypot(sig_s, sig_psf)

    def scene(v, u):  # blurred, displaced scene at (u east, v south)
        tot = 0.0
        for r, c, val in spots:
            mu_u = grid.origin_m + c * s + 1.3
            mu_v = grid.origin_m + r * s + 0.6  # north +0.6 is south -0.6
            tot += val * s * s * norm.pdf(u, mu_u, se) * norm.pdf(v, mu_v, se)
        return tot

    for i, j in [(0, 0), (1, 1), (0, 2)]:
        val, _ = integrate.dblquad(scene, j * p, (j + 1) * p, i * p, (i + 1) * p,
                                   epsabs=1e-12)
        assert img[i, j].item() == pytest.approx(val / p**2, abs=1e-9)


def test_constant_field_renders_to_constant_and_flux_is_conserved():
    grid = SplatGrid.for_raster(height=6, width=7, pixel_m=10.0, spacing_m=3.0,
                                psf_sigma_m=4.0)
    w = torch.full((1, grid.ny, grid.nx), 0.2371, dtype=torch.float64)
    shifts = torch.tensor([[2.0, -3.0], [-4.5, 1.0]], dtype=torch.float64)
    img = render_observations(w, shifts, grid=grid, psf_sigma_m=4.0)
    assert torch.allclose(img, torch.full_like(img, 0.2371), atol=1e-9)
    assert torch.allclose(render_latent(w, grid=grid, resolution_m=2.5), torch.tensor(0.2371,
                          dtype=torch.float64), atol=1e-9)
    # flux: a compact blob in the middle keeps its mass (sum of w * s^2) in every observation
    w = torch.zeros_like(w)
    w[0, grid.ny // 2 - 2: grid.ny // 2 + 2, grid.nx // 2 - 2: grid.nx // 2 + 2] = 1.0
    img = render_observations(w, shifts, grid=grid, psf_sigma_m=4.0)
    mass = w.sum() * 3.0**2
    assert torch.allclose(img.sum((2, 3))[:, 0] * 10.0**2, mass.expand(2), rtol=1e-6)


def test_shift_equivariance():
    """A displacement of one pixel east/north is a roll of one column right/row up."""
    grid = SplatGrid.for_raster(height=8, width=8, pixel_m=10.0, spacing_m=2.5,
                                psf_sigma_m=3.0)
    torch.manual_seed(1)
    w = torch.randn(1, grid.ny, grid.nx, dtype=torch.float64)
    base = torch.tensor([[0.7, -1.1]], dtype=torch.float64)
    img = render_observations(w, base, grid=grid, psf_sigma_m=3.0)[0, 0]
    east = render_observations(w, base + torch.tensor([[10.0, 0.0]]), grid=grid,
                               psf_sigma_m=3.0)[0, 0]
    north = render_observations(w, base + torch.tensor([[0.0, 10.0]]), grid=grid,
                                psf_sigma_m=3.0)[0, 0]
    assert torch.allclose(east[:, 1:], img[:, :-1], atol=1e-9)
    assert torch.allclose(north[:-1, :], img[1:, :], atol=1e-9)
    # a displacement of one splat spacing equals moving the weights by one splat
    moved = render_observations(torch.roll(w, 1, dims=2), base, grid=grid, psf_sigma_m=3.0)
    east_s = render_observations(w, base + torch.tensor([[2.5, 0.0]]), grid=grid,
                                 psf_sigma_m=3.0)
    assert torch.allclose(moved[..., 2:-2, 2:-2], east_s[..., 2:-2, 2:-2], atol=1e-9)


def test_latent_render_with_a_shift_is_the_observation_without_psf():
    """``render_latent(shift_m=s)`` at the raster's pixel size is what an observation with
    shift ``s`` and no PSF sees (same signs: east and north positive), and one output pixel
    of shift east is a roll of one column."""
    grid = SplatGrid.for_raster(height=8, width=9, pixel_m=10.0, spacing_m=2.5)
    torch.manual_seed(2)
    w = torch.randn(2, grid.ny, grid.nx, dtype=torch.float64)
    s = (1.3, -2.1)
    seen = render_observations(w, torch.tensor([s], dtype=torch.float64), grid=grid,
                               psf_sigma_m=0.0)[0]
    assert torch.allclose(render_latent(w, grid=grid, resolution_m=10.0, shift_m=s), seen,
                          atol=1e-12)
    at0 = render_latent(w, grid=grid, resolution_m=2.5)
    east = render_latent(w, grid=grid, resolution_m=2.5, shift_m=(2.5, 0.0))
    assert torch.allclose(east[:, :, 1:], at0[:, :, :-1], atol=1e-12)


def test_gradcheck_float64():
    ay, ax = _axes(3.0, 10.0, 3, pad=3)
    w = torch.randn(1, ay.n_splats, ax.n_splats, dtype=torch.float64, requires_grad=True)
    dx = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    dy = torch.tensor([2.1, 0.4], dtype=torch.float64, requires_grad=True)
    fn = lambda w_, dy_, dx_: render(w_, ax_y=ay, ax_x=ax, sigma_m=5.0, dy_m=dy_, dx_m=dx_)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w, dy, dx), eps=1e-6, atol=1e-7)


def test_large_shift_band_adapts():
    """Shifts of several pixels (beyond any fixed band) still match the dense reference."""
    ay, ax = _axes(3.0, 10.0, 6, pad=12)
    w = torch.randn(1, ay.n_splats, ax.n_splats, dtype=torch.float64)
    d = torch.tensor([-31.0, 0.0, 27.5], dtype=torch.float64)
    kw = dict(ax_y=ay, ax_x=ax, sigma_m=5.0, dy_m=d, dx_m=-d)
    assert torch.allclose(render(w, **kw), render_dense(w, **kw), atol=1e-10)


def test_bad_geometry_is_a_config_error():
    with pytest.raises(ConfigError, match="simple ratio"):
        pixel_ratio(10.0, 3.14159265)
    with pytest.raises(ConfigError, match="too narrow"):
        SplatGrid.for_raster(height=4, width=4, pixel_m=10.0, spacing_m=3.0, sigma_m=1.0)
    grid = SplatGrid.for_raster(height=4, width=4, pixel_m=10.0, spacing_m=3.0)
    with pytest.raises(ConfigError, match="does not divide"):
        render_latent(torch.zeros(1, grid.ny, grid.nx), grid=grid, resolution_m=3.0)
    assert np.isclose(float(pixel_ratio(10.0, 3.0)), 10 / 3)


def _per_band_loop(w, shifts, grid, psfs, dense=False):
    """Reference: one call per band with that band's (T, 2) shifts and scalar PSF width."""
    return torch.cat([render_observations(w[b:b + 1], shifts[:, b], grid=grid,
                                          psf_sigma_m=float(psfs[b]), dense=dense)
                      for b in range(w.shape[0])], dim=1)


@pytest.mark.parametrize("dense", [False, True])
def test_per_band_shifts_and_psf_match_a_loop_over_bands(dense):
    """(T, B, 2) shifts and a (B,) PSF width equal a loop of single-band renders.

    The fast path cuts every band's taps at 5 sigma of the widest band, the loop at its own
    band's: both are within the 3e-7 truncation bound of the exact value, hence 6e-7; the
    dense path has no truncation (same sums, 1e-12).
    """
    tol = 1e-12 if dense else 6e-7
    grid = SplatGrid.for_raster(height=11, width=9, pixel_m=10.0, spacing_m=2.5,
                                psf_sigma_m=5.0)
    torch.manual_seed(11)
    w = torch.randn(3, grid.ny, grid.nx, dtype=torch.float64)
    date = torch.randn(4, 1, 2, dtype=torch.float64) * 3.0
    band_off = torch.tensor([[0.0, 0.0], [1.3, -0.7], [-2.1, 0.4]], dtype=torch.float64)
    shifts = date + band_off[None]  # (T, B, 2)
    psfs = [3.0, 4.0, 5.0]
    ref = _per_band_loop(w, shifts, grid, psfs, dense)
    for psf in (psfs, torch.tensor(psfs, dtype=torch.float64)):
        got = render_observations(w, shifts, grid=grid, psf_sigma_m=psf, dense=dense)
        assert got.shape == (4, 3, 11, 9)
        assert (got - ref).abs().max() <= tol * ref.abs().max()
    # (T, 2) shifts with per-band PSF, and (T, B, 2) shifts with one PSF
    got = render_observations(w, date[:, 0], grid=grid, psf_sigma_m=psfs, dense=dense)
    ref = _per_band_loop(w, date.expand(4, 3, 2), grid, psfs, dense)
    assert (got - ref).abs().max() <= tol * ref.abs().max()
    got = render_observations(w, shifts, grid=grid, psf_sigma_m=4.0, dense=dense)
    ref = _per_band_loop(w, shifts, grid, [4.0] * 3, dense)
    assert (got - ref).abs().max() <= tol * ref.abs().max()


def test_per_band_shift_gradients_match_a_loop_over_bands():
    """Gradients with respect to the weights and the (T, B, 2) shifts equal the loop's
    (to the 5-sigma truncation: 6e-7, see above)."""
    grid = SplatGrid.for_raster(height=8, width=10, pixel_m=10.0, spacing_m=2.0,
                                psf_sigma_m=4.0)
    torch.manual_seed(12)
    w = torch.randn(2, grid.ny, grid.nx, dtype=torch.float64, requires_grad=True)
    s = (torch.randn(3, 2, 2, dtype=torch.float64) * 2.0).requires_grad_()
    g = torch.randn(3, 2, 8, 10, dtype=torch.float64)
    got = torch.autograd.grad((render_observations(w, s, grid=grid, psf_sigma_m=[3.5, 4.5])
                               * g).sum(), (w, s))
    ref = torch.autograd.grad((_per_band_loop(w, s, grid, [3.5, 4.5]) * g).sum(), (w, s))
    for a, b in zip(got, ref):
        assert (a - b).abs().max() <= 6e-7 * b.abs().max()
    # (T, 2) shifts shared by the bands, widths per band: the shift gradient sums the bands
    s2 = s[:, 0].detach().requires_grad_()
    got = torch.autograd.grad((render_observations(w, s2, grid=grid, psf_sigma_m=[3.5, 4.5])
                               * g).sum(), s2)[0]
    s3 = s2.detach()[:, None].expand(3, 2, 2).clone().requires_grad_()
    ref = torch.autograd.grad((_per_band_loop(w, s3, grid, [3.5, 4.5]) * g).sum(), s3)[0]
    assert (got - ref.sum(1)).abs().max() <= 6e-7 * ref.abs().max()


@pytest.mark.parametrize("shape, psf", [((4, 3, 2), 4.0), ((4, 2, 3), 4.0),
                                        ((4, 2), [1.0, 2.0, 3.0]), ((4, 2), -1.0)])
def test_bad_per_band_shapes_are_config_errors(shape, psf):
    grid = SplatGrid.for_raster(height=4, width=4, pixel_m=10.0, spacing_m=2.0)
    w = torch.zeros(2, grid.ny, grid.nx)
    with pytest.raises(ConfigError):
        render_observations(w, torch.zeros(shape), grid=grid, psf_sigma_m=psf)
