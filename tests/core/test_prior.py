"""Priors on the splat weights."""

from __future__ import annotations

import math

import torch

from splatsr.core.prior import smoothed_tv


def test_smoothed_tv_of_a_ramp_and_a_constant():
    """A constant field costs eps per difference pair; a unit ramp in x costs sqrt(1 + eps^2)."""
    eps = 0.1
    const = torch.full((2, 5, 6), 3.0)
    pairs = 2 * 4 * 5  # bands x (rows - 1) x (cols - 1)
    assert math.isclose(float(smoothed_tv(const, eps)), pairs * eps, rel_tol=1e-6)
    ramp = torch.arange(6.0).expand(2, 5, 6)
    assert math.isclose(float(smoothed_tv(ramp, eps)), pairs * math.sqrt(1 + eps * eps),
                        rel_tol=1e-6)
