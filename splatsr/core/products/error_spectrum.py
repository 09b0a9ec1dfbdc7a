"""How much of the scene's fine detail a stack resolves: its expected error per frequency.

The trust map's scale comes from the stack, not from constants calibrated on other scenes:

* **the scene's spectrum** (:func:`fit_scene_spectrum`): the natural-image law
  ``A |nu|^-2``, its amplitude fitted to the cross-periodogram of two composites of
  disjoint dates (the dates' noise drops out, what every date sees stays), through the
  sensor's transfer (PSF and pixel integration, aliasing included);
* **what the dates can separate** (:func:`error_by_support`): a 10 m observation holds, at
  each of its frequencies, one mixture of the ``f^2`` output-grid frequencies that alias onto
  it (``f`` the resolution factor), each weighted by the sensor's transfer and phase-shifted
  by that date's sub-pixel shift. With the spectrum as the prior and the dates' noise, the
  posterior covariance of the ``f^2`` coefficients is ``(Phi^H Phi / noise^2 +
  diag(1 / P))^-1`` with ``Phi`` (dates x f^2); its trace is the expected error there.

Few dates, small or clustered shifts, a wide PSF, noise, or a scene with more fine detail all
raise the error; it is computed for the stack's fitted shifts, date by date, so a pixel seen by
``n`` dates gets the error of ``n`` dates (:func:`detail_variance`). The reference a product is
compared with is itself a sensor's image, so the law is taken through a Gaussian transfer of
half an output pixel (about 0.3 at the output's Nyquist, typical of optical imagery at its own
pixel size).

Pure numpy; the cost is a few hundred (f^2 x f^2) inversions per date, milliseconds per band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BETA = 2.0  # slope of the natural-image power spectrum |nu|^-2 (fitting it per scene on a
# 10 m composite of 32 x 32 px moved it by +-0.4 between 8 and 16 dates of one scene, and the
# cross-periodogram's fall at high frequencies biased it steep)
FIT_BAND = (0.04, 0.5)  # composite frequencies (cycles per 10 m pixel) the power law is fitted on
OUTPUT_MTF_PX = 0.5  # Gaussian sigma, in output pixels, of the reference image's own transfer
N_FREQ = 20  # base frequencies per axis sampled for the error (smooth in them); even
# (fewer for factors above 4: the cost per date grows as (frequencies x f^6))


def sensor_mtf(nu_y: np.ndarray, nu_x: np.ndarray, *, pixel_m: float, psf_sigma_m: float
               ) -> np.ndarray:
    """Transfer of a Gaussian PSF and a square pixel at frequencies in cycles per metre."""
    gauss = np.exp(-2.0 * np.pi ** 2 * psf_sigma_m ** 2 * (nu_y ** 2 + nu_x ** 2))
    return gauss * np.sinc(pixel_m * nu_y) * np.sinc(pixel_m * nu_x)


def alias_frequencies(k_y: np.ndarray, k_x: np.ndarray, *, pixel_m: float, factor: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(K, f^2) output-grid frequencies (cycles/m) that alias onto each base frequency
    ``k`` (cycles per 10 m pixel, K of them)."""
    m = np.arange(factor) - factor // 2
    m_y, m_x = np.meshgrid(m, m, indexing="ij")
    nu_y = (np.ravel(k_y)[:, None] + m_y.ravel()[None]) / pixel_m
    nu_x = (np.ravel(k_x)[:, None] + m_x.ravel()[None]) / pixel_m
    return nu_y, nu_x


@dataclass(frozen=True)
class SceneSpectrum:
    """A scene spectrum on the output grid: the variance of one unitary Fourier coefficient
    at frequency ``nu`` (cycles/m), ``amplitude * |nu|^-BETA * T(nu)^2``, with ``T`` the
    reference image's own transfer (a Gaussian of ``out_sigma_m``)."""

    amplitude: float
    out_sigma_m: float  # sigma of T in metres

    def __call__(self, nu_y: np.ndarray, nu_x: np.ndarray) -> np.ndarray:
        nu2 = nu_y ** 2 + nu_x ** 2
        return self.amplitude * np.maximum(nu2, 1e-18) ** (-BETA / 2) * np.exp(
            -4.0 * np.pi ** 2 * self.out_sigma_m ** 2 * nu2)


def _spectrum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windowed unitary cross-periodogram ``Re(F(a) F(b)*)`` of two (H, W) images and its
    frequencies (cycles per pixel); of two independent noisy views of one scene it is the
    scene's periodogram without their noise (in expectation)."""
    h, w = a.shape
    win = np.hanning(h)[:, None] * np.hanning(w)[None]
    norm = np.sqrt(h * w * (win ** 2).mean())
    fa, fb = (np.fft.fft2((im - im.mean()) * win) / norm for im in (a, b))
    k_y, k_x = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    return np.real(fa * np.conj(fb)), k_y, k_x


