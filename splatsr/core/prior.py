"""Priors on the splat weights: the smoothed total variation the solver uses by default.

The weights are in noise units (the solver normalises each band by its noise level), so the
smoothing ``eps`` of each prior is in noise units too.
"""

from __future__ import annotations

import torch

TV_EPS = 0.1  # smoothing of the TV, a tenth of the noise level


def smoothed_tv(w: torch.Tensor, eps: float = TV_EPS) -> torch.Tensor:
    """Smoothed isotropic total variation of (B, Ky, Kx), summed over splats and bands.

    ``sum sqrt(gx**2 + gy**2 + eps**2)`` with forward differences; one expression for all
    bands (no loop).
    """
    gx = w[:, :-1, 1:] - w[:, :-1, :-1]
    gy = w[:, 1:, :-1] - w[:, :-1, :-1]
    return torch.sqrt(gx * gx + gy * gy + eps * eps).sum()
