"""Per-band normalisation of a stack: valid pixels to zero mean, unit noise level.

The loss, its gradients and the optimisers' tolerances then do not depend on the reflectance
scale, and a fit down to the noise has a data term of ~0.5 per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def noise_sigma(band: np.ndarray) -> float:
    """Robust noise level of a band stack (T, H, W), NaN-aware.

    The median absolute deviation of the diagonal second difference
    ``(x[i,j] - x[i,j+1] - x[i+1,j] + x[i+1,j+1]) / 2``, which for white noise of standard
    deviation s has standard deviation s, and which suppresses the smooth (PSF-blurred)
    signal. Texture at the pixel scale still leaks in, so this is an upper estimate.
    """
    d = 0.5 * (band[:, :-1, :-1] - band[:, :-1, 1:] - band[:, 1:, :-1] + band[:, 1:, 1:])
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 1.0
    mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    spread = float(np.std(d))
    return mad if mad > 1e-8 else (spread if spread > 1e-8 else 1.0)


@dataclass(frozen=True)
class BandScaling:
    """``normalised = (reflectance - mean) / scale`` per band."""

    mean: np.ndarray  # (B,) mean of the valid pixels, reflectance
    scale: np.ndarray  # (B,) noise level (noise_sigma), reflectance

    @classmethod
    def from_data(cls, data: np.ndarray, valid: np.ndarray) -> "BandScaling":
        """The scaling of a (T, B, H, W) stack with its (T, B, H, W) validity mask."""
        B = data.shape[1]
        mean = np.array([data[:, b][valid[:, b]].mean() if valid[:, b].any() else 0.0
                         for b in range(B)])
        scale = np.array([noise_sigma(data[:, b]) for b in range(B)])
        return cls(mean=mean, scale=scale)

    def normalise(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(T, B, H, W) in noise units, 0 where invalid."""
        m = self.mean[None, :, None, None]
        s = self.scale[None, :, None, None]
        return np.where(valid, (data - m) / s, 0.0)
