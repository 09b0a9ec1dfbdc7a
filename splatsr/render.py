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
* :func:`axis_apply` / :func:`render` -- the fast path. ``A`` is banded (a pixel only sees
  splats within a few sigma) and, when ``pixel_m / spacing_m = P / q`` is rational, periodic:
  pixel ``j = q*m + phi`` sees splat ``k = m*P + l - c`` with a weight that depends only on
  ``(t, phi, l)``. So the product is one strided ``conv1d`` with ``q`` output channels per
  observation (polyphase), and costs ``pixels x band`` instead of ``pixels x splats``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from .errors import ConfigError

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
    """Polyphase band weights of shape (T * q, 1, L): row ``t*q + phi``, tap ``l``."""
    dt, dev = delta_m.dtype, delta_m.device
    phi = torch.arange(q, dtype=dt, device=dev)
    l = torch.arange(L, dtype=dt, device=dev)
    base = axis.pix_origin_m - axis.splat_origin_m
    x = (base + phi[None, :, None] * axis.pixel_m + (c - l[None, None, :]) * axis.spacing_m
         - delta_m[:, None, None])  # (T, q, L)
    w = box_weight(x, sigma_m=sigma_m, pixel_m=axis.pixel_m, spacing_m=axis.spacing_m)
    return w.reshape(-1, 1, L)


def axis_apply(x: torch.Tensor, axis: Axis, *, sigma_m: float,
               delta_m: torch.Tensor, shared: bool) -> torch.Tensor:
    """Apply the per-observation axis operator along the last dimension (banded path).

    Parameters
    ----------
    x
        (R, K) if ``shared`` (the same input for every observation), else (R, T, K).
    axis
        Geometry; ``K == axis.n_splats``.
    sigma_m
        Width of the Gaussian (splat and PSF combined) in metres.
    delta_m
        (T,) displacement of the content per observation, in metres.
    shared
        Whether ``x`` is shared by all observations.

    Returns
    -------
    torch.Tensor
        (R, T, n_pix).
    """
    T = delta_m.shape[0]
    d_max = float(delta_m.detach().abs().max()) if T else 0.0
    d_max = math.ceil(d_max / axis.spacing_m + 1e-9) * axis.spacing_m  # fewer distinct L
    P, q, c, L = _band(axis, sigma_m, d_max)
    ker = axis_kernels(axis, sigma_m=sigma_m, delta_m=delta_m, c=c, q=q, L=L)  # (T*q, 1, L)
    M = -(-axis.n_pix // q)  # output samples per phase
    need = (M - 1) * P + L  # padded input length the conv reads
    K = axis.n_splats
    left = c
    right = max(0, need - (K + c))
    if shared:
        inp = F.pad(x[:, None, :], (left, right))[..., : max(need, 1)]  # (R, 1, K')
        out = F.conv1d(inp, ker, stride=P)  # (R, T*q, M)
    else:
        inp = F.pad(x, (left, right))[..., : max(need, 1)]  # (R, T, K')
        out = F.conv1d(inp, ker, stride=P, groups=T)  # (R, T*q, M)
    R = out.shape[0]
    out = out.reshape(R, T, q, M).transpose(2, 3).reshape(R, T, M * q)
    return out[..., : axis.n_pix]


def render(weights: torch.Tensor, *, ax_y: Axis, ax_x: Axis, sigma_m: float,
           dy_m: torch.Tensor, dx_m: torch.Tensor) -> torch.Tensor:
    """Banded render: weights (B, Ky, Kx) -> images (T, B, Ny, Nx). Same maths as
    :func:`render_dense`."""
    B, Ky, Kx = weights.shape
    T = dx_m.shape[0]
    z = axis_apply(weights.reshape(B * Ky, Kx), ax_x, sigma_m=sigma_m, delta_m=dx_m,
                   shared=True)  # (B*Ky, T, Nx)
    Nx = z.shape[-1]
    z = z.reshape(B, Ky, T, Nx).permute(0, 3, 2, 1).reshape(B * Nx, T, Ky)
    y = axis_apply(z, ax_y, sigma_m=sigma_m, delta_m=dy_m, shared=False)  # (B*Nx, T, Ny)
    Ny = y.shape[-1]
    return y.reshape(B, Nx, T, Ny).permute(2, 0, 3, 1)  # (T, B, Ny, Nx)