def fit_scene_spectrum(first: np.ndarray, second: np.ndarray, *, pixel_m: float,
                       psf_sigma_m: float, factor: int) -> SceneSpectrum:
    """The amplitude of :class:`SceneSpectrum` whose view through the sensor (the ``f^2``
    aliases of each frequency, through the PSF and the pixel) matches the radially binned
    cross-periodogram of two composites (H, W) of disjoint dates: the dates' noise drops
    out, so no noise level is needed.

    The log misfit is averaged over bins log-spaced on :data:`FIT_BAND`, each weighted by
    its number of frequencies; bins whose cross-power is not positive are left out.
    """
    out_sigma_m = OUTPUT_MTF_PX * pixel_m / factor
    unit = SceneSpectrum(1.0, out_sigma_m)
    per, k_y, k_x = _spectrum(np.asarray(first, np.float64), np.asarray(second, np.float64))
    which = np.digitize(np.hypot(k_y, k_x), np.geomspace(*FIT_BAND, 14))
    log_ratio, count = [], []
    for b in range(1, 14):
        sel = which == b
        if sel.sum() < 4 or per[sel].mean() <= 0:
            continue
        nu_y, nu_x = alias_frequencies(k_y[sel], k_x[sel], pixel_m=pixel_m, factor=factor)
        m2 = sensor_mtf(nu_y, nu_x, pixel_m=pixel_m, psf_sigma_m=psf_sigma_m) ** 2
        model = (m2 * unit(nu_y, nu_x)).sum(1).mean() / factor ** 2
        log_ratio.append(np.log(per[sel].mean() / model))
        count.append(sel.sum())
    if not count:
        return SceneSpectrum(0.0, out_sigma_m)  # no detail that two sets of dates agree on
    return SceneSpectrum(float(np.exp(np.average(log_ratio, weights=count))), out_sigma_m)


def error_by_support(shifts_m: np.ndarray, spectrum: SceneSpectrum, *, pixel_m: float,
                     psf_sigma_m: float, noise_var: float, factor: int) -> np.ndarray:
    """Expected squared error per output pixel from the first ``n`` dates, ``n = 0 .. T``.

    ``shifts_m`` (T, 2) ``(dx_m east, dy_m north)`` in the order the dates are added. Returns
    (T + 1,) float64, non-increasing: entry 0 is the scene's variance beyond its mean (no
    data), entry ``n`` the trace of the posterior covariance of a linear-Gaussian estimate
    from ``n`` dates, averaged over frequencies (see the module docstring).
    """
    n = N_FREQ if factor <= 4 else 2 * max(3, round(N_FREQ / 2 * (4 / factor) ** 1.5))
    k = (np.arange(n) + 0.5) / n - 0.5  # cycles per 10 m pixel; n even leaves 0 out
    k_y, k_x = np.meshgrid(k, k, indexing="ij")
    nu_y, nu_x = alias_frequencies(k_y, k_x, pixel_m=pixel_m, factor=factor)  # (K, A)
    prior = np.maximum(spectrum(nu_y, nu_x), 1e-30)  # (K, A)
    mtf = sensor_mtf(nu_y, nu_x, pixel_m=pixel_m, psf_sigma_m=psf_sigma_m) / factor
    precision = np.zeros(prior.shape + prior.shape[1:], complex)  # (K, A, A)
    eye = np.eye(prior.shape[1])
    out = [float(prior.mean())]
    for dx, dy in np.asarray(shifts_m, np.float64):
        phi = mtf * np.exp(-2j * np.pi * (nu_x * dx - nu_y * dy))  # (K, A) this date's view
        precision += phi[:, :, None].conj() * phi[:, None, :] / max(noise_var, 1e-30)
        cov = np.linalg.inv(precision + eye / prior[:, :, None])
        out.append(float(np.real(np.einsum("kaa->ka", cov)).mean()))  # per coefficient
    return np.minimum.accumulate(np.array(out))


TEXTURE_FLOOR = 0.3  # flat ground keeps this share (of the mean) of the detail error; chosen
# on the tuning crops of benchmarks/uncertainty.py (0, 0.1, 0.3, 1 tried; the ranking is the same)


