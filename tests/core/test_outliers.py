"""The short-stack rule for bright outliers (splatsr.core.outliers)."""

from __future__ import annotations

import numpy as np

from splatsr.core.outliers import FLAT_RATIO, short_stack_outliers, texture


def scene(rng, T=2, B=3, n=24):
    """(T, B, n, n) textured dates in noise units (texture std 10, noise 1)."""
    base = 10.0 * rng.standard_normal((B, n, n))
    return base[None] + rng.standard_normal((T, B, n, n))


def test_brighter_and_flatter_is_the_cloud_whichever_date_it_is():
    rng = np.random.default_rng(0)
    for cloudy in (0, 1):
        d = scene(rng)
        d[cloudy, :, :, 8:] = 0.2 * d[cloudy, :, :, 8:] + 200.0  # 2/3 of the scene
        v = short_stack_outliers(d)
        assert v.outlier.tolist() == [cloudy == 0, cloudy == 1] and v.undecided is None
        assert v.weights().tolist() == [float(cloudy != 0), float(cloudy != 1)]


def test_brighter_not_flatter_is_undecided_and_clear_stacks_are_left_alone():
    rng = np.random.default_rng(1)
    d = scene(rng)
    d[1] += 200.0  # brighter everywhere, same texture: change of the ground or a cloud?
    v = short_stack_outliers(d)
    assert not v.outlier.any() and v.undecided == (1, 0)
    assert "cannot tell" in v.lines(["a", "b"])[0]
    clear = short_stack_outliers(scene(rng))
    assert not clear.outlier.any() and clear.undecided is None and clear.lines(["a", "b"]) == []
    assert not short_stack_outliers(scene(rng, T=4)).outlier.any()  # the median decides


def test_texture_ratio_of_a_blend():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 64))
    assert abs(texture(0.2 * x + 5) / texture(x) - 0.2) < 0.02 and 0.2 < FLAT_RATIO
