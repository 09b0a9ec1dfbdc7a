"""The tiled fast path (:func:`splatsr.core.render.render`) against the dense oracle, many tiles.

``tests/core/test_render.py`` checks small rasters (one tile per axis at the default tile sizes);
here the tiles are made small so that every axis has several, the windows overlap and the
backward pass's overlap bookkeeping (accumulate on the overlap, overwrite the rest) is
exercised. Tolerances: float64 3e-7 relative (the band stops at 5 sigma, whose neglected
Gaussian mass is below 3e-7 of a unit weight; measured errors are ~1e-9); float32 1e-5
relative (the issue's bound; measured errors are ~1e-6).
"""

from __future__ import annotations

import math

import pytest
import torch

import splatsr.core.render as R
import splatsr.core.tiling as tiling
from splatsr.core.model import SplatGrid, render_observations

SPACINGS = [2.0, 2.5, 3.0, 10.0 / 3.0]
TOL = {torch.float64: 3e-7, torch.float32: 1e-5}


@pytest.fixture(params=[1, 3, 8], ids=["one-period-tiles", "tiny-tiles", "default-tiles"])
def tiles(request, monkeypatch):
    monkeypatch.setattr(tiling, "TILE_PIXELS_ROWS", request.param)
    return request.param


def _axes(spacing: float, n_y: int, n_x: int, pad: int) -> tuple[R.Axis, R.Axis]:
    org = (0.5 - pad) * spacing
    ky = math.ceil(n_y * 10.0 / spacing - 1e-9) + 2 * pad
    kx = math.ceil(n_x * 10.0 / spacing - 1e-9) + 2 * pad + 1  # Ky != Kx on purpose
    return R.Axis(ky, spacing, org, n_y, 10.0), R.Axis(kx, spacing, org, n_x, 10.0)


def _compare(w, dy, dx, ay, ax, sigma, dtype):
    kw = dict(ax_y=ay, ax_x=ax, sigma_m=sigma)
    fast = R.render(w, dy_m=dy, dx_m=dx, **kw)
    ref = R.render_dense(w, dy_m=dy, dx_m=dx, **kw)
    assert fast.shape == ref.shape == (dx.shape[0], w.shape[0], ay.n_pix, ax.n_pix)
    tol = TOL[dtype]
    assert (fast - ref).abs().max() <= tol * ref.abs().max()
    g = torch.randn_like(ref)
    names = ("weights", "dx", "dy")
    for name, a, b in zip(names, torch.autograd.grad((fast * g).sum(), (w, dx, dy)),
                          torch.autograd.grad((ref * g).sum(), (w, dx, dy))):
        assert (a - b).abs().max() <= tol * b.abs().max(), name


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_backward_match_dense_odd_sizes(tiles, spacing, dtype):
    """Odd raster sizes (not a multiple of a tile or period), wide and narrow margins."""
    torch.manual_seed(int(spacing * 7))
    for n_y, n_x, pad, scale_m in [(13, 11, 4, 3.0), (9, 7, 12, 1.5)]:
        ay, ax = _axes(spacing, n_y, n_x, pad)
        w = torch.randn(3, ay.n_splats, ax.n_splats, dtype=dtype, requires_grad=True)
        dx = (torch.randn(4, dtype=dtype) * scale_m).requires_grad_()
        dy = (torch.randn(4, dtype=dtype) * scale_m).requires_grad_()
        _compare(w, dy, dx, ay, ax, math.hypot(0.8 * spacing, 4.0), dtype)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_large_shifts_match_dense_with_gradients(tiles, spacing):
    """Shifts of up to 2.8 pixels widen the band; values and all gradients still agree."""
    torch.manual_seed(3)
    ay, ax = _axes(spacing, 10, 12, pad=18)
    w = torch.randn(2, ay.n_splats, ax.n_splats, dtype=torch.float64, requires_grad=True)
    dx = torch.tensor([-28.0, 3.3, 0.0, 17.5], dtype=torch.float64, requires_grad=True)
    dy = torch.tensor([25.0, -1.1, 0.4, -19.0], dtype=torch.float64, requires_grad=True)
    _compare(w, dy, dx, ay, ax, 5.0, torch.float64)


def test_model_path_is_the_fast_path_and_matches_dense():
    """``render_observations`` (the solver's model) uses the fast path; dense=True agrees."""
    grid = SplatGrid.for_raster(height=21, width=19, pixel_m=10.0, spacing_m=2.0,
                                psf_sigma_m=4.0)
    torch.manual_seed(5)
    w = torch.randn(2, grid.ny, grid.nx, dtype=torch.float64)
    s = torch.randn(5, 2, dtype=torch.float64) * 2.0
    fast = render_observations(w, s, grid=grid, psf_sigma_m=4.0)
    ref = render_observations(w, s, grid=grid, psf_sigma_m=4.0, dense=True)
    assert (fast - ref).abs().max() <= 3e-7 * ref.abs().max()


