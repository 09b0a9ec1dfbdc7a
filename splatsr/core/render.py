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
* :func:`render` -- the fast path. ``A`` is banded (a pixel only sees splats within a few
  sigma) and, when ``pixel_m / spacing_m = P / q`` is rational, periodic: pixel
  ``j = q*m + phi`` sees splat ``k = m*P + l - c`` with a weight that depends only on
  ``(t, phi, l)``. So a tile of ``G`` periods (``G*q`` pixels) reads one window of
  ``(G-1)*P + L`` splats through the same small matrix wherever the tile is, and the render is
  a few GEMMs per tile on strided views of the weights: it costs ``pixels x band`` instead of
  ``pixels x splats``, and its backward pass is written out (no zero-filled scatter buffers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from splatsr.errors import ConfigError

TAIL_SIGMAS = 5.0  # band half-width in sigmas; the neglected Gaussian mass is < 3e-7
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

def _band(axis: Axis, sigma_m: float, delta_max_m: float) -> tuple[int, int, int, int]:
    """(P, q, c, L): period in splats / pixels, band offset and band length."""
    ratio = axis.ratio()
    P, q = ratio.numerator, ratio.denominator
    s, p = axis.spacing_m, axis.pixel_m
    base = axis.pix_origin_m - axis.splat_origin_m
    reach = TAIL_SIGMAS * sigma_m
    lo = math.floor((base - delta_max_m - reach) / s)  # smallest useful (l - c)
    hi = math.ceil((base + delta_max_m + q * p + reach) / s)  # largest useful (l - c)
    return P, q, -lo, hi - lo + 1


def axis_kernels(axis: Axis, *, sigma_m: float, delta_m: torch.Tensor,
                 c: int, q: int, L: int) -> torch.Tensor:
    """Polyphase band weights of shape (T * q, 1, L): row ``t*q + phi``, tap ``tap``."""
    dt, dev = delta_m.dtype, delta_m.device
    phi = torch.arange(q, dtype=dt, device=dev)
    tap = torch.arange(L, dtype=dt, device=dev)
    base = axis.pix_origin_m - axis.splat_origin_m
    x = (base + phi[None, :, None] * axis.pixel_m + (c - tap[None, None, :]) * axis.spacing_m
         - delta_m[:, None, None])  # (T, q, L)
    w = box_weight(x, sigma_m=sigma_m, pixel_m=axis.pixel_m, spacing_m=axis.spacing_m)
    return w.reshape(-1, 1, L)


# Output pixels per tile (rounded to whole periods) on the row axis (shared by all
# observations: GEMMs with T * tile rows) and on the column axis (one GEMM per observation:
# wider tiles keep the GEMMs efficient at the price of more multiply-adds per pixel).
TILE_PIXELS_ROWS = 8
TILE_PIXELS_COLS = 24


def _tiling(axis: Axis, sigma_m: float, delta_m: torch.Tensor, tile_px: int) -> dict:
    """Tiles of one axis: ``G`` periods (``G * q`` pixels) per tile, ``n`` tiles.

    Tile ``i`` reads the ``win = (G - 1) * P + L`` padded splats from ``i * G * P``; the
    padded input is the splat row shifted right by ``c`` (cropped where ``c < 0``) and cut
    or zero-extended to ``need`` splats.
    """
    T = delta_m.shape[0]
    d_max = float(delta_m.detach().abs().max()) if T else 0.0
    d_max = math.ceil(d_max / axis.spacing_m + 1e-9) * axis.spacing_m  # fewer distinct L
    P, q, c, L = _band(axis, sigma_m, d_max)
    G = max(1, round(tile_px / q))
    M = -(-axis.n_pix // q)  # periods of output
    n = -(-M // G)
    win = (G - 1) * P + L
    return dict(P=P, q=q, c=c, L=L, G=G, n=n, win=win, stride=G * P,
                need=(n - 1) * G * P + win)


def _pad_to(x: torch.Tensor, dim: int, c: int, need: int) -> torch.Tensor:
    """Shift ``x`` right by ``c`` along ``dim`` (crop if negative), then cut/extend to ``need``."""
    K = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [c, need - K - c]
    return F.pad(x, pad)


def tile_kernels(axis: Axis, *, sigma_m: float, delta_m: torch.Tensor,
                 tiling: dict) -> torch.Tensor:
    """Per-observation tile matrices (T, G * q, win): row ``g * q + phi`` is the band of
    phase ``phi`` placed at offset ``g * P`` (differentiable in ``delta_m``)."""
    T = delta_m.shape[0]
    P, q, G, L, win = (tiling[k] for k in ("P", "q", "G", "L", "win"))
    ker = axis_kernels(axis, sigma_m=sigma_m, delta_m=delta_m, c=tiling["c"], q=q,
                       L=L).reshape(T, q, L)
    rows = [F.pad(ker, (g * P, win - L - g * P)) for g in range(G)]  # G x (T, q, win)
    return torch.stack(rows, 1).reshape(T, G * q, win)


class _SharedRows(torch.autograd.Function):
    """First axis (rows): banded product along dim -2, one kernel stack for all bands.

    ``x`` (B, need, C) padded weights, ``k`` (T * Gq, win) -> ``z`` (T, B, n, Gq, C) with
    ``z[:, b, i] = k @ x[b, i*stride : i*stride+win]`` (windows are row blocks: no copies).
    """

    @staticmethod
    def forward(ctx, x, k, T: int, stride: int, n: int):  # noqa: D401
        B, _, C = x.shape
        win = k.shape[1]
        gq = k.shape[0] // T
        z = x.new_empty(T, B, n, gq, C)
        for b in range(B):
            for i in range(n):
                z[:, b, i] = (k @ x[b, i * stride:i * stride + win]).view(T, gq, C)
        ctx.save_for_backward(x, k)
        ctx.geom = (stride, n)
        return z

    @staticmethod
    def backward(ctx, dz):
        x, k = ctx.saved_tensors
        stride, n = ctx.geom
        win = k.shape[1]
        T, B, _, gq, C = dz.shape
        dx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        dk = torch.zeros_like(k) if ctx.needs_input_grad[1] else None
        for b in range(B):
            for i in range(n):
                sl = slice(i * stride, i * stride + win)
                d = dz[:, b, i].reshape(T * gq, C)
                if dx is not None:
                    dx[b, sl].addmm_(k.t(), d)  # (win, T*Gq) @ (T*Gq, C)
                if dk is not None:
                    dk.addmm_(d, x[b, sl].t())  # (T*Gq, C) @ (C, win)
        return dx, dk, None, None, None


class _PerObsLast(torch.autograd.Function):
    """Second axis (columns): banded product along the last dim, one kernel per observation.

    ``z`` (T, R, need), ``k`` (T, Gq, win) -> (T, R, n, Gq) with ``out[:, :, j] =
    z[:, :, j*stride : j*stride+win] @ k^T`` (batched over T; windows are strided views).
    """

    @staticmethod
    def forward(ctx, z, k, stride: int, n: int):  # noqa: D401
        T, R, _ = z.shape
        win = k.shape[2]
        out = z.new_empty(T, R, n, k.shape[1])
        kt = k.transpose(1, 2)
        for j in range(n):
            out[:, :, j] = torch.bmm(z[:, :, j * stride:j * stride + win], kt)
        ctx.save_for_backward(z, k)
        ctx.geom = (stride, n)
        return out

    @staticmethod
    def backward(ctx, dout):
        z, k = ctx.saved_tensors
        stride, n = ctx.geom
        win = k.shape[2]
        dz = torch.empty_like(z) if ctx.needs_input_grad[0] else None
        dk = torch.zeros_like(k) if ctx.needs_input_grad[1] else None
        old = win - stride  # columns of window j already written by the earlier windows
        for j in range(n):
            sl = slice(j * stride, j * stride + win)
            d = dout[:, :, j]  # (T, R, Gq), rows strided
            if dz is not None:  # (T, R, Gq) @ (T, Gq, win): add on the overlap, write the rest
                o = old if j else 0
                if o:
                    dz[:, :, sl][..., :o].baddbmm_(d, k[..., :o])
                dz[:, :, sl][..., o:].baddbmm_(d, k[..., o:], beta=0)
            if dk is not None:
                dk.baddbmm_(d.transpose(1, 2), z[:, :, sl])  # (T, Gq, R) @ (T, R, win)
        return dz, dk, None, None


def render(weights: torch.Tensor, *, ax_y: Axis, ax_x: Axis, sigma_m: float,
           dy_m: torch.Tensor, dx_m: torch.Tensor) -> torch.Tensor:
    """Banded render: weights (B, Ky, Kx) -> images (T, B, Ny, Nx). Same maths as
    :func:`render_dense`.

    Each axis is cut into tiles of about :data:`TILE_PIXELS_ROWS` /
    :data:`TILE_PIXELS_COLS` output pixels; a tile's pixels
    read one window of splats through a (pixels x window) matrix that is the same for every
    tile (the band is periodic). Rows first: for each band and row tile, one GEMM with all
    observations stacked (the window is a block of weight rows); then columns: for each
    column tile, one GEMM per observation on a strided view. No transposing copies; the only
    large intermediate is the row-rendered ``z`` of ``T * B * Ny' * Kx'`` values
    (``Kx' ~ Nx * pixel / spacing``), never observations x pixels x splats.
    Cost: ``T * B * Ny * (Kx' + Nx) * win`` multiply-adds, ``win ~ 2 x`` the band.
    """
    B, Ky, Kx = weights.shape
    T = dx_m.shape[0]
    if Ky != ax_y.n_splats or Kx != ax_x.n_splats:
        raise ValueError(f"weights {tuple(weights.shape)} do not match the axes "
                         f"({ax_y.n_splats}, {ax_x.n_splats})")
    dt = weights.dtype
    gx = _tiling(ax_x, sigma_m, dx_m, TILE_PIXELS_COLS)
    gy = _tiling(ax_y, sigma_m, dy_m, TILE_PIXELS_ROWS)
    kx = tile_kernels(ax_x, sigma_m=sigma_m, delta_m=dx_m.to(dt), tiling=gx)  # (T, Gqx, wx)
    ky = tile_kernels(ax_y, sigma_m=sigma_m, delta_m=dy_m.to(dt), tiling=gy)  # (T, Gqy, wy)
    gqx, gqy = kx.shape[1], ky.shape[1]
    w = _pad_to(_pad_to(weights, 1, gy["c"], gy["need"]), 2, gx["c"], gx["need"])
    z = _SharedRows.apply(w, ky.reshape(T * gqy, -1), T, gy["stride"], gy["n"])
    ny = gy["n"] * gqy
    z = z.view(T, B * ny, gx["need"])  # (T, B*Ny', Kx')
    out = _PerObsLast.apply(z, kx, gx["stride"], gx["n"])  # (T, B*Ny', n_x, Gqx)
    out = out.view(T, B, ny, gx["n"] * gqx)
    return out[:, :, : ax_y.n_pix, : ax_x.n_pix]
