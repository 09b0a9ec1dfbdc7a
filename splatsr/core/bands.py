"""Per-band sub-pixel offsets: bands that do not line up exactly (Sentinel-2: within ~0.3 px).

A constant offset of one band is degenerate with that band's own scene (the scene can move
instead), so it cannot be fitted jointly. It is identified from what the bands share: edges
sit at the same place in every band. Per date, the gradient magnitude of each band (which
removes the sign and size of the contrast) is registered against the reference band's by
upsampled phase correlation; within a date all bands share the date's shift, so each
estimate is the pure inter-band offset. The median over the dates is kept on an axis only if
it is significant (``> SIGNIFICANCE`` standard errors of the dates' spread), else 0. The fit
then renders band ``b`` of date ``t`` with shift ``s_t + o_b``: every output band is in the
reference band's frame.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

MIN_VALID_FRACTION = 0.5  # dates where a band sees less of the area are not used
SIGNIFICANCE = 3.0  # standard errors an offset must exceed to be applied
MIN_DATES = 5  # fewer dates give no usable spread (3 dates: a MAD of almost nothing)
MAX_OFFSET_PX = 0.5  # larger estimates are not trusted (Sentinel-2 bands: within ~0.3 px)
UPSAMPLE = 50  # phase-correlation precision: 1/50 px
GRADIENT_UPSAMPLE = 4  # gradient magnitudes computed on a 4x finer (band-limited) grid
REFINE_ITERATIONS = 2  # registrations, each after shifting by the estimate so far
MAX_CROP_PX = 48  # offsets are estimated on the central 48 x 48 px (edges enough, fast)


def tukey(n: int, alpha: float) -> np.ndarray:
    """(n,) Tukey (tapered cosine) window: flat middle, cosine tapers on a fraction ``alpha``.

    Same values as ``scipy.signal.windows.tukey(n, alpha)`` (tested), written here because
    importing ``scipy.signal`` costs 0.6 s of every command's start-up.
    """
    if n < 2:
        return np.ones(n)
    x = np.linspace(0.0, 1.0, n)
    edge = np.minimum(x, 1.0 - x) / (alpha / 2)  # >= 1 on the flat middle
    return np.where(edge >= 1.0, 1.0, 0.5 * (1.0 - np.cos(np.pi * np.minimum(edge, 1.0))))


def gradient_magnitude(img: np.ndarray, factor: int = 1) -> np.ndarray:
    """(H * factor, W * factor) Sobel gradient magnitude, scaled to unit RMS.

    With ``factor > 1`` the image is first interpolated band-limited (zero-padded spectrum),
    so the magnitude (a nonlinear map) aliases less and moves with sub-pixel shifts.
    """
    if factor > 1:
        img = fourier_upsample(img, factor)
    g = np.hypot(ndimage.sobel(img, axis=0), ndimage.sobel(img, axis=1))
    rms = float(np.sqrt(np.mean(g * g)))
    return g / rms if rms > 0 else g


def central_crop(data: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` pixels of (..., H, W) (all of it if smaller)."""
    H, W = data.shape[-2:]
    y0, x0 = max(0, (H - size) // 2), max(0, (W - size) // 2)
    return data[..., y0:y0 + size, x0:x0 + size]


def fourier_upsample(img: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) -> (H * factor, W * factor) by zero-padding the centred spectrum."""
    H, W = img.shape
    spec = np.fft.fftshift(np.fft.fft2(img))
    py, px = (factor - 1) * H // 2, (factor - 1) * W // 2
    big = np.pad(spec, ((py, factor * H - H - py), (px, factor * W - W - px)))
    return np.real(np.fft.ifft2(np.fft.ifftshift(big))) * factor * factor


def offset_estimates(data: np.ndarray, *, pixel_m: float, reference: int = 0) -> np.ndarray:
    """(T, B, 2) per-date offsets ``(dx_m, dy_m)`` of each band against ``reference``.

    NaN where a date has too few valid pixels in either band. Content of band ``b``
    displaced east/north by ``(dx, dy)`` relative to the reference gives ``(dx, dy)``.
    """
    data = central_crop(data, MAX_CROP_PX)
    T, B, H, W = data.shape
    f = GRADIENT_UPSAMPLE
    window = np.outer(tukey(f * H, 0.25), tukey(f * W, 0.25))  # (fH, fW)
    out = np.full((T, B, 2), np.nan)
    for t in range(T):
        ok = np.isfinite(data[t]).all(axis=0)  # (H, W) valid in every band
        if ok.mean() < MIN_VALID_FRACTION:
            continue
        grads = [gradient_magnitude(np.where(ok, data[t, b], np.nanmedian(data[t, b][ok])), f)
                 for b in range(B)]
        for b in range(B):
            shift = np.zeros(2) if b == reference else \
                registering_shift(grads[reference], grads[b], window)
            out[t, b] = (-shift[1] * pixel_m / f, shift[0] * pixel_m / f)  # rows: south
    return out


def registering_shift(ref: np.ndarray, moving: np.ndarray, window: np.ndarray,
                      iterations: int = REFINE_ITERATIONS) -> np.ndarray:
    """(row, col) shift in pixels that registers ``moving`` onto ``ref``.

    Upsampled cross-correlation of tapered images is biased towards zero (the taper's own
    correlation peaks there): the images are made mean-zero before the taper, and the
    estimate is refined: ``moving`` is shifted by the
    estimate so far (Fourier shift) and the remainder estimated again.
    """
    total = np.zeros(2)
    ref = (ref - ref.mean()) * window  # the mean would add the taper's zero-shift peak
    for _ in range(iterations):
        moved = np.real(np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(moving), total)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step, _, _ = phase_cross_correlation(ref, (moved - moved.mean()) * window,
                                                 upsample_factor=UPSAMPLE,
                                                 normalization=None)
        total = total + step
    return total


def band_offsets(data: np.ndarray, *, pixel_m: float, reference: int = 0) -> np.ndarray:
    """(B, 2) offsets ``(dx_m, dy_m)`` of each band's content against band ``reference``.

    The median of :func:`offset_estimates` over the dates, per axis kept only where it
    exceeds ``SIGNIFICANCE`` standard errors (1.4826 MAD / sqrt(n)); otherwise 0. A band
    whose offset exceeds ``MAX_OFFSET_PX`` on either axis gets 0 (its edges do not match the
    reference's). Needs at least ``MIN_DATES`` usable dates (else all 0).
    """
    est = offset_estimates(data, pixel_m=pixel_m, reference=reference)
    out = np.zeros(est.shape[1:])
    usable = np.isfinite(est).all(axis=(1, 2))
    n = int(usable.sum())
    if n < MIN_DATES:
        return out
    e = est[usable]
    med = np.median(e, axis=0)  # (B, 2)
    se = 1.4826 * np.median(np.abs(e - med), axis=0) / np.sqrt(n)
    keep = np.abs(med) > SIGNIFICANCE * np.maximum(se, 1e-3 * pixel_m)
    # beyond MAX_OFFSET_PX the bands do not share their edges (or a date is misregistered):
    # not an offset to correct
    plausible = (np.abs(med) <= MAX_OFFSET_PX * pixel_m).all(axis=1, keepdims=True)
    keep &= plausible
    out[keep] = med[keep]
    return out
