"""Priors on the splat weights: values against closed forms, gradients against autograd of
plain reference expressions."""

from __future__ import annotations

import math

import pytest
import torch

from splatsr.core.prior import HUBER_DELTA, TV_EPS, prior_penalty, smoothed_tv
from splatsr.errors import ConfigError


def _differences(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return w[:, :-1, 1:] - w[:, :-1, :-1], w[:, 1:, :-1] - w[:, :-1, :-1]


def reference(w: torch.Tensor, kind: str) -> torch.Tensor:
    """The priors written out with slices (autograd differentiates them)."""
    gx, gy = _differences(w)
    if kind == "tv":
        return smoothed_tv(w, TV_EPS)
    if kind == "huber":
        g = torch.sqrt(gx * gx + gy * gy + 1e-30)
        return torch.where(g < HUBER_DELTA, 0.5 * g * g / HUBER_DELTA,
                           g - 0.5 * HUBER_DELTA).sum()
    B = w.shape[0]
    return math.sqrt(B) * torch.sqrt((gx * gx + gy * gy).sum(0) + B * TV_EPS ** 2).sum()


def test_smoothed_tv_of_a_ramp_and_a_constant():
    """A constant field costs eps per difference pair; a unit ramp in x costs sqrt(1 + eps^2)."""
    const = torch.full((2, 5, 6), 3.0)
    pairs = 2 * 4 * 5  # bands x (rows - 1) x (cols - 1)
    assert math.isclose(float(prior_penalty(const, "tv")), pairs * TV_EPS, rel_tol=1e-6)
    ramp = torch.arange(6.0).expand(2, 5, 6)
    assert math.isclose(float(prior_penalty(ramp, "tv")), pairs * math.sqrt(1 + TV_EPS ** 2),
                        rel_tol=1e-6)


def test_huber_and_vectorial_tv():
    """Huber: quadratic below delta (a ramp of 0.5 per splat costs 0.125 per pair), linear
    above; vectorial TV equals TV for one band and couples bands' gradients."""
    assert HUBER_DELTA == 1.0
    ramp = 0.5 * torch.arange(6.0).expand(1, 5, 6)
    assert math.isclose(float(prior_penalty(ramp, "huber")), 20 * 0.125, rel_tol=1e-5)
    steep = 3.0 * torch.arange(6.0).expand(1, 5, 6)
    assert math.isclose(float(prior_penalty(steep, "huber")), 20 * 2.5, rel_tol=1e-5)
    w = torch.randn(1, 7, 8)
    assert math.isclose(float(prior_penalty(w, "vtv")), float(prior_penalty(w, "tv")),
                        rel_tol=1e-5)
    same = torch.cat([w, w])  # equal gradients in two bands: the per-band TV's cost
    assert math.isclose(float(prior_penalty(same, "vtv")), float(prior_penalty(same, "tv")),
                        rel_tol=1e-5)
    # the default prior's point: two bands' unit edges one splat apart cost more than the
    # same edges together, which the per-band TV charges alike. On the 5 x 7 difference
    # pairs: together, 5 pairs of sqrt(2) sqrt(2 + 2 eps^2) and 30 flat ones of 2 eps; apart,
    # 10 pairs of sqrt(2) sqrt(1 + 2 eps^2) and 25 flat ones
    step = (torch.arange(8.0) >= 4).float().expand(1, 6, 8).contiguous()
    moved = (torch.arange(8.0) >= 5).float().expand(1, 6, 8).contiguous()
    together, apart = torch.cat([step, step]), torch.cat([step, moved])
    tv = [float(prior_penalty(x, "tv")) for x in (together, apart)]
    vtv = [float(prior_penalty(x, "vtv")) for x in (together, apart)]
    e2, r2 = TV_EPS ** 2, math.sqrt(2)
    assert math.isclose(tv[0], tv[1], rel_tol=1e-6)
    assert math.isclose(vtv[0], 5 * r2 * math.sqrt(2 + 2 * e2) + 60 * TV_EPS, rel_tol=1e-5)
    assert math.isclose(vtv[1], 10 * r2 * math.sqrt(1 + 2 * e2) + 50 * TV_EPS, rel_tol=1e-5)
    with pytest.raises(ConfigError, match="prior must be one of"):
        prior_penalty(w, "tgv")


@pytest.mark.parametrize("kind", ["tv", "huber", "vtv"])
def test_gradient_matches_the_reference(kind):
    """The hand-written backward pass equals autograd of the sliced expressions (float64),
    on a non-contiguous input too."""
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(3, 9, 11, generator=gen, dtype=torch.float64) * 0.8
    for w in (base, base.transpose(1, 2)):
        a = w.clone().requires_grad_()
        b = w.clone().requires_grad_()
        (2.5 * prior_penalty(a, kind)).backward()
        (2.5 * reference(b, kind)).backward()
        assert torch.allclose(prior_penalty(w, kind), reference(w, kind), rtol=1e-12)
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)
