"""The banded fast path of the renderer: tiles, tap matrices and the passes, forward and back.

Along one axis, pixel ``j = q*m + phi`` sees splat ``k = m*P + l - c`` (``pixel / spacing =
P / q``) with a weight that depends only on the phase ``phi``, the tap ``l`` and the shift.
A tile of ``G`` periods (``G*q`` pixels) therefore reads one window of ``(G-1)*P + L``
splats through one small tap matrix wherever the tile is. :func:`splatsr.core.render.render`
chains the pieces here::

    weights (B, Ky, Kx)
      -> Windows   column windows side by side    (B * S + extra, n_x * win_x)
      -> RowPass   one bmm over (band, row tile)  (B * n_alloc_y, T * Gq_y, n_x * win_x)
      -> ColPass   one bmm over (.., obs)         (B * n_alloc_y * T, Gq_y * n_x, Gq_x)
      -> Assemble  the image                      (T, B, Ny, Nx)

with the tap matrices of both axes from :class:`Taps`. Every piece is an autograd function
with its backward pass written out, each a fixed handful of tensor operations: the number
of operator calls (GPU kernel launches) of a render does not depend on the raster size.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from splatsr.core.render import Axis

TAIL_SIGMAS = 5.0  # band half-width in sigmas; the neglected Gaussian mass is < 3e-7
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
    (``stride = G * P``); ``c`` is the band's offset (splat ``m*P + l - c`` at tap ``l``).
    Each band's padded splat row holds ``n_alloc >= n`` tiles (``n_alloc * stride`` splats)
    so that every used window lies inside its band's block.
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

    @property
    def overlap(self) -> int:  # windows that share one block of `stride` splats
        return -(-self.win // self.stride)


def axis_tiling(axis: Axis, *, sigma_m: float, delta_max_m: float, tile_px: int) -> Tiling:
    """The tiling of ``axis`` for a band of width
    ``sigma_m`` and shifts up to ``delta_max_m``."""
    d_max = math.ceil(delta_max_m / axis.spacing_m + 1e-9) * axis.spacing_m  # fewer distinct L
    ratio: Fraction = axis.ratio()
    P, q = ratio.numerator, ratio.denominator
    s, p = axis.spacing_m, axis.pixel_m
    base = axis.pix_origin_m - axis.splat_origin_m
    reach = TAIL_SIGMAS * sigma_m
    lo = math.floor((base - d_max - reach) / s)  # smallest useful (l - c)
    hi = math.ceil((base + d_max + q * p + reach) / s)  # largest useful (l - c)
    G = max(1, round(tile_px / q))
    periods = -(-axis.n_pix // q)  # periods of output (ceil)
    return Tiling(P, q, -lo, hi - lo + 1, G, -(-periods // G))


# ----------------------------------------------------------------------------- tap matrices

@functools.lru_cache(maxsize=64)
def tap_geometry(axis: Axis, tl: Tiling, sigmas: tuple[float, ...], dtype: torch.dtype,
                 device: torch.device, *, transpose: bool) -> tuple[torch.Tensor, ...]:
    """Constants of one axis's tap matrices (cached: built once per geometry).

    Returns ``(x0, x1, inside, slope)``: ``x0`` and ``x1`` (Bz, 1, Gq, win) are a tap's
    pixel edges relative to the splat centre in units of ``sigma * sqrt(2)`` (one row per
    width in ``sigmas``), ``inside`` (Gq, win) the band mask times ``0.5 * spacing / pixel``
    and ``slope = -inside * 2 / sqrt(pi)``. ``transpose`` swaps the last two axes.
    """
    f64 = torch.float64
    g = torch.arange(tl.G, dtype=f64)[:, None, None]
    phi = torch.arange(tl.q, dtype=f64)[None, :, None]
    tap = torch.arange(tl.win, dtype=f64)[None, None, :] - tl.P * g
    base = axis.pix_origin_m - axis.splat_origin_m
    x0 = (base + phi * axis.pixel_m + (tl.c - tap) * axis.spacing_m).reshape(-1, tl.win)
    inside = ((tap >= 0) & (tap < tl.L)).expand(tl.G, tl.q, tl.win).reshape(-1, tl.win)
    inside = inside.to(f64) * (0.5 * axis.spacing_m / axis.pixel_m)  # (Gq, win)
    z = 1.0 / (math.sqrt(2.0) * torch.tensor(sigmas, dtype=f64))[:, None, None, None]
    out = (x0 * z, (x0 + axis.pixel_m) * z, inside, inside * (-2.0 / math.sqrt(math.pi)))
    if transpose:
        out = tuple(t.transpose(-1, -2) for t in out)
    return tuple(t.contiguous().to(device, dtype) for t in out)


class Taps(torch.autograd.Function):
    """Tap matrices of both axes from the shifts.

    ``shift`` (T, Bs, 2) holds per observation (and band) the displacement along the
    columns and *against* the rows (north); ``zsign`` (Bz, 2) is ``(z, -z)`` with ``z = 1 /
    (sigma sqrt 2)``, so ``u = shift * zsign`` is each axis's displacement in units of
    ``sigma sqrt 2``. A tap is ``inside * (erf(x1 - u) - erf(x0 - u))``; returns the row
    axis's (Bk, T, Gq_y, win_y) and the column axis's, transposed, (Bk, T, win_x, Gq_x).
    The backward pass is the Gaussian the erfs differentiate to, summed to ``shift``.
    """

    @staticmethod
    def forward(ctx, shift, zsign, geo_y, geo_x):  # noqa: D401
        u = shift * zsign  # (T, Bk, 2)
        T, Bk, _ = u.shape
        out, saved = [], []
        for ax, geo in ((1, geo_y), (0, geo_x)):
            x0, x1, inside, _ = geo
            ua = u.as_strided((Bk, T, 1, 1), (2, 2 * Bk, 0, 0), ax)  # (Bk, T, 1, 1)
            a, b = x0 - ua, x1 - ua  # (Bk, T, Gq, win) or transposed
            out.append(((torch.erf(b) - torch.erf(a)) * inside).contiguous())
            saved += [a, b]
        ctx.save_for_backward(zsign, *saved)
        ctx.geo = (geo_y[3], geo_x[3])
        ctx.shape = shift.shape
        return tuple(out)

    @staticmethod
    def backward(ctx, gy, gx):
        zsign, ay, by, ax, bx = ctx.saved_tensors
        du = []
        for g, a, b, slope in ((gx, ax, bx, ctx.geo[1]), (gy, ay, by, ctx.geo[0])):
            e = torch.exp(torch.mul(b, b).neg_()).sub_(torch.exp(torch.mul(a, a).neg_()))
            du.append((e.mul_(g).mul_(slope)).sum((2, 3)))  # (Bk, T)
        d = torch.stack(du, 2).transpose(0, 1) * zsign  # (T, Bk, 2)
        if d.shape[1] != ctx.shape[1]:
            d = d.sum(1, keepdim=True)
        return d, None, None, None


# ----------------------------------------------------------------------------- the passes

def _add_windows(dst: torch.Tensor, src: torch.Tensor, *, n: int, win: int, stride: int,
                 lead: tuple[int, ...], inner: int) -> None:
    """``dst += fold(src)``: ``src`` holds ``n`` windows of ``win`` rows side by side
    ((*lead, n, win, inner) contiguous), window ``i`` read from row ``i * stride`` of
    ``dst`` ((*lead, >= (n - 1) * stride + win, inner) contiguous). One add per block of
    ``stride`` rows of a window (``ceil(win / stride)`` adds)."""
    d_lead = [dst.stride(i) for i in range(len(lead))]
    s_lead = [src.stride(i) for i in range(len(lead))]
    for u in range(-(-win // stride)):
        rows = min(stride, win - u * stride)
        shape = (*lead, n, rows, inner)
        dst.as_strided(shape, (*d_lead, stride * inner, inner, 1),
                       dst.storage_offset() + u * stride * inner).add_(
            src.as_strided(shape, (*s_lead, win * inner, inner, 1),
                           src.storage_offset() + u * stride * inner))


class Windows(torch.autograd.Function):
    """Weights (B, Ky, Kx) -> the row pass's input (B * S + extra, n_x * win_x).

    Each band is shifted by the band offsets ``c`` (cropped where negative) into a zero
    block of ``S = n_alloc * stride_y`` rows; its column windows are laid side by side;
    ``extra = win_y - stride_y`` zero rows follow. Backward: the overlapping column windows
    are summed back (one add per overlap), then the weights' part is read out.
    """

    @staticmethod
    def forward(ctx, weights, ty: Tiling, tx: Tiling):  # noqa: D401
        B, Ky, Kx = weights.shape
        S, Wp = ty.n_alloc * ty.stride, (tx.n + tx.overlap - 1) * tx.stride
        fit = _placement(Ky, Kx, ty.c, tx.c, S, Wp)
        wp = weights.new_zeros(B, S, Wp)
        _region(wp, fit, dst=True).copy_(_region(weights, fit, dst=False))
        C = tx.n * tx.win
        x = weights.new_empty(B * S + max(0, ty.win - ty.stride), C)
        x[B * S:].zero_()
        x.as_strided((B, S, tx.n, tx.win), (S * C, C, tx.win, 1)).copy_(
            wp.as_strided((B, S, tx.n, tx.win), (S * Wp, Wp, tx.stride, 1)))
        ctx.geom = (weights.shape, S, Wp, fit, tx)
        return x

    @staticmethod
    def backward(ctx, dx):
        (B, Ky, Kx), S, Wp, fit, tx = ctx.geom
        dwp = dx.new_zeros(B, S, Wp)
        _add_windows(dwp.view(B * S, Wp, 1), dx.contiguous().view(-1, tx.n * tx.win, 1),
                     n=tx.n, win=tx.win, stride=tx.stride, lead=(B * S,), inner=1)
        if fit[4]:  # the weights lie inside the block: their gradient is a view
            return _region(dwp, fit, dst=True), None, None
        dw = dx.new_zeros(B, Ky, Kx)
        _region(dw, fit, dst=False).copy_(_region(dwp, fit, dst=True))
        return dw, None, None


def _placement(Ky: int, Kx: int, cy: int, cx: int, S: int, Wp: int) -> tuple:
    """Where weights (Ky, Kx) land in a (S, Wp) block at offset (cy, cx): (rows, cols, dst
    offset, src offset, whole) with ``whole`` true when nothing is cropped."""
    r0, r1 = max(cy, 0), min(cy + Ky, S)
    c0, c1 = max(cx, 0), min(cx + Kx, Wp)
    rows, cols = max(r1 - r0, 0), max(c1 - c0, 0)
    whole = rows == Ky and cols == Kx
    return rows, cols, (r0, c0), (r0 - cy, c0 - cx), whole


def _region(t: torch.Tensor, fit: tuple, *, dst: bool) -> torch.Tensor:
    """The (B, rows, cols) part of ``t`` (B, R, C) that :func:`_placement` describes."""
    rows, cols, d_at, s_at, _ = fit
    r, c = d_at if dst else s_at
    st = t.stride()
    return t.as_strided((t.shape[0], rows, cols), st,
                        t.storage_offset() + r * st[1] + c * st[2])


class RowPass(torch.autograd.Function):
    """First axis (rows): one batched GEMM over (band, row tile) on overlapping row windows.

    ``x`` (B * S + extra, C) is the padded weights (band ``b``'s block of ``S = n_alloc *
    stride`` rows from ``b * S``); ``k`` (Bk, M, win) with ``M = T * Gq``. Output
    (n_batch, M, C): ``out[i] = k[i // per] @ x[i * stride : i * stride + win]`` (a strided
    view: no copy). Backward: ``k^T @ dz`` per window, folded back onto the rows.
    """

    @staticmethod
    def forward(ctx, x, k, n_batch: int, stride: int):  # noqa: D401
        C = x.shape[1]
        win = k.shape[2]
        xw = x.as_strided((n_batch, win, C), (stride * C, C, 1))
        kb = _per_batch(k, n_batch)
        ctx.save_for_backward(x, kb)
        ctx.geom = (n_batch, stride, k.shape[0])
        return torch.bmm(kb, xw)

    @staticmethod
    def backward(ctx, dz):
        x, kb = ctx.saved_tensors
        n_batch, stride, Bk = ctx.geom
        win, C = kb.shape[2], x.shape[1]
        dx = dk = None
        dz = dz.contiguous()
        if ctx.needs_input_grad[0]:
            dxw = torch.bmm(kb.transpose(1, 2), dz)  # (n_batch, win, C)
            dx = x.new_zeros(x.shape)
            _add_windows(dx.view(1, -1, C), dxw.view(1, n_batch, win, C), n=n_batch, win=win,
                         stride=stride, lead=(1,), inner=C)
        if ctx.needs_input_grad[1]:
            xw = x.as_strided((n_batch, C, win), (stride * C, 1, C))
            dkb = torch.bmm(dz, xw)  # (n_batch, M, win)
            dk = dkb.view(Bk, n_batch // Bk, *dkb.shape[1:]).sum(1)
        return dx, dk, None, None


def _per_batch(k: torch.Tensor, n_batch: int) -> torch.Tensor:
    """Kernels (Bk, M, N) repeated for ``n_batch`` batch entries in Bk blocks."""
    Bk = k.shape[0]
    if Bk == 1:
        return k.expand(n_batch, *k.shape[1:])
    return k[:, None].expand(Bk, n_batch // Bk, *k.shape[1:]).reshape(n_batch, *k.shape[1:])


class ColPass(torch.autograd.Function):
    """Second axis (columns): one batched GEMM over (band, row tile, observation).

    ``z`` (n_batch, T * Gq_y, n_x * win_x) holds, per row, the column windows side by side,
    so the rows of one (band, tile, observation) are one (Gq_y * n_x, win_x) matrix; ``k``
    (Bk, T, win_x, Gq_x). Returns (n_batch * T, Gq_y * n_x, Gq_x).
    """

    @staticmethod
    def forward(ctx, z, k, T: int):  # noqa: D401
        nb, TGq, C = z.shape
        Bk, _, win, Gqx = k.shape
        zc = z.view(nb * T, (TGq // T) * (C // win), win)
        per = nb // Bk
        kb = k.as_strided((Bk, per, T, win, Gqx), (T * win * Gqx, 0, win * Gqx, Gqx, 1),
                          k.storage_offset())
        kb = kb.reshape(nb * T, win, Gqx)  # one copy of the (small) kernels
        ctx.save_for_backward(zc, kb)
        ctx.geom = (z.shape, k.shape)
        return torch.bmm(zc, kb)

    @staticmethod
    def backward(ctx, dout):
        zc, kb = ctx.saved_tensors
        zshape, kshape = ctx.geom
        dz = dk = None
        if ctx.needs_input_grad[0]:
            dz = torch.bmm(dout, kb.transpose(1, 2)).view(zshape)
        if ctx.needs_input_grad[1]:
            Bk = kshape[0]
            dkb = torch.bmm(zc.transpose(1, 2), dout)  # (nb * T, win, Gq_x)
            dk = dkb.view(Bk, -1, *kshape[1:]).sum(1)
        return dz, dk, None


class Assemble(torch.autograd.Function):
    """Column-pass output (B, n_alloc, T, Gq_y, n_x, Gq_x) -> images (T, B, Ny, Nx)."""

    @staticmethod
    def forward(ctx, out, shape6: tuple, n_used: int, ny: int, nx: int):  # noqa: D401
        B, per, T, Gq, n_x, Gqx = shape6
        full = out.new_empty(T, B, n_used * Gq, n_x * Gqx)
        full.view(T, B, n_used, Gq, n_x, Gqx).copy_(_image_order(out, shape6, n_used))
        ctx.geom = (out.shape, shape6, n_used)
        return full[:, :, :ny, :nx] if (ny, nx) != full.shape[2:] else full

    @staticmethod
    def backward(ctx, dimg):
        oshape, shape6, n_used = ctx.geom
        B, per, T, Gq, n_x, Gqx = shape6
        dfull = dimg
        if dimg.shape[2:] != (n_used * Gq, n_x * Gqx):
            dfull = dimg.new_zeros(T, B, n_used * Gq, n_x * Gqx)
            dfull[:, :, :dimg.shape[2], :dimg.shape[3]].copy_(dimg)
        dout = dimg.new_zeros(oshape) if per > n_used else dimg.new_empty(oshape)
        _image_order(dout, shape6, n_used).copy_(dfull.reshape(T, B, n_used, Gq, n_x, Gqx))
        return dout, None, None, None, None


def _image_order(out: torch.Tensor, shape6: tuple, n_used: int) -> torch.Tensor:
    """A (T, B, n_used, Gq_y, n_x, Gq_x) view of the used tiles of contiguous ``out``."""
    B, per, T, Gq, n_x, Gqx = shape6
    st = [per * T * Gq * n_x * Gqx, T * Gq * n_x * Gqx, Gq * n_x * Gqx, n_x * Gqx, Gqx, 1]
    return out.as_strided((T, B, n_used, Gq, n_x, Gqx),
                          (st[2], st[0], st[1], st[3], st[4], st[5]), out.storage_offset())
