"""Priors on the splat weights: smoothed total variation, per band and vectorial (the
default, `splatsr.core.config.DEFAULT_PRIOR`), and the Huber TV.

All three are edge penalties ``sum phi(|g|)`` of the forward differences ``g = (gx, gy)``
between neighbouring splats. They share one autograd function whose backward pass is
written out (the adjoint of the difference operator applied to ``phi'(|g|) g / |g|``): a
fixed handful of tensor operations per step, whatever the scene size.

The weights are in noise units (the solver normalises each band by its noise level), so the
smoothing ``eps`` and the Huber ``delta`` are in noise units too.
"""

from __future__ import annotations

import math

import torch

from splatsr.core.scalars import scalar
from splatsr.errors import ConfigError

TV_EPS = 0.1  # smoothing of the TV, a tenth of the noise level
PRIORS = ("tv", "huber", "vtv")
HUBER_DELTA = 1.0  # Huber TV: quadratic below one noise unit of splat-to-splat difference


def _edges(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views (B, Ky-1, Kx-1) of contiguous ``w`` (B, Ky, Kx): the splat, its right and its
    lower neighbour."""
    B, Ky, Kx = w.shape
    size, st = (B, Ky - 1, Kx - 1), w.stride()
    off = w.storage_offset()
    return (w.as_strided(size, st, off), w.as_strided(size, st, off + 1),
            w.as_strided(size, st, off + Kx))


def _penalty(gx: torch.Tensor, gy: torch.Tensor, kind: str
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of phi, phi'(|g|) / |g|) for differences (B, Ky-1, Kx-1); see :func:`prior_penalty`."""
    m2 = torch.addcmul(gx * gx, gy, gy)  # |g|^2 per band, (B, Ky-1, Kx-1)
    if kind == "tv":
        mag = torch.sqrt(m2 + scalar(TV_EPS ** 2, like=m2))
        return mag.sum(), mag.reciprocal()
    if kind == "vtv":
        B = gx.shape[0]
        mag = torch.sqrt(m2.sum(0) + scalar(B * TV_EPS ** 2, like=m2))  # (Ky-1, Kx-1)
        return math.sqrt(B) * mag.sum(), (mag.reciprocal() * scalar(math.sqrt(B), like=m2))
    if kind == "huber":
        m = torch.sqrt(m2)
        d = scalar(HUBER_DELTA, like=m2)
        val = torch.where(m < d, m2 * scalar(0.5 / HUBER_DELTA, like=m2),
                          m - scalar(0.5 * HUBER_DELTA, like=m2))
        return val.sum(), torch.maximum(m, d).reciprocal()
    raise ConfigError(f"prior must be one of {', '.join(PRIORS)}; got {kind!r}")


class _EdgePenalty(torch.autograd.Function):
    """``sum phi(|g|)`` of weights (B, Ky, Kx); backward = D^T (phi'(|g|) g / |g|)."""

    @staticmethod
    def forward(ctx, w, kind: str):  # noqa: D401
        w = w.contiguous()
        w00, w01, w10 = _edges(w)
        gx, gy = w01 - w00, w10 - w00  # (B, Ky-1, Kx-1)
        value, factor = _penalty(gx, gy, kind)
        ctx.save_for_backward(gx * factor, gy * factor)
        ctx.shape = w.shape
        return value

    @staticmethod
    def backward(ctx, grad):
        px, py = ctx.saved_tensors  # d value / d (gx, gy)
        dw = px.new_zeros(ctx.shape)
        d00, d01, d10 = _edges(dw)
        d01.add_(px)
        d10.add_(py)
        d00.sub_(px).sub_(py)
        return dw.mul_(grad), None


def smoothed_tv(w: torch.Tensor, eps: float = TV_EPS) -> torch.Tensor:
    """Smoothed isotropic total variation of (B, Ky, Kx), summed over splats and bands:
    ``sum sqrt(gx**2 + gy**2 + eps**2)`` with forward differences (the reference form of
    ``prior_penalty(w, "tv")``, which uses ``eps = TV_EPS``)."""
    gx = w[:, :-1, 1:] - w[:, :-1, :-1]
    gy = w[:, 1:, :-1] - w[:, :-1, :-1]
    return torch.sqrt(gx * gx + gy * gy + eps * eps).sum()


def prior_penalty(w: torch.Tensor, kind: str) -> torch.Tensor:
    """The prior ``kind`` of weights (B, Ky, Kx) in noise units, a scalar.

    ``"tv"``: smoothed TV, ``sum sqrt(|g|**2 + eps**2)`` per band. ``"huber"``: Huber TV,
    ``|g|**2 / (2 delta)`` below ``delta``, ``|g| - delta / 2`` above, so undetermined detail
    falls back to smooth ramps rather than flat plateaus. ``"vtv"``: vectorial (colour) TV,
    one gradient magnitude over all bands per splat, ``sqrt(B) sum sqrt(sum_b |g_b|**2 + B
    eps**2)``, which couples the bands' edges (equal gradients cost what the TV charges).

    Raises
    ------
    ConfigError
        If ``kind`` is not one of :data:`PRIORS`.
    """
    if kind not in PRIORS:
        raise ConfigError(f"prior must be one of {', '.join(PRIORS)}; got {kind!r}")
    return _EdgePenalty.apply(w, kind)