def test_weights_shape_mismatch_is_rejected():
    ay, ax = _axes(2.0, 4, 4, pad=3)
    w = torch.zeros(1, ay.n_splats + 1, ax.n_splats)
    with pytest.raises(ValueError, match="do not match"):
        R.render(w, ax_y=ay, ax_x=ax, sigma_m=4.0, dy_m=torch.zeros(2), dx_m=torch.zeros(2))


def test_no_observations_x_pixels_x_splats_buffer():
    """Peak autograd-saved memory stays at a few times the row-rendered intermediate."""
    grid = SplatGrid.for_raster(height=40, width=40, pixel_m=10.0, spacing_m=2.0,
                                psf_sigma_m=4.0)
    T, B = 8, 2
    w = torch.randn(B, grid.ny, grid.nx, requires_grad=True)
    s = torch.randn(T, 2, requires_grad=True)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        render_observations(w, s, grid=grid, psf_sigma_m=4.0).sum().backward()
    # the intermediate z is T * B * Ny' * Kx'' with Ny' <= H + 16 (two row tiles: the last
    # used one and the zero tail) and Kx'' <= 2 Kx (column windows side by side: a window of
    # 15 P + L splats per 16 P, L < 16 P here)
    z_bound = T * B * (40 + 16) * 2 * grid.nx
    assert max(saved) <= z_bound
    assert max(saved) < T * 40 * 40 * grid.nx  # observations x pixels x splats per axis


def test_shift_bound_sizes_the_band_without_changing_the_render():
    """A ``delta_max_m`` above the shifts (no host read of them) renders the same values
    (a wider band only adds taps beyond 5 sigma: 3e-7); one below them truncates (differs)."""
    grid = SplatGrid.for_raster(height=12, width=10, pixel_m=10.0, spacing_m=2.0,
                                psf_sigma_m=4.0)
    torch.manual_seed(6)
    w = torch.randn(2, grid.ny, grid.nx, dtype=torch.float64)
    s = torch.tensor([[12.0, -3.0], [-14.0, 9.0], [1.0, 2.0], [1.0, -8.0]], dtype=torch.float64)
    ref = render_observations(w, s, grid=grid, psf_sigma_m=4.0)
    wide = render_observations(w, s, grid=grid, psf_sigma_m=4.0, delta_max_m=30.0)
    assert (wide - ref).abs().max() <= 3e-7 * ref.abs().max()
    narrow = render_observations(w, s, grid=grid, psf_sigma_m=4.0, delta_max_m=0.0)
    assert (narrow - ref).abs().max() > 1e-4 * ref.abs().max()


@pytest.mark.gpu
def test_cuda_matches_cpu_forward_and_backward():
    """Opt-in (``pytest -m gpu``): the render and its gradients on CUDA equal the CPU's to
    the float32 bound (1e-5 relative), with shared and per-band shifts."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    grid = SplatGrid.for_raster(height=40, width=36, pixel_m=10.0, spacing_m=2.0,
                                psf_sigma_m=4.0)
    torch.manual_seed(9)
    w0 = torch.randn(3, grid.ny, grid.nx)
    for s0 in (torch.randn(6, 2) * 2.0, torch.randn(6, 3, 2) * 2.0):
        g0 = torch.randn(6, 3, 40, 36)
        res = []
        for dev in ("cpu", "cuda"):
            w = w0.to(dev).requires_grad_()
            s = s0.to(dev).requires_grad_()
            out = render_observations(w, s, grid=grid, psf_sigma_m=[3.5, 4.0, 4.5])
            res.append([t.cpu() for t in (out, *torch.autograd.grad(
                (out * g0.to(dev)).sum(), (w, s)))])
        for a, b in zip(*res):
            assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def _aten_calls(n_px: int) -> int:
    grid = SplatGrid.for_raster(height=n_px, width=n_px, pixel_m=10.0, spacing_m=2.0,
                                psf_sigma_m=4.0)
    w = torch.randn(2, grid.ny, grid.nx, requires_grad=True)
    s = torch.randn(3, 2, 2, requires_grad=True)  # per-band shifts
    render_observations(w, s, grid=grid, psf_sigma_m=4.0).sum().backward()  # warm caches
    with torch.profiler.profile() as prof:
        render_observations(w, s, grid=grid, psf_sigma_m=4.0).sum().backward()
    return sum(e.name.startswith("aten::") for e in prof.events())


def test_operator_calls_do_not_grow_with_the_raster():
    """Forward + backward issue the same aten calls for 24 px and 96 px rasters (4x the
    row and column tiles; the per-tile loops this replaced grew with them), to within a few
    calls: a crop or pad that is a no-op at one size is an ``alias`` at another, and a
    band-block's zero tail can be one tile or two."""
    small, large = _aten_calls(24), _aten_calls(96)
    assert abs(small - large) <= 8
    assert large < 450
