"""Priors on the splat weights."""

from __future__ import annotations

import math

import pytest
import torch

from splatsr.core.prior import huber_tv, prior_penalty, smoothed_tv, vectorial_tv
from splatsr.errors import ConfigError


def test_smoothed_tv_of_a_ramp_and_a_constant():
    """A constant field costs eps per difference pair; a unit ramp in x costs sqrt(1 + eps^2)."""
    eps = 0.1
    const = torch.full((2, 5, 6), 3.0)
    pairs = 2 * 4 * 5  # bands x (rows - 1) x (cols - 1)
    assert math.isclose(float(smoothed_tv(const, eps)), pairs * eps, rel_tol=1e-6)
    ramp = torch.arange(6.0).expand(2, 5, 6)
    assert math.isclose(float(smoothed_tv(ramp, eps)), pairs * math.sqrt(1 + eps * eps),
                        rel_tol=1e-6)


def test_huber_and_vectorial_tv():
    """Huber: quadratic below delta (a ramp of 0.5 per splat costs 0.125 per pair), linear
    above; vectorial TV equals TV for one band and couples bands' gradients."""
    ramp = 0.5 * torch.arange(6.0).expand(1, 5, 6)
    assert math.isclose(float(huber_tv(ramp, 1.0)), 20 * 0.125, rel_tol=1e-5)
    steep = 3.0 * torch.arange(6.0).expand(1, 5, 6)
    assert math.isclose(float(huber_tv(steep, 1.0)), 20 * 2.5, rel_tol=1e-5)
    w = torch.randn(1, 7, 8)
    assert math.isclose(float(vectorial_tv(w)), float(smoothed_tv(w)), rel_tol=1e-5)
    same = torch.cat([w, w])  # equal gradients in two bands: the per-band TV's cost
    assert math.isclose(float(vectorial_tv(same)), float(smoothed_tv(same)), rel_tol=1e-5)
    with pytest.raises(ConfigError, match="prior must be one of"):
        prior_penalty(w, "tgv")
