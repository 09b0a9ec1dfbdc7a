"""The stack's error spectrum: analytic oracles for the posterior, recovery of a known law."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from splatsr.core.products.error_spectrum import (
    SceneSpectrum,
    agreement,
    detail_variance,
    error_by_support,
    fit_scene_spectrum,
    median_composite,
    sensor_mtf,
)
from splatsr.evaluate.simulate import simulate

KW = dict(pixel_m=10.0, psf_sigma_m=4.0)


def test_one_date_without_aliasing_is_the_scalar_wiener_error():
    """factor 1: one unknown per frequency, posterior P N / (N + |M|^2 P), whatever the shift."""
    import splatsr.core.products.error_spectrum as es

    law, noise = SceneSpectrum(1e-6, out_sigma_m=0.0), 1e-5
    err = error_by_support(np.array([[1.3, -0.7]]), law, factor=1, noise_var=noise, **KW)
    k = (np.arange(es.N_FREQ) + 0.5) / es.N_FREQ - 0.5
    ky, kx = np.meshgrid(k / 10.0, k / 10.0, indexing="ij")
    p, m2 = 1e-6 / (ky ** 2 + kx ** 2), sensor_mtf(ky, kx, **KW) ** 2
    np.testing.assert_allclose(err, [p.mean(), (p * noise / (noise + m2 * p)).mean()],
                               rtol=1e-9)


def test_more_and_more_diverse_dates_lower_the_error():
    law = SceneSpectrum(2e-7, out_sigma_m=1.25)
    rng = np.random.default_rng(0)
    shifts = rng.normal(0, 3.0, (12, 2))
    err = error_by_support(shifts, law, factor=4, noise_var=1e-7, **KW)
    assert err.shape == (13,) and np.all(np.diff(err) <= 0) and err[-1] < 0.8 * err[1]
    # one shift repeated only averages the noise; it cannot separate the aliases (measured
    # 1.46 x the error of the diverse shifts at this noise; 1.01 x at noise 1e-5, where the
    # aliased frequencies are below the noise either way)
    same = error_by_support(np.zeros((12, 2)), law, factor=4, noise_var=1e-7, **KW)
    assert same[-1] > err[-1] * 1.3


def power_law_field(n: int, beta: float, seed: int) -> np.ndarray:
    """(n, n) Gaussian random field with spectrum |nu|^-beta, standard deviation 0.02."""
    rng = np.random.default_rng(seed)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    amp = np.where(f > 0, np.maximum(f, 1e-9) ** (-beta / 2), 0.0)
    field = np.real(np.fft.ifft2(amp * np.fft.fft2(rng.normal(size=(n, n)))))
    return 0.1 + 0.02 * field / field.std()


@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_fit_predicts_the_detail_beyond_the_10_m_band(noise):
    """A |nu|^-2 random field at 2.5 m (through a reference sensor's own transfer, a Gaussian
    of half a pixel) seen by the 10 m sensor on 8 dates: the spectrum fitted on two halves of
    the dates predicts the field's variance beyond the 10 m Nyquist, whatever the noise."""
    field = gaussian_filter(power_law_field(512, 2.0, seed=1), 0.5, mode="wrap")
    data, _ = simulate(field, truth_pixel_m=2.5, n_obs=8, noise_sigma=noise, seed=0)
    halves = [median_composite(data[k::2])[0] for k in (0, 1)]
    law = fit_scene_spectrum(*halves, factor=4, **KW)
    spec = np.abs(np.fft.fft2(field - field.mean())) ** 2 / field.size  # unitary, per coefficient
    nu_y, nu_x = np.meshgrid(*(np.fft.fftfreq(512, d=2.5),) * 2, indexing="ij")
    nu = np.hypot(nu_y, nu_x)
    beyond = (nu > 0.05) & (nu < 0.15)  # cycles/m: past the 10 m Nyquist, inside 2.5 m's
    ratio = law(nu_y[beyond], nu_x[beyond]).sum() / spec[beyond].sum()
    assert 0.7 < ratio < 1.3, ratio  # measured 0.85 and 0.80


def test_agreement_is_one_within_noise_and_small_where_the_date_changed():
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.01, (40, 40))
    r[10:20, 10:20] += 0.1  # a field that changed
    a = agreement(r, 0.01 ** 2)
    assert np.median(a[25:, 25:]) > 0.9 and a[12:18, 12:18].max() < 0.1


def test_a_changed_date_has_more_detail_error_where_it_changed():
    data, shifts = simulate(power_law_field(128, 2.0, seed=3), truth_pixel_m=2.5, n_obs=8,
                            noise_sigma=0.001, seed=3)  # (8, 1, 32, 32)
    rng = np.random.default_rng(3)
    residual = 0.001 * rng.normal(size=(1, 32, 32))
    residual[0, 8:16, 8:16] += 0.05  # date 0 departs from the shared scene there
    kw = dict(pixel_m=10.0, factor=4, psf_sigma_m=np.array([4.0]), date_weights=np.ones(8))
    shared = detail_variance(data, shifts, **kw)
    own = detail_variance(data, shifts, own=0, own_residual=residual, **kw)
    assert shared.shape == own.shape == (1, 128, 128)
    ratio = own[0] / shared[0]
    # where the date agrees, the other dates count: about the shared scene's error
    assert 0.8 < np.median(ratio[80:120, 80:120]) < 1.25
    # where it changed only the date itself counts, and the other dates' detail may show
    assert np.median(ratio[40:56, 40:56]) > 1.5
