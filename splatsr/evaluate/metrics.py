"""Image-quality scores of an output against a reference image (another sensor or date)."""

from __future__ import annotations

import math

import numpy as np

from splatsr.errors import ConfigError, StackError


def cpsnr(image: np.ndarray, reference: np.ndarray, *, border_px: int = 3,
          search_px: int = 2) -> float:
    """PSNR of an output against a reference image of another sensor or date (PROBA-V style).

    Per band and per integer shift of ``image`` within ``+-search_px`` pixels, the
    least-squares gain and offset of ``image`` to ``reference`` are removed (two sensors'
    radiometry differ) and the PSNR taken, with the reference band's range as peak; each band
    keeps its best shift; the bands' PSNRs are averaged. ``border_px + search_px`` pixels are
    left out at every edge, and pixels non-finite in either image.

    Parameters
    ----------
    image, reference
        (B, H, W) or (H, W), on the same grid (e.g. the 2.5 m output and a 2.5 m reference).
    border_px, search_px
        Border left out and shift search range, in pixels of that grid.

    Returns
    -------
    float
        cPSNR in dB (higher is better).
    """
    img = np.asarray(image, np.float64)
    ref = np.asarray(reference, np.float64)
    img, ref = (img[None], ref[None]) if img.ndim == 2 else (img, ref)
    if img.shape != ref.shape or img.ndim != 3:
        raise ConfigError(f"image and reference must both be (B, H, W) on the same grid, got "
                          f"{np.shape(image)} and {np.shape(reference)}")
    if border_px < 0 or search_px < 0:
        raise ConfigError(f"border_px and search_px must be >= 0, got {border_px}, {search_px}")
    B, H, W = ref.shape
    b = border_px + search_px
    if min(H, W) <= 2 * b + 1:
        raise ConfigError(f"a {W}x{H} px image is too small for a border of {border_px} px and "
                          f"a shift search of {search_px} px")
    out = []
    for ib in range(B):
        t = ref[ib, b:H - b, b:W - b]
        best = -math.inf
        for du in range(-search_px, search_px + 1):
            for dv in range(-search_px, search_px + 1):
                a = img[ib, b + du:H - b + du, b + dv:W - b + dv]
                ok = np.isfinite(a) & np.isfinite(t)
                if ok.sum() < 3 or np.ptp(a[ok]) == 0:
                    continue
                gain, off = np.polyfit(a[ok], t[ok], 1)
                mse = float(np.mean((gain * a[ok] + off - t[ok]) ** 2))
                peak = float(np.ptp(t[ok]))
                best = max(best, 10 * math.log10(peak ** 2 / max(mse, 1e-30)))
        if best == -math.inf:
            raise StackError(f"band {ib + 1}: no shift leaves 3 valid, non-constant pixels "
                             f"to compare")
        out.append(best)
    return float(np.mean(out))
