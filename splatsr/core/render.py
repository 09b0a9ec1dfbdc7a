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


# Output pixels per row tile (rounded to whole periods): the row pass is one batched GEMM
# over (band, tile) whose matrices are (T * tile, window); wider tiles make larger GEMMs at
# the price of more multiply-adds on zeros (the window is (tile - 1) * P + L splats).
TILE_PIXELS_ROWS = 8
# Output pixels per column tile: the row pass writes each tile's window of columns
# ((tile - 1) * P + L splats) side by side, so wider tiles duplicate fewer columns but spend
# more multiply-adds on zeros in the column GEMM.
TILE_PIXELS_COLS = 16


@dataclass(frozen=True)
class Tiling:
    """Tiles of one axis: ``G`` periods (``G * q`` pixels) per tile, ``n`` used tiles.

    Tile ``i`` reads the ``win = (G - 1) * P + L`` padded splats from ``i * stride``
    (``stride = G * P``). Each band's padded splat row holds ``n_alloc >= n`` tiles
    (``n_alloc * stride`` splats) so that every used window lies inside its band's block.
    """

    P: int
    q: int
    c: int
    L: int
    G: int
    n: int

    @property
    def win(self) -> int:  # splats a tile reads
        return (self.G - 1) * self.P + self.L

    @property
    def stride(self) -> int:  # splats between tiles
        return self.G * self.P

    @property
    def n_alloc(self) -> int:  # tiles per band block, the used ones and a zero tail
        return self.n + -(-(self.win - self.stride) // self.stride)


def axis_tiling(axis: Axis, *, sigma_m: float, delta_max_m: float, tile_px: int) -> Tiling:
    """The tiling of ``axis`` for a band of width ``sigma_m`` and shifts up to ``delta_max_m``."""
    d_max = math.ceil(delta_max_m / axis.spacing_m + 1e-9) * axis.spacing_m  # fewer distinct L
    P, q, c, L = _band(axis, sigma_m, d_max)
    G = max(1, round(tile_px / q))
    periods = -(-axis.n_pix // q)  # periods of output (ceil)
    n = -(-periods // G)  # tiles of G periods covering them
    return Tiling(P, q, c, L, G, n)


def tap_weights(axis: Axis, *, sigma_m: float | torch.Tensor, delta_m: torch.Tensor,
                tiling: Tiling) -> torch.Tensor:
    """Tile matrices (T, Bk, G * q, win) for shifts ``delta_m`` (T, 1 or B) and one width or (1 or B,).

    Row ``g * q + phi`` is the band of phase ``phi`` placed at tap offset ``g * P`` (zero
    outside the band's ``L`` taps). Differentiable in ``delta_m`` (autograd).
    """
    x0, inside = _tap_geometry(axis, tiling, delta_m.dtype, delta_m.device)
    z = (1.0 / _SQRT2) / (sigma_m if isinstance(sigma_m, float) else
                          sigma_m.to(delta_m.dtype)[:, None, None])
    return _Taps.apply(delta_m, x0, inside, z, axis.pixel_m)


class _Taps(torch.autograd.Function):
    """``inside * (erf((x + p) z) - erf(x z))`` with ``x = x0 - delta``; the backward pass is
    the Gaussian it differentiates to, summed to ``delta``'s (T, Bk)."""

    @staticmethod
    def forward(ctx, delta, x0, inside, z, pixel_m: float):  # noqa: D401
        xz = (x0 - delta[..., None, None]) * z  # (T, Bk, Gq, win)
        pz = pixel_m * z
        ctx.save_for_backward(xz, inside, torch.as_tensor(z))
        ctx.pz = pz
        ctx.bk = delta.shape[1]
        return (torch.erf(xz + pz) - torch.erf(xz)) * inside

    @staticmethod
    def backward(ctx, dw):
        xz, inside, z = ctx.saved_tensors
        # d/d delta erf((x0 - delta) z + c) = -(2 / sqrt(pi)) z exp(-(...)^2)
        g = torch.exp(-(xz + ctx.pz) ** 2) - torch.exp(-xz * xz)
        dd = (dw * inside * g * z).sum((2, 3)) * (-2.0 / math.sqrt(math.pi))  # (T, Bk')
        return dd.sum(1, keepdim=True) if ctx.bk < dd.shape[1] else dd, None, None, None, None


_GEOMETRY_CACHE: dict = {}


def _tap_geometry(axis: Axis, tl: Tiling, dt: torch.dtype,
                  dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, inside), both (G * q, win): tap positions relative to the splat centre before
    the shift, and the band mask times ``0.5 * spacing / pixel`` (cached: built once per
    geometry, not per render)."""
    key = (axis, tl, dt, dev)
    if key not in _GEOMETRY_CACHE:
        if len(_GEOMETRY_CACHE) > 64:
            _GEOMETRY_CACHE.clear()
        g = torch.arange(tl.G, dtype=torch.float64)[:, None, None]
        phi = torch.arange(tl.q, dtype=torch.float64)[None, :, None]
        tap = torch.arange(tl.win, dtype=torch.float64)[None, None, :] - tl.P * g
        base = axis.pix_origin_m - axis.splat_origin_m
        x0 = base + phi * axis.pixel_m + (tl.c - tap) * axis.spacing_m  # (G, q, win)
        inside = ((tap >= 0) & (tap < tl.L)).expand(tl.G, tl.q, tl.win).to(torch.float64)
        inside = inside * (0.5 * axis.spacing_m / axis.pixel_m)
        _GEOMETRY_CACHE[key] = (x0.reshape(-1, tl.win).to(dev, dt),
                                inside.reshape(-1, tl.win).to(dev, dt))
    return _GEOMETRY_CACHE[key]


class _RowPass(torch.autograd.Function):
    """First axis (rows): one batched GEMM over (band, tile) on overlapping row windows.

    ``x`` (B * S + extra, C) is the padded weights, band ``b``'s block of ``S = n_alloc *
    stride`` rows from ``b * S``, then ``extra`` zero rows; ``k`` (Bk, M, win) with ``M = T *
    G * q``. Output (B * n_alloc, M, C): ``out[b * n_alloc + i] = k[b] @ x[window]`` with the
    window ``x[(b * n_alloc + i) * stride : ... + win]`` (a strided view: no copy). The backward
    pass is the transposed polyphase product, again one batched GEMM on overlapping windows
    of the (zero-padded) output gradient.
    """

    @staticmethod
    def forward(ctx, x, k, n_batch: int, stride: int):  # noqa: D401
        C = x.shape[1]
        win = k.shape[2]
        xw = x.as_strided((n_batch, win, C), (stride * C, C, 1))
        ctx.save_for_backward(x, k)
        ctx.geom = (n_batch, stride)
        return torch.bmm(_per_batch(k, n_batch), xw)

    @staticmethod
    def backward(ctx, dz):
        x, k = ctx.saved_tensors
        n_batch, stride = ctx.geom
        Bk, M, win = k.shape
        C = x.shape[1]
        dx = dk = None
        if ctx.needs_input_grad[0]:
            U = -(-win // stride)  # windows that overlap one block of `stride` rows
            # K'[:, j*M:(j+1)*M] = (taps of block U-1-j)^T: block m gathers dz[m - u] @ k_u
            kt = F.pad(k, (0, U * stride - win)).view(Bk, M, U, stride).flip(2)
            kt = kt.permute(0, 3, 2, 1).reshape(Bk, stride, U * M)
            dzp = F.pad(dz.contiguous().view(-1, C), (0, 0, (U - 1) * M, (U - 1) * M))
            dzw = dzp.as_strided((n_batch + U - 1, U * M, C), (M * C, C, 1))
            dxb = torch.bmm(_per_batch(kt, n_batch, extra=U - 1), dzw)  # (nb+U-1, stride, C)
            dx = dxb.view(-1, C)[: x.shape[0]]  # (nb + U - 1) * stride >= B * S + extra
        if ctx.needs_input_grad[1]:
            xw = x.as_strided((n_batch, C, win), (stride * C, 1, C))
            dk = torch.bmm(dz, xw).view(Bk, -1, M, win).sum(1)
        return dx, dk, None, None


def _per_batch(k: torch.Tensor, n_batch: int, extra: int = 0) -> torch.Tensor:
    """Kernels (Bk, M, N) repeated for ``n_batch`` batch entries (Bk blocks), plus ``extra``."""
    Bk = k.shape[0]
    if Bk == 1:
        return k.expand(n_batch + extra, *k.shape[1:])
    per = n_batch // Bk
    kk = k[:, None].expand(Bk, per, *k.shape[1:]).reshape(n_batch, *k.shape[1:])
    return F.pad(kk, (0, 0, 0, 0, 0, extra)) if extra else kk


def render(weights: torch.Tensor, *, ax_y: Axis, ax_x: Axis,
           sigma_m: float | torch.Tensor, dy_m: torch.Tensor, dx_m: torch.Tensor,
           delta_max_m: float | None = None) -> torch.Tensor:
    """Banded render: weights (B, Ky, Kx) -> images (T, B, Ny, Nx). Same maths as
    :func:`render_dense`.

    ``sigma_m`` is one width or (B,) widths, one per band (no gradient); ``dy_m`` / ``dx_m``
    are (T,) shifts or (T, B), one per observation and band. ``delta_max_m`` bounds
    ``|shift|`` to size the band; without it the band is sized from the shifts themselves,
    which reads them on the host (a device sync on CUDA). Rows first: one batched GEMM
    over (band, row tile) whose windows are overlapping row blocks of the padded weights
    (strided views, no copies), all observations stacked in the kernel; then columns: one
    grouped strided convolution, one kernel per (band, tile, observation). The number of
    operator calls does not depend on the raster size. The only large intermediate is the
    row-rendered ``z`` of about ``T * B * Ny * Kx`` values.
    """
    B, Ky, Kx = weights.shape
    if Ky != ax_y.n_splats or Kx != ax_x.n_splats:
        raise ValueError(f"weights {tuple(weights.shape)} do not match the axes "
                         f"({ax_y.n_splats}, {ax_x.n_splats})")
    dt, dev = weights.dtype, weights.device
    if isinstance(sigma_m, (int, float)):
        s_max = float(sigma_m)
        sig: float | torch.Tensor = s_max
    else:  # (1,) or (B,) widths
        sig = torch.as_tensor(sigma_m, dtype=torch.float64).detach().reshape(-1)
        s_max = float(sig.max())
        sig = sig.to(dev, dt)
    dy = dy_m.to(dt).reshape(dy_m.shape[0], -1)  # (T, 1) or (T, B)
    dx = dx_m.to(dt).reshape(dx_m.shape[0], -1)
    T = dx.shape[0]
    dmy, dmx = (_abs_max(dy), _abs_max(dx)) if delta_max_m is None else (delta_max_m,) * 2
    ty = axis_tiling(ax_y, sigma_m=s_max, delta_max_m=dmy, tile_px=TILE_PIXELS_ROWS)
    tx = axis_tiling(ax_x, sigma_m=s_max, delta_max_m=dmx, tile_px=TILE_PIXELS_COLS)
    ky = tap_weights(ax_y, sigma_m=sig, delta_m=dy, tiling=ty)  # (T, Bk, Gq_y, win_y)
    kx = tap_weights(ax_x, sigma_m=sig, delta_m=dx, tiling=tx)  # (T, Bk, Gq_x, win_x)
    z = _rows(weights, ky, ty, tx)  # (B * n_alloc, T * Gq_y, n_x * win_x)
    out = _columns(z, kx, B=B, T=T)  # (B, n_alloc, T, Gq_y, n_x, Gq_x)
    return _Assemble.apply(out, ty.n, ax_y.n_pix, ax_x.n_pix)


def _abs_max(d: torch.Tensor) -> float:
    return float(d.detach().abs().max()) if d.numel() else 0.0


def _rows(weights: torch.Tensor, ky: torch.Tensor, ty: Tiling, tx: Tiling) -> torch.Tensor:
    """Row pass of :func:`render`: padded weights through the row tile matrices."""
    B = weights.shape[0]
    T, Bk, Gq, win = ky.shape
    x = _Windows.apply(weights, ty, tx)  # (B * S + extra, n_x * win_x)
    k = ky.permute(1, 0, 2, 3).reshape(Bk, T * Gq, win)
    return _RowPass.apply(x, k, B * ty.n_alloc, ty.stride)


def _columns(z: torch.Tensor, kx: torch.Tensor, *, B: int, T: int) -> torch.Tensor:
    """Column pass of :func:`render`: one batched GEMM over (band, row tile, observation).

    ``z`` (B * n_alloc, T * Gq_y, n_x * win_x) holds, per row of the row pass, the column
    windows side by side, so the rows of one (band, tile, observation) are one
    (Gq_y * n_x, win_x) matrix; ``kx`` (T, Bk, Gq_x, win_x). Returns (B, n_alloc, T, Gq_y,
    n_x, Gq_x).
    """
    nb, TGq, C = z.shape
    per = nb // B
    _, Bk, Gqx, win = kx.shape
    zc = z.view(nb * T, (TGq // T) * (C // win), win)
    kt = kx.transpose(2, 3).permute(1, 0, 2, 3)[:, None]  # (Bk, 1, T, win, Gq_x)
    kt = kt.expand(B, per, T, win, Gqx).reshape(nb * T, win, Gqx)
    return torch.bmm(zc, kt).view(B, per, T, TGq // T, C // win, Gqx)


class _Windows(torch.autograd.Function):
    """Weights (B, Ky, Kx) -> the row pass's input (B * S + extra, n_x * win_x).

    Each band is shifted by the band offsets ``c`` (cropped where negative) and cut or
    zero-extended to ``S = n_alloc * stride_y`` rows and ``(n_x - 1) * stride_x + win_x``
    columns; the column windows are laid side by side; ``extra = win_y - stride_y`` zero
    rows follow. The backward pass sums the overlapping windows back (one fold).
    """

    @staticmethod
    def forward(ctx, weights, ty: Tiling, tx: Tiling):  # noqa: D401
        B, Ky, Kx = weights.shape
        S = ty.n_alloc * ty.stride
        need_x = (tx.n - 1) * tx.stride + tx.win
        pads = (tx.c, need_x - Kx - tx.c, ty.c, S - Ky - ty.c)
        w = F.pad(weights, pads)  # (B, S, Kx')
        x = w.new_empty(B * S + max(0, ty.win - ty.stride), tx.n * tx.win)
        x[B * S:].zero_()
        x[: B * S].view(B, S, tx.n, tx.win).copy_(w.unfold(2, tx.win, tx.stride))
        ctx.geom = (B, S, need_x, pads, tx)
        return x

    @staticmethod
    def backward(ctx, dx):
        B, S, need_x, pads, tx = ctx.geom
        U = -(-tx.win // tx.stride)  # windows overlapping one block of stride columns
        d = F.pad(dx[: B * S].view(B, S, tx.n, tx.win), (0, U * tx.stride - tx.win))
        d = d.view(B, S, tx.n, U, tx.stride)
        dw = d.new_zeros(B, S, tx.n + U - 1, tx.stride)
        for u in range(U):  # U (2-3) shifted adds: the fold of the overlapping windows
            dw[:, :, u:u + tx.n] += d[:, :, :, u]
        dw = dw.view(B, S, -1)[..., :need_x]
        return F.pad(dw, tuple(-p for p in pads)), None, None


class _Assemble(torch.autograd.Function):
    """Column-pass output (B, n_alloc, T, Gq_y, n_x, Gq_x) -> images (T, B, Ny, Nx)."""

    @staticmethod
    def forward(ctx, out, n_used: int, ny: int, nx: int):  # noqa: D401
        B, per, T, Gq, n_x, Gqx = out.shape
        ctx.geom = (out.shape, n_used, ny, nx)
        img = out[:, :n_used].permute(2, 0, 1, 3, 4, 5).reshape(T, B, n_used * Gq, -1)
        return img[:, :, :ny, :nx]

    @staticmethod
    def backward(ctx, dimg):
        shape, n_used, ny, nx = ctx.geom
        B, per, T, Gq, n_x, Gqx = shape
        d = F.pad(dimg, (0, n_x * Gqx - nx, 0, n_used * Gq - ny))
        dout = dimg.new_zeros(shape) if per > n_used else dimg.new_empty(shape)
        dout[:, :n_used].permute(2, 0, 1, 3, 4, 5).copy_(d.view(T, B, n_used, Gq, n_x, Gqx))
        return dout, None, None, None
