"""Bright outlier dates of a short stack (2-3 dates): the cloud is the brighter-and-flatter one.

With many dates a cloud the mask missed is a minority that the per-pixel median rejects
(:func:`~splatsr.core.robust.bright_dates` for the starting scene,
:func:`~splatsr.core.products.consensus.median_weights` for the product). With two dates there is no
majority: the median of two is their mean, and an unmasked cloud over most of the scene
pulled every band's mean up by half the cloud's brightness. What tells the two apart is that
a cloud (or haze) *adds* light and *removes* texture: the cloudy date is brighter in every
band and its pixel-scale contrast is lower. :func:`short_stack_outliers` applies that rule,
once per fit; the fit, its radiometric reference and the median of the product all leave the
date it names out (weight 0). Where one date is brighter but not flatter (a change of the
ground, snow on a textured scene) the evidence cannot decide: it says so and decides nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from splatsr.core.robust import BRIGHT_UNITS
from splatsr.core.scaling import noise_sigma

SHORT_STACK = 3  # dates up to which the rule applies (beyond, the median decides)
# A date is flatter when its pixel-scale texture (robust spread of the diagonal second
# difference, per band) is below this share of the other's in every band. A cloud blended at
# opacity a over a share p of the scene scales the texture there by (1 - a); a clear date
# differs from another clear one by noise and change only (texture within ~10 %).
FLAT_RATIO = 0.8


@dataclass(frozen=True)
class BrightVerdict:
    """Which dates of a short stack are bright outliers, or that it cannot tell."""

    outlier: np.ndarray  # (T,) bool: a cloud the mask missed (left out, weight 0)
    undecided: tuple[int, int] | None = None  # (brighter, other) dates it cannot judge

    def lines(self, labels: list[str] | tuple[str, ...]) -> list[str]:
        """What the rule decided, one sentence (none when nothing was bright)."""
        if self.outlier.any():
            names = ", ".join(lbl for lbl, o in zip(labels, self.outlier) if o)
            return [f"{names}: brighter and flatter than the other date(s) in every band (a "
                    "cloud the mask missed): left out of the fit and of the product"]
        if self.undecided is not None:
            t, r = self.undecided
            return [f"{labels[t]} is brighter than {labels[r]} in every band but not flatter: "
                    "the evidence cannot tell a cloud from a change of the ground, so the "
                    "result is a compromise of the two"]
        return []

    def weights(self) -> np.ndarray | None:
        """(T,) 0 for an outlier, 1 otherwise; None when there is none."""
        return None if not self.outlier.any() else np.where(self.outlier, 0.0, 1.0)


def texture(band: np.ndarray) -> float:
    """Pixel-scale texture of one date's band (H, W), NaN invalid: 1.4826 x the median
    absolute diagonal second difference (NaN without a valid 2 x 2 block)."""
    d = band[:-1, :-1] - band[:-1, 1:] - band[1:, :-1] + band[1:, 1:]
    d = np.abs(d[np.isfinite(d)])
    return 1.4826 * float(np.median(d)) if d.size else float("nan")


def compare(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lift (B,), texture ratio (B,)) of date ``a`` against date ``b`` (B, H, W), noise
    units, NaN invalid, over the pixels valid in both: the median of ``a - b`` and
    ``texture(a) / texture(b)``."""
    both = np.isfinite(a) & np.isfinite(b)
    lift = np.array([np.median((a[k] - b[k])[both[k]]) if both[k].any() else np.nan
                     for k in range(len(a))])
    ratio = np.array([texture(np.where(both[k], a[k], np.nan)) /
                      max(texture(np.where(both[k], b[k], np.nan)), 1e-12)
                      for k in range(len(a))])
    return lift, ratio


def short_stack_outliers(data: np.ndarray, *, units: float = BRIGHT_UNITS) -> BrightVerdict:
    """The bright outliers of a stack of 2-3 dates (T, B, H, W) in noise units, NaN invalid.

    Each date is compared with the darkest date (the lowest median over the bands of its
    pixels): brighter by more than ``units`` in every band *and* flatter
    (:data:`FLAT_RATIO`) in every band is an outlier; brighter but not flatter is undecided.
    No outlier with a single band, more than :data:`SHORT_STACK` dates, or without one date
    left clear.
    """
    T, B = data.shape[:2]
    none = BrightVerdict(np.zeros(T, bool))
    if B < 2 or T > SHORT_STACK or T < 2:
        return none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a band without a valid pixel
        level = np.nanmedian(data.reshape(T, B, -1), axis=2).sum(axis=1)  # (T,)
    ref = int(np.nanargmin(level))
    outlier = np.zeros(T, bool)
    undecided = None
    for t in range(T):
        if t == ref:
            continue
        lift, ratio = compare(data[t], data[ref])
        if not (lift > units).all():
            continue
        if (ratio < FLAT_RATIO).all():
            outlier[t] = True
        elif undecided is None:
            undecided = (t, ref)
    if outlier.all():
        return none
    return BrightVerdict(outlier, None if outlier.any() else undecided)


def hazy_dates(data: np.ndarray, *, units: float = BRIGHT_UNITS) -> np.ndarray:
    """(T,) True for the dates of a reflectance stack (T, B, H, W), NaN invalid, that are
    brighter than the per-pixel median of the dates by more than ``units`` noise units
    (:func:`~splatsr.core.scaling.noise_sigma`) and flatter (:data:`FLAT_RATIO`), both in
    every band: haze or a cloud the mask missed. Such a date does not count as a clear date
    when the time window is chosen (:func:`~splatsr.core.dates.auto_window_days`). None with
    a single band or fewer than 3 dates (the median of two is their mean)."""
    T, B = data.shape[:2]
    if B < 2 or T < 3:
        return np.zeros(T, bool)
    scale = np.array([noise_sigma(data[:, b]) for b in range(B)])[:, None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN pixel
        median = np.nanmedian(data, axis=0) / scale  # (B, H, W)
    tex = np.array([[texture(data[t, b]) for b in range(B)] for t in range(T)])  # (T, B)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a band without texture
        # against a typical date's texture, not the median image's (less noisy: flatter)
        ratio = tex / np.nanmedian(tex, axis=0)
    out = np.zeros(T, bool)
    for t in range(T):
        lift = compare(data[t] / scale, median)[0]
        out[t] = bool((lift > units).all() and (ratio[t] < FLAT_RATIO).all())
    return out
