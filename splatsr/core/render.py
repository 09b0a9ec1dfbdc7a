"""One-dimensional pixel-integration operators of the splat model, and the separable render.

Along one axis, splat ``k`` is a Gaussian of width ``sigma`` centred at
``mu_k = splat_origin_m + k * spacing_m``; output pixel ``j`` covers
``[pix_origin_m + j * pixel_m, pix_origin_m + (j + 1) * pixel_m]``; observation ``t`` sees the
content displaced by ``delta_t`` metres. The (normalised) pixel value is::

    y[t, j] = sum_k A[t, j, k] * w[k]
    A[t, j, k] = (spacing_m / pixel_m) * 0.5 * (erf((b_j - mu_k - delta_t) / (sigma sqrt2))
                                                - erf((a_j - mu_k - delta_t) / (sigma sqrt2)))

so a constant weight field renders to that constant (the splat lattice is a partition of
unity to ~1e-8 when ``sigma >= 0.8 * spacing``). In two dimensions the operator is the product
of one such matrix per axis.

Two implementations, checked against each other in forward and backward:

* :func:`axis_matrix` / :func:`render_dense` -- the dense reference: materialise ``A``.
* :func:`render` -- the fast path (its pieces in :mod:`splatsr.core.tiling`).
  ``A`` is banded (a pixel only sees splats within a few
  sigma) and, when ``pixel_m / spacing_m = P / q`` is rational, periodic: pixel
  ``j = q*m + phi`` sees splat ``k = m*P + l - c`` with a weight that depends only on
  ``(t, phi, l)``. So a tile of ``G`` periods (``G*q`` pixels) reads one window of
  ``(G-1)*P + L`` splats through the same small matrix wherever the tile is, and the render is
  a few GEMMs per tile on strided views of the weights: it costs ``pixels x band`` instead of
  ``pixels x splats``, and its backward pass is written out (no zero-filled scatter buffers).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import torch

import splatsr.core.tiling as tl
from splatsr.errors import ConfigError

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Axis:
    """Geometry of one axis: a row of splats and a row of output pixels (metres)."""

    n_splats: int  # number of splats along the axis
    spacing_m: float  # distance between splat centres
    splat_origin_m: float  # centre of splat 0
    n_pix: int  # number of output pixels
    pixel_m: float  # output pixel size
    pix_origin_m: float = 0.0  # left edge of pixel 0

    def ratio(self) -> Fraction:
        """``pixel_m / spacing_m`` as an exact fraction ``P / q``."""
        return pixel_ratio(self.pixel_m, self.spacing_m)


def pixel_ratio(pixel_m: float, spacing_m: float, max_denominator: int = 64) -> Fraction:
    """``pixel_m / spacing_m`` as a fraction with a small denominator.

    Raises
    ------
    ConfigError
        If the ratio is not (to 1e-9) a fraction with denominator <= ``max_denominator``,
        e.g. a splat spacing of 3.14159 m on a 10 m grid.
    """
    if spacing_m <= 0 or pixel_m <= 0:
        raise ConfigError(f"pixel size and splat spacing must be positive, got "
                          f"{pixel_m} m and {spacing_m} m")
    frac = Fraction(pixel_m / spacing_m).limit_denominator(max_denominator)
    if abs(float(frac) - pixel_m / spacing_m) > 1e-9 * max(1.0, pixel_m / spacing_m):
        raise ConfigError(f"pixel size {pixel_m} m and splat spacing {spacing_m} m must have "
                          f"a simple ratio (e.g. spacing 2, 2.5, 3 or 5 m for 10 m pixels)")
    return frac


def box_weight(x: torch.Tensor, *, sigma_m: float, pixel_m: float,
               spacing_m: float) -> torch.Tensor:
    """Mass of a unit-height splat (times spacing/pixel) inside a pixel.

    ``x = a - mu - delta`` is the pixel's left edge relative to the displaced splat centre.
    """
    z = 1.0 / (sigma_m * _SQRT2)
    return (0.5 * spacing_m / pixel_m) * (torch.erf((x + pixel_m) * z) - torch.erf(x * z))


# ----------------------------------------------------------------------------- dense reference

def axis_matrix(axis: Axis, *, sigma_m: float, delta_m: torch.Tensor) -> torch.Tensor:
    """Dense per-observation matrices ``A`` of shape (T, n_pix, n_splats) for shifts (T,)."""
    dt, dev = delta_m.dtype, delta_m.device
    a = axis.pix_origin_m + axis.pixel_m * torch.arange(axis.n_pix, dtype=dt, device=dev)
    mu = axis.splat_origin_m + axis.spacing_m * torch.arange(axis.n_splats, dtype=dt,
                                                               device=dev)
    x = a[None, :, None] - mu[None, None, :] - delta_m[:, None, None]  # (T, N, K)
    return box_weight(x, sigma_m=sigma_m, pixel_m=axis.pixel_m, spacing_m=axis.spacing_m)


def render_dense(weights: torch.Tensor, *, ax_y: Axis, ax_x: Axis, sigma_m: float,
                 dy_m: torch.Tensor, dx_m: torch.Tensor) -> torch.Tensor:
    """Reference render: weights (B, Ky, Kx) -> images (T, B, Ny, Nx).

    ``dy_m`` is the displacement along the row axis (downwards), ``dx_m`` along columns.
    """
    a_y = axis_matrix(ax_y, sigma_m=sigma_m, delta_m=dy_m)  # (T, Ny, Ky)
    a_x = axis_matrix(ax_x, sigma_m=sigma_m, delta_m=dx_m)  # (T, Nx, Kx)
    return torch.einsum("tik,bkl,tjl->tbij", a_y, weights, a_x)


# ----------------------------------------------------------------------------- banded fast path

def render(weights: torch.Tensor, *, ax_y: Axis, ax_x: Axis,
           sigma_m: float | torch.Tensor, dy_m: torch.Tensor, dx_m: torch.Tensor,
           delta_max_m: float | None = None) -> torch.Tensor:
    """Banded render: weights (B, Ky, Kx) -> images (T, B, Ny, Nx). Same maths as
    :func:`render_dense`.

    ``sigma_m`` is one width or (B,) widths, one per band (no gradient); ``dy_m`` / ``dx_m``
    are (T,) shifts or (T, B), one per observation and band (``dy_m`` along the rows,
    downwards). ``delta_max_m`` bounds ``|shift|`` to size the band; without it the band
    is sized from the shifts themselves, which reads them on the host (a device sync on
    CUDA). See :func:`render_xy` for how it is computed.
    """
    T = dx_m.shape[0]
    shift = torch.stack([dx_m.reshape(T, -1), -dy_m.reshape(T, -1)], -1)  # (T, Bs, 2)
    return render_xy(weights, ax_y=ax_y, ax_x=ax_x, sigma_m=sigma_m, shift_m=shift,
                     delta_max_m=delta_max_m)


def render_xy(weights: torch.Tensor, *, ax_y: Axis, ax_x: Axis,
              sigma_m: float | torch.Tensor, shift_m: torch.Tensor,
              delta_max_m: float | None = None) -> torch.Tensor:
    """:func:`render` with the shifts as one tensor ``shift_m`` (T, Bs, 2) of ``(east,
    north)`` displacements (Bs = 1 or B), the model's convention: no per-axis slicing.

    Rows first: one batched GEMM over (band, row tile) whose windows are overlapping row
    blocks of the padded weights (strided views, no copies), all observations stacked in
    the kernel; then columns: one batched GEMM over (band, tile, observation). Every step is
    an autograd function with a written-out backward pass (:mod:`splatsr.core.tiling`), so
    the number of operator calls does not depend on the raster size. The only large
    intermediate is the row-rendered ``z`` of about ``T * B * Ny * Kx`` values.
    """
    B, Ky, Kx = weights.shape
    if Ky != ax_y.n_splats or Kx != ax_x.n_splats:
        raise ValueError(f"weights {tuple(weights.shape)} do not match the axes "
                         f"({ax_y.n_splats}, {ax_x.n_splats})")
    dt, dev = weights.dtype, weights.device
    sigmas = (float(sigma_m),) if isinstance(sigma_m, (int, float)) else \
        tuple(float(v) for v in torch.as_tensor(sigma_m).detach().reshape(-1).tolist())
    shift = shift_m if shift_m.dtype == dt else shift_m.to(dt)
    T = shift.shape[0]
    if delta_max_m is None:
        delta_max_m = float(shift.detach().abs().max()) if shift.numel() else 0.0
    s_max = max(sigmas)
    ty = tl.axis_tiling(ax_y, sigma_m=s_max, delta_max_m=delta_max_m,
                        tile_px=tl.TILE_PIXELS_ROWS)
    tx = tl.axis_tiling(ax_x, sigma_m=s_max, delta_max_m=delta_max_m,
                        tile_px=tl.TILE_PIXELS_COLS)
    geo_y = tl.tap_geometry(ax_y, ty, sigmas, dt, dev, transpose=False)
    geo_x = tl.tap_geometry(ax_x, tx, sigmas, dt, dev, transpose=True)
    ky, kx = tl.Taps.apply(shift, _zsign(sigmas, dt, dev), geo_y, geo_x)
    x = tl.Windows.apply(weights, ty, tx)  # (B * S + extra, n_x * win_x)
    Bk = ky.shape[0]
    z = tl.RowPass.apply(x, ky.view(Bk, -1, ky.shape[-1]), B * ty.n_alloc, ty.stride)
    out = tl.ColPass.apply(z, kx, T)  # (B * n_alloc * T, Gq_y * n_x, Gq_x)
    shape6 = (B, ty.n_alloc, T, ty.G * ty.q, tx.n, tx.G * tx.q)
    return tl.Assemble.apply(out, shape6, ty.n, ax_y.n_pix, ax_x.n_pix)


@functools.lru_cache(maxsize=64)
def _zsign(sigmas: tuple[float, ...], dt: torch.dtype, dev: torch.device) -> torch.Tensor:
    """(Bz, 2) ``(z, -z)`` with ``z = 1 / (sigma sqrt 2)`` per width (cached)."""
    z = 1.0 / (_SQRT2 * torch.tensor(sigmas, dtype=torch.float64))
    return torch.stack([z, -z], -1).to(dev, dt)
