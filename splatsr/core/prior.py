"""Priors on the splat weights: the smoothed total variation the solver uses by default.

The weights are in noise units (the solver normalises each band by its noise level), so the
smoothing ``eps`` of each prior is in noise units too.
"""

from __future__ import annotations

import math

import torch

from splatsr.errors import ConfigError

TV_EPS = 0.1  # smoothing of the TV, a tenth of the noise level


def smoothed_tv(w: torch.Tensor, eps: float = TV_EPS) -> torch.Tensor:
    """Smoothed isotropic total variation of (B, Ky, Kx), summed over splats and bands.

    ``sum sqrt(gx**2 + gy**2 + eps**2)`` with forward differences; one expression for all
    bands (no loop).
    """
    gx = w[:, :-1, 1:] - w[:, :-1, :-1]
    gy = w[:, 1:, :-1] - w[:, :-1, :-1]
    return torch.sqrt(gx * gx + gy * gy + eps * eps).sum()


PRIORS = ("tv", "huber", "vtv")
HUBER_DELTA = 1.0  # Huber TV: quadratic below one noise unit of splat-to-splat difference


def huber_tv(w: torch.Tensor, delta: float = HUBER_DELTA) -> torch.Tensor:
    """Huber total variation of (B, Ky, Kx): ``|g|**2 / (2 delta)`` below ``delta``, ``|g| -
    delta / 2`` above (``|g|`` the gradient magnitude). Small differences cost quadratically,
    so undetermined detail falls back to smooth ramps rather than flat plateaus."""
    gx = w[:, :-1, 1:] - w[:, :-1, :-1]
    gy = w[:, 1:, :-1] - w[:, :-1, :-1]
    g = torch.sqrt(gx * gx + gy * gy + 1e-12)
    return torch.where(g < delta, 0.5 * g * g / delta, g - 0.5 * delta).sum()


def vectorial_tv(w: torch.Tensor, eps: float = TV_EPS) -> torch.Tensor:
    """Vectorial (colour) TV of (B, Ky, Kx): one gradient magnitude over all bands per
    splat, ``sum sqrt(sum_b gx_b**2 + gy_b**2 + eps**2)``, times ``sqrt(B)`` so that bands
    with equal gradients cost what the per-band TV charges. Couples the bands' edges."""
    gx = w[:, :-1, 1:] - w[:, :-1, :-1]
    gy = w[:, 1:, :-1] - w[:, :-1, :-1]
    B = w.shape[0]
    return math.sqrt(B) * torch.sqrt((gx * gx + gy * gy).sum(0) + B * eps * eps).sum()


def prior_penalty(w: torch.Tensor, kind: str) -> torch.Tensor:
    """The prior ``kind`` (one of :data:`PRIORS`) of weights (B, Ky, Kx) in noise units."""
    if kind == "tv":
        return smoothed_tv(w)
    if kind == "huber":
        return huber_tv(w)
    if kind == "vtv":
        return vectorial_tv(w)
    raise ConfigError(f"prior must be one of {', '.join(PRIORS)}; got {kind!r}")