def upsample(var: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) -> (H*f, W*f): each 10 m value spread over its output pixels, smoothed."""
    from scipy.ndimage import gaussian_filter

    up = np.repeat(np.repeat(var, factor, axis=0), factor, axis=1)
    return gaussian_filter(up, factor / 2.0, mode="nearest")


def texture_energy(data: np.ndarray, *, factor: int) -> np.ndarray:
    """Local energy of the observed detail at the pixel scale, upsampled: (B, H*f, W*f).

    ``data`` (T, B, H, W), NaN where invalid. The per-pixel median over dates (a composite
    that unmasked clouds barely move) minus its Gaussian blur of one pixel, squared and
    averaged over a one-pixel Gaussian window: where the observations hold edges and fine
    texture, the scene has detail beyond their pass band that no fit recovers exactly.
    """
    from scipy.ndimage import gaussian_filter

    out = []
    for band in median_composite(data):
        detail = band - gaussian_filter(band, 1.0, mode="nearest")
        out.append(upsample(gaussian_filter(detail * detail, 1.0, mode="nearest"), factor))
    return np.stack(out)


def median_composite(data: np.ndarray) -> np.ndarray:
    """(B, H, W) per-pixel median over dates of (T, B, H, W), NaN filled with the band mean."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels are filled below
        comp = np.nanmedian(np.asarray(data, np.float64), axis=0)
    out = []
    for band in comp:
        ok = np.isfinite(band)
        out.append(np.where(ok, band, band[ok].mean() if ok.any() else 0.0))
    return np.stack(out)


def agreement(residual: np.ndarray, noise_var: float) -> np.ndarray:
    """(H, W) in (0, 1]: how far a date agrees with the shared scene, from its residual
    (H, W) (NaN where invalid): ``noise_var`` over the local mean squared residual (one-pixel
    Gaussian window), capped at 1. A changed field tends to 0."""
    from scipy.ndimage import gaussian_filter

    local = gaussian_filter(np.nan_to_num(residual) ** 2, 1.0, mode="nearest")
    return np.minimum(1.0, noise_var / np.maximum(local, 1e-30))


def texture_shape(data: np.ndarray, *, factor: int) -> np.ndarray:
    """(B, H*f, W*f) mean-1 map of where detail errors fall: the local texture
    (:func:`texture_energy`) with a floor of :data:`TEXTURE_FLOOR` of its mean."""
    tex = texture_energy(data, factor=factor)
    mean = np.maximum(tex.mean(axis=(1, 2), keepdims=True), 1e-30)
    return (tex + TEXTURE_FLOOR * mean) / ((1.0 + TEXTURE_FLOOR) * mean)


def detail_variance(data: np.ndarray, shifts_m: np.ndarray, *, pixel_m: float, factor: int,
                    psf_sigma_m: np.ndarray, date_weights: np.ndarray,
                    own: int | None = None, own_residual: np.ndarray | None = None,
                    shape: np.ndarray | None = None) -> np.ndarray:
    """Expected squared error of the fine detail per output pixel: (B, H*f, W*f).

    ``data`` (T, B, H, W) NaN where invalid, ``shifts_m`` (T, 2) the fitted shifts,
    ``psf_sigma_m`` (B,), ``date_weights`` (T,) in [0, 1] (the fit's per-date weights). Each
    pixel gets the error of the dates that see it (:func:`error_by_support`, a fractional
    count interpolated), times ``shape`` (B, H*f, W*f), a mean-1 map of where within the
    scene the errors fall (default :func:`texture_shape`).

    For a date's own scene (``own`` its index, ``own_residual`` (B, H, W) its observation
    minus the shared fit's prediction), that date counts first and the others count as far
    as the date agrees with them (:func:`agreement`); where it departs, the detail the other
    dates added may show their state, and its energy is added.
    """
    from splatsr.core.scaling import noise_sigma

    T = data.shape[0]
    weights = np.clip(np.asarray(date_weights, np.float64), 0.0, 1.0)
    shape = texture_shape(data, factor=factor) if shape is None else shape
    halves = [slice(0, None, 2), slice(1, None, 2)] if T > 1 else [slice(None)] * 2
    out = []
    for b in range(data.shape[1]):
        valid = np.isfinite(data[:, b])
        noise_var = noise_sigma(data[:, b]) ** 2
        # median composites of two halves of the dates (one date: itself twice)
        first, second = (median_composite(data[h, b:b + 1])[0] for h in halves)
        spectrum = fit_scene_spectrum(first, second, pixel_m=pixel_m,
                                      psf_sigma_m=psf_sigma_m[b], factor=factor)
        share = valid.mean((1, 2)) * weights
        order = [t for t in np.argsort(-share, kind="stable") if t != own]
        order = ([own] if own is not None else []) + order
        err = error_by_support(shifts_m[order], spectrum, pixel_m=pixel_m,
                               psf_sigma_m=psf_sigma_m[b], noise_var=noise_var, factor=factor)
        count = np.tensordot(weights, valid, axes=1)  # (H, W) dates seeing each pixel
        support = np.arange(len(err))
        if own is None:
            var = np.interp(count, support, err)
        else:
            seen = valid[own]
            others = count - weights[own] * seen
            agree = agreement(own_residual[b], noise_sigma(own_residual[None, b]) ** 2)
            mixed = np.interp(1.0 + others * agree, support, err)
            painted = (1.0 - agree) * (err[1] - np.interp(1.0 + others, support, err))
            var = np.where(seen, mixed + painted, np.interp(others, support, err))
        out.append(upsample(var, factor) * shape[b])
    return np.stack(out)
