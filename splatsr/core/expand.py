"""A fit of the used dates and bands of a stack, put back on the whole stack's dates and bands.

The input guard (:mod:`splatsr.core.inputs`) leaves out the dates and bands without a valid
pixel; the fit runs on the rest (:func:`subset_config`), and :func:`expand_result` gives its
result one row per date and band of the stack again: an empty band's scene is NaN (so every
output of it is NaN), an empty date has weight 0, gain 1, offset 0 and shift 0 (the CSV
writes its shift as NaN, :meth:`~splatsr.core.result.FitResult.reported_shifts_m`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from splatsr.core.config import FitConfig
from splatsr.core.products.consensus import DateMedianAnchor, PixelAnchor
from splatsr.core.products.observed import DateScene
from splatsr.core.result import FitResult


def subset_config(cfg: FitConfig, bands: np.ndarray) -> FitConfig:
    """``cfg`` for a fit of the bands ``bands`` (B,) bool: the per-band PSF widths of those."""
    if cfg.band_psf_sigma_m is None or bands.all():
        return cfg
    widths = tuple(w for w, keep in zip(cfg.band_psf_sigma_m, bands) if keep)
    return replace(cfg, band_psf_sigma_m=widths)


def put(a: np.ndarray | None, keep: np.ndarray, fill: float, *, axis: int = 0
        ) -> np.ndarray | None:
    """``a`` with the rows ``keep`` (bool, along ``axis``) put back among filled ones."""
    if a is None or keep.all():
        return a
    a = np.asarray(a)
    shape = list(a.shape)
    shape[axis] = len(keep)
    out = np.full(shape, fill, dtype=np.result_type(a.dtype, np.float32))
    index = [slice(None)] * a.ndim
    index[axis] = keep
    out[tuple(index)] = a
    return out


def expand_anchor(anchor: DateMedianAnchor | PixelAnchor | None, bands: np.ndarray
                  ) -> DateMedianAnchor | PixelAnchor | None:
    """The anchor with a zero correction for the bands left out."""
    if anchor is None or bands.all():
        return anchor
    if isinstance(anchor, PixelAnchor):
        return replace(anchor, correction=put(anchor.correction, bands, 0.0))
    return replace(anchor, residuals=put(anchor.residuals, bands, np.nan, axis=1),
                   noise_level=put(anchor.noise_level, bands, 1.0))


def expand_date_scene(scene: DateScene | None, dates: np.ndarray, bands: np.ndarray
                      ) -> DateScene | None:
    """The observed-date scene with the stack's date index and NaN for the bands left out."""
    if scene is None:
        return None
    return DateScene(int(np.flatnonzero(dates)[scene.index]), put(scene.weights, bands, np.nan),
                     put(scene.offset, bands, 0.0),
                     put(scene.corrected, bands, False).astype(bool))


def expand_result(res: FitResult, *, dates: np.ndarray, bands: np.ndarray,
                  config: FitConfig, band_names: tuple[str, ...]) -> FitResult:
    """``res``, a fit of the dates ``dates`` (T,) and bands ``bands`` (B,) (bool) of a stack,
    with one row per date and band of the stack (see the module docstring)."""
    def td(a, fill):  # (t, b, ...) -> (T, B, ...)
        return put(put(a, dates, fill), bands, np.nan, axis=1)

    return replace(
        res,
        weights=put(res.weights, bands, np.nan),
        shifts_m=put(res.shifts_m, dates, 0.0),
        config=replace(res.config, band_psf_sigma_m=config.band_psf_sigma_m),
        band_names=band_names,
        residual_rms=put(res.residual_rms, dates, np.nan),
        gains=td(res.gains, 1.0),
        offsets=td(res.offsets, 0.0),
        obs_weights=put(res.obs_weights, dates, 0.0),
        outlier_fraction=put(res.outlier_fraction, dates, np.nan),
        noise_level=put(res.noise_level, bands, np.nan),
        time_weight=put(res.time_weight, dates, 0.0),
        change=None if res.change is None else
        put(put(res.change, dates, 0.0), bands, 0.0, axis=1),
        band_offsets_m=put(res.band_offsets_m, bands, 0.0),
        anchor=expand_anchor(res.anchor, bands),
        date_scene=expand_date_scene(res.date_scene, dates, bands),
        valid_fraction=put(res.valid_fraction, dates, 0.0),
    )
