"""Per-band offsets from the bands' shared edges, and fits that put every band in one frame."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal.windows import tukey

import splatsr
from splatsr.core.bands import band_offsets, gradient_magnitude, registering_shift
from splatsr.core.bands import tukey as our_tukey
from splatsr.evaluate.simulate import simulate

OFFSETS_M = np.array([[0.0, 0.0], [0.0, 0.0], [1.5, 0.0], [0.0, -1.2]])  # B04 east, B08 south


def _bands(texture, n_px: int) -> np.ndarray:
    """4 bands sharing edges with different contrasts (one inverted, like NIR vs red)."""
    g = texture[0, :4 * n_px, :4 * n_px]
    return np.stack([g, 0.8 * g + 0.02, 1.3 * g, 0.3 - g])


def _stack(truth, offsets_m):
    rng = np.random.default_rng(0)
    shifts = rng.normal(0, 1.5, (16, 2))
    shifts -= shifts.mean(0)
    return np.concatenate([simulate(truth[b:b + 1], truth_pixel_m=2.5,
                                    shifts_m=shifts + offsets_m[b], noise_sigma=0.002,
                                    seed=b)[0] for b in range(len(truth))], axis=1)


def test_registration_of_a_subpixel_fourier_shift(texture):
    """A band-limited shift of 0.3 px is recovered to 0.01 px, from gradient magnitudes too
    (4x band-limited upsampling before the nonlinear magnitude)."""
    a = _stack(_bands(texture, 32)[:1], OFFSETS_M[:1])[0, 0].astype(float)
    b = np.real(np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(a), (0.0, 0.3))))
    w = np.outer(tukey(32, 0.25), tukey(32, 0.25))
    np.testing.assert_allclose(registering_shift(a, b, w), [0.0, -0.3], atol=0.01)
    w4 = np.outer(tukey(128, 0.25), tukey(128, 0.25))
    s = registering_shift(gradient_magnitude(a, 4), gradient_magnitude(b, 4), w4) / 4
    np.testing.assert_allclose(s, [0.0, -0.3], atol=0.015)


def test_aligned_bands_get_no_offset(texture):
    assert not band_offsets(_stack(_bands(texture, 32), 0 * OFFSETS_M), pixel_m=10.0).any()


@pytest.fixture(scope="module")
def interband(texture):
    """Inter-band displacement (m) of B04 and B08 against B02 in 2.5 m outputs."""
    truth = _bands(texture, 32)
    w = np.outer(tukey(128, 0.25), tukey(128, 0.25))

    def measure(offsets_m, **cfg):
        res = splatsr.fit_arrays(_stack(truth, offsets_m), pixel_m=10.0,
                                 config=splatsr.FitConfig(adam_steps=30, lbfgs_iters=30,
                                                          **cfg))
        img = res.render(2.5).astype(float)
        s = [registering_shift(img[0], img[b], w) for b in (2, 3)]
        return np.array([(-r[1] * 2.5, r[0] * 2.5) for r in s]), res
    return measure


def test_bands_line_up_in_the_output(interband):
    """B04 1.5 m east and B08 1.2 m south in every date: the output bands sit within 0.4 m
    of where a fit of the aligned stack puts them (measured 0.25 and 0.11 m; 1.4 and 1.1 m
    without band offsets)."""
    aligned, _ = interband(0 * OFFSETS_M)
    shifted, res = interband(OFFSETS_M)
    assert np.hypot(*(shifted - aligned).T).max() < 0.4
    off, _ = interband(OFFSETS_M, band_offsets=False)
    assert np.hypot(*(off - aligned).T).min() > 0.8
    np.testing.assert_allclose(res.band_offsets_m[2:], OFFSETS_M[2:], atol=0.45)
    cols = res.per_observation()
    np.testing.assert_allclose(cols["dx_m_band3"], res.shifts_m[:, 0] + res.band_offsets_m[2, 0])


def test_bands_without_shared_edges_get_no_offset(texture):
    """Two bands from different scenes: phase correlation finds a consistent but meaningless
    peak (measured: 80 m); anything beyond half a pixel is not corrected."""
    truth = np.stack([texture[0, :128, :128], texture[1, :128, :128]])
    assert not band_offsets(_stack(truth, 0 * OFFSETS_M[:2]), pixel_m=10.0).any()


@pytest.mark.parametrize("n", [1, 2, 5, 64, 97, 384])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
def test_tukey_matches_scipy(n, alpha):
    np.testing.assert_allclose(our_tukey(n, alpha), tukey(n, alpha), atol=1e-12)
