"""Joint scene-and-shift solver: Adam warm-up, then L-BFGS (strong Wolfe), coarse to fine.

The data are normalised per band (valid pixels to zero mean, unit spread) so that the loss,
its gradients and the optimisers' tolerances do not depend on the reflectance scale; the
result is mapped back to reflectance exactly (a constant weight field renders to that
constant, so the affine map commutes with rendering).

The pieces: :mod:`~splatsr.core.config` (settings), :mod:`~splatsr.core.scaling`
(normalisation), :mod:`~splatsr.core.objective` (parameters, robust state, loss),
:mod:`~splatsr.core.levels` (per-level Adam and L-BFGS), :mod:`~splatsr.core.result`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from splatsr.core.bands import band_offsets
from splatsr.core.change import centred
from splatsr.core.checks import MIN_OBSERVATIONS, check_stack_array
from splatsr.core.config import AUTO_PRIOR, PLAIN, FitConfig
from splatsr.core.products.consensus import (
    DateMedianAnchor,
    PixelAnchor,
    median_anchor,
    target_correction,
)
from splatsr.core.dates import (
    acquisition_index,
    bridged,
    own_date_factor,
    target_time_weights,
)
from splatsr.core.expand import expand_result, subset_config
from splatsr.core.inputs import InputWarning, date_labels, inspect_stack, shift_limit_lines
from splatsr.core.levels import FitLog, fit_level, level_schedule, start_weights
from splatsr.core.model import MAX_SHIFT_M
from splatsr.core.objective import Objective
from splatsr.core.products.observed import DateScene, date_scene, frame_shift
from splatsr.core.outliers import SHORT_STACK, BrightVerdict, short_stack_outliers
from splatsr.core.result import FitResult
from splatsr.core.robust import regauge
from splatsr.core.scaling import BandScaling, noise_sigma
from splatsr.errors import ConfigError, StackError

__all__ = ["PLAIN", "FitConfig", "FitResult", "fit_arrays", "noise_sigma"]


def torch_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when torch sees a GPU, else CPU; other names as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def valid_mask(data: np.ndarray) -> np.ndarray:
    """(T, B, H, W) finite pixels; a :class:`StackError` if too few observations have any."""
    valid = np.isfinite(data)
    if not valid.any():
        raise StackError("no valid pixels: every value in the stack is NaN")
    per_obs = valid.reshape(len(data), -1).any(axis=1)
    if per_obs.sum() < MIN_OBSERVATIONS:
        raise StackError(f"only {int(per_obs.sum())} observation(s) have valid pixels; "
                         f"at least {MIN_OBSERVATIONS} are needed")
    return valid


def fit_arrays(data: np.ndarray, *, pixel_m: float, config: FitConfig | None = None,
               band_names: tuple[str, ...] | None = None,
               init_shifts_m: np.ndarray | None = None,
               dates: Sequence[Any] | np.ndarray | None = None,
               band_offsets_m: np.ndarray | None = None) -> FitResult:
    """Fit the splat scene and the per-observation shifts to a stack held in memory.

    Parameters
    ----------
    data
        (T, B, H, W) reflectance, NaN where invalid.
    pixel_m
        Pixel size of ``data`` in metres.
    config
        Solver settings; defaults to :class:`FitConfig()`.
    band_names
        Names of the B bands (default ``band1`` ...).
    init_shifts_m
        (T, 2) starting shifts ``(dx_m, dy_m)``; default zeros.
    dates
        (T,) observation dates (``numpy.datetime64`` or ISO-8601 strings); needed when
        ``config.target_date`` is set (dates are then weighted by their distance to it).
    band_offsets_m
        (B, 2) band offsets decided elsewhere (a tiled fit's, on the whole stack); default:
        estimated from ``data`` when ``config.band_offsets``.

    Returns
    -------
    FitResult
        One row per date and band of ``data``, also where the input guard
        (:mod:`splatsr.core.inputs`) left a date or band out: an empty band's scene is NaN,
        an empty date has weight 0. What the guard found is in ``.inputs`` and is raised as
        :class:`~splatsr.core.inputs.InputWarning` warnings (a shift at the search limit too).
    """
    cfg = config or FitConfig()
    cfg.validate()
    if cfg.prior == AUTO_PRIOR:
        raise ConfigError("prior='auto' is chosen from held-out dates before a fit: use "
                          "splatsr.fit, or splatsr.core.prior_choice.resolve_prior first")
    data = check_stack_array(data)
    T, B = data.shape[:2]
    cfg.check_bands(B)
    valid_mask(data)  # too few dates with valid pixels: the error, before any word
    band_names = tuple(band_names or (f"band{i + 1}" for i in range(B)))
    report = inspect_stack(data, band_names=band_names, dates=dates,
                           target_date=cfg.target_date)
    report.warn()
    dates_ok, bands_ok = report.used_dates, report.used_bands
    if dates_ok.all() and bands_ok.all():
        result = fit_used(data, pixel_m=pixel_m, config=cfg, band_names=band_names,
                          init_shifts_m=init_shifts_m, dates=dates,
                          band_offsets_m=band_offsets_m)
    else:  # the empty dates and bands left out, then put back (NaN bands, weight-0 dates)
        sub = data[dates_ok][:, bands_ok]
        init = None if init_shifts_m is None else np.asarray(init_shifts_m)[dates_ok]
        used_dates = None if dates is None or len(dates) != T else np.asarray(dates)[dates_ok]
        result = fit_used(sub, pixel_m=pixel_m, config=subset_config(cfg, bands_ok),
                          band_names=tuple(np.asarray(band_names)[bands_ok]),
                          init_shifts_m=init, dates=used_dates,
                          band_offsets_m=None if band_offsets_m is None else
                          np.asarray(band_offsets_m)[bands_ok])
        result = expand_result(result, dates=dates_ok, bands=bands_ok, config=cfg,
                               band_names=band_names)
    result.inputs = report
    for line in shift_limit_lines(result.shifts_m, limit_m=MAX_SHIFT_M,
                                  labels=report.date_labels):
        warnings.warn(line, InputWarning, stacklevel=2)
    if result.date_scene is not None and cfg.season_blend:
        result.date_scene = blend_season(result, data, pixel_m=pixel_m, config=cfg,
                                         band_names=band_names, dates=dates)
        result.seconds += result.date_scene.partner[1].seconds  # both fits' time
        result.date_scene = fill_masked(result, data, pixel_m=pixel_m, config=cfg,
                                        band_names=band_names, dates=dates)
        if result.date_scene.fill is not None:
            result.seconds += result.date_scene.fill[1].seconds
    return result


def blend_season(result: FitResult, data: np.ndarray, *, pixel_m: float, config: FitConfig,
                 band_names: tuple[str, ...], dates: Sequence[Any] | np.ndarray | None
                 ) -> DateScene:
    """``result``'s observed-date scene with, as its partner (averaged when rendered), the
    same date's observed scene from a fit of the whole season: the same (T, B, H, W)
    ``data`` without a target date (no time weighting; the band offsets of ``result``).

    Both scenes reproduce the date's observation to within the noise; they differ in the
    fine detail, borrowed from the dates near in time or from the whole season. The
    time-weighted scene is moved into the season fit's frame
    (:func:`~splatsr.core.products.observed.frame_shift`), so the product is in the season
    fit's frame and the mean is not of two displaced copies (docs/date_products.md).
    """
    own = result.date_scene
    season = companion_fit(result, data, pixel_m=pixel_m, band_names=band_names, dates=dates,
                           config=replace(config, target_date=None, time_window_days=None,
                                          median_anchor=False))
    scene = date_scene(season, data[own.index], own.index)
    return replace(own, partner=(scene, season),
                   frame_shift_m=frame_shift(result, season, own.index))


def fill_masked(result: FitResult, data: np.ndarray, *, pixel_m: float, config: FitConfig,
                band_names: tuple[str, ...], dates: Sequence[Any] | np.ndarray | None
                ) -> DateScene:
    """``result``'s observed-date scene (blended, :func:`blend_season`) with, where the
    date is masked beyond its bridged gaps (:func:`~splatsr.core.dates.bridged`), the same
    date's scene from a fit of the dates near in time without the own window, moved into
    the season fit's frame (a third fit; none when the date is seen everywhere but narrow
    gaps).

    The fit with the own window follows the date alone where it is seen; inside a large
    cloud over the date it carried the other dates' content into the date's radiometry
    0.7-0.8 dB less well than a plain time-weighted fit (docs/date_products.md)."""
    own = result.date_scene
    masked = ~bridged(np.isfinite(data[own.index]))  # (B, H, W)
    if not masked.any():
        return own
    plain = companion_fit(result, data, pixel_m=pixel_m, band_names=band_names, dates=dates,
                          config=replace(config, season_blend=False))  # plain time-weighted
    scene = replace(plain.date_scene,
                    frame_shift_m=frame_shift(plain, own.partner[1], own.index))
    return replace(own, fill=(scene, plain, masked))


def companion_fit(result: FitResult, data: np.ndarray, *, pixel_m: float, config: FitConfig,
                  band_names: tuple[str, ...], dates: Sequence[Any] | np.ndarray | None
                  ) -> FitResult:
    """A second fit of the same ``data`` with ``config`` and ``result``'s band offsets, its
    input findings unsaid (the first fit said them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        return fit_arrays(data, pixel_m=pixel_m, config=config, band_names=band_names,
                          dates=dates, band_offsets_m=result.band_offsets_m)


def fit_used(data: np.ndarray, *, pixel_m: float, config: FitConfig,
             band_names: tuple[str, ...], init_shifts_m: np.ndarray | None,
             dates: Sequence[Any] | np.ndarray | None,
             band_offsets_m: np.ndarray | None = None) -> FitResult:
    """:func:`fit_arrays` of a stack in which every date and band has a valid pixel."""
    cfg = config.with_change_cell(data, pixel_m=pixel_m).with_time_window(data, dates=dates)
    T, B, H, W = data.shape
    valid = valid_mask(data)
    time_w = target_time_weights(dates, n_obs=T, target_date=cfg.target_date,
                                 window_days=cfg.time_window_days)
    scaling = BandScaling.from_data(data, valid)
    y = scaling.normalise(data, valid)
    offsets = None
    if cfg.band_offsets and B > 1:
        offsets = band_offsets(data, pixel_m=pixel_m) if band_offsets_m is None else \
            np.asarray(band_offsets_m, np.float64)
    bright = bright_outliers(y, valid, dates)
    fit_valid = valid if bright is None else valid & ~bright.outlier[:, None, None, None]
    valid_fraction = valid.reshape(T, -1).mean(axis=1)  # (T,)
    own = acquisition_index(dates, target_date=cfg.target_date, valid_fraction=valid_fraction)
    own_factor = own_pixel_weight(cfg, fit_valid, dates=dates, own=own, time_weight=time_w)
    fit_cfg = cfg if own_factor is None else \
        replace(cfg, tv_weight=cfg.tv_weight * cfg.own_prior_factor)  # one of two in a mean
    torch.manual_seed(cfg.seed)
    obj = Objective(y, fit_valid, config=fit_cfg, device=torch_device(cfg.device),
                    init_shifts_m=init_shifts_m, time_weight=time_w, pixel_m=pixel_m,
                    band_offsets_m=offsets)
    if own_factor is not None:
        obj.set_pixel_factor(own_factor)
    levels = level_schedule(cfg, height=H, width=W, pixel_m=pixel_m)
    log = FitLog(total=sum(lv.adam_steps + lv.lbfgs_iters for lv in levels),
                 progress=cfg.progress)
    for level in levels:
        obj.set_level(start_weights(obj, level, y, fit_valid), level.grid)
        fit_level(obj, level, log)
    log.close()
    prior = None if bright is None else bright.weights()
    result = collect_result(obj, scaling, band_names=band_names, log=log,
                            gauge=gauge_weights(obj, valid, prior))
    if fit_cfg is not cfg:  # the settings as given, and the weight used beside them
        result.config, result.prior_weight = cfg, fit_cfg.tv_weight
    if prior is not None:  # the outlier's weight in the product (consensus.median_weights)
        result.obs_weights = result.obs_weights * prior
    result.valid_fraction = valid_fraction
    pred = result.predict()
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a date without a valid pixel
        result.residual_rms = np.sqrt(np.nanmean(((pred - data) ** 2).reshape(T, -1), axis=1))
    if cfg.observed_date and own is not None:
        result.date_scene = date_scene(result, data[own], own)
    elif cfg.median_anchor:
        result.anchor = anchor_correction(result, data, pred, pixel_m=pixel_m)
    return result


def own_pixel_weight(cfg: FitConfig, valid: np.ndarray, *,
                     dates: Sequence[Any] | np.ndarray | None, own: int | None,
                     time_weight: np.ndarray | None) -> np.ndarray | None:
    """(T, B, H, W) factor of the (T,) ``time_weight`` of an observed-date fit blended with
    the season (:func:`~splatsr.core.dates.own_date_factor`: the date's own window,
    ``cfg.own_window_days``, where it is valid); None for any other fit."""
    if own is None or not (cfg.observed_date and cfg.season_blend):
        return None
    narrow = target_time_weights(dates, n_obs=len(valid), target_date=cfg.target_date,
                                 window_days=cfg.own_window_days)
    return own_date_factor(valid, own=own, wide=time_weight, narrow=narrow)


def bright_outliers(y: np.ndarray, valid: np.ndarray,
                    dates: Sequence[Any] | np.ndarray | None) -> BrightVerdict | None:
    """The short-stack rule (:func:`~splatsr.core.outliers.short_stack_outliers`) on the
    normalised data ``y`` (T, B, H, W), its finding said; None beyond a short stack."""
    T = len(y)
    if T > SHORT_STACK:
        return None
    verdict = short_stack_outliers(np.where(valid, y, np.nan))
    for line in verdict.lines(date_labels(dates, T)):
        warnings.warn(line, InputWarning, stacklevel=4)
    return verdict


def anchor_correction(result: FitResult, data: np.ndarray, pred: np.ndarray, *,
                      pixel_m: float) -> DateMedianAnchor | PixelAnchor:
    """The anchor of :mod:`~splatsr.core.products.consensus`: the consensus to the median of the
    dates, a target-date scene to the time-weighted location of the dates' residuals."""
    if result.time_weight is None:
        return median_anchor(data, result.seen(), obs_weights=result.obs_weights,
                             noise_level=result.noise_level, pixel_m=pixel_m)
    corr = target_correction(data, pred, gains=result.gains, noise_level=result.noise_level,
                             date_weights=result.time_weight * result.obs_weights)
    return PixelAnchor(corr, pixel_m)


def gauge_weights(obj: Objective, valid: np.ndarray, prior: np.ndarray | None
                  ) -> np.ndarray | None:
    """(T,) date weights of the radiometric reference (:func:`~splatsr.core.robust.regauge`),
    or None (the plain median over the dates: the consensus of a stack without outliers).

    A target-date fit weighs each date by its time weight x its robust weight x its share of
    valid pixels, so a nearly empty or hazy date nearest the target does not set the
    radiometry alone; ``prior`` (0 for a short stack's bright outlier) multiplies in."""
    if obj.time_w is None and prior is None:
        return None
    w = np.ones(valid.shape[0]) if obj.time_w is None else \
        obj.time_w.double().cpu().numpy() * obj.obs_w.double().cpu().numpy() * \
        valid.reshape(len(valid), -1).mean(axis=1)
    return w if prior is None else w * prior


def collect_result(obj: Objective, scaling: BandScaling, *, band_names: tuple[str, ...],
                   log: FitLog, gauge: np.ndarray | None = None) -> FitResult:
    """The fitted state of ``obj`` back in reflectance, in the median date's radiometry
    (the weighted median with the date weights ``gauge``, :func:`gauge_weights`)."""
    cfg = obj.cfg
    out_frac = obj.outlier_fraction()
    with torch.no_grad():
        shifts = obj.shifts().double().cpu().numpy()
        w_n = obj.w.detach().double().cpu().numpy()
        a_np = obj.log_gain.detach().double().cpu().numpy()
        o_np = obj.offset.detach().double().cpu().numpy()
    # back to reflectance: the offsets scale with the data, the gains are unit-free
    time_w = None if obj.time_w is None else obj.time_w.double().cpu().numpy()
    w_n, gains, offs = regauge(w_n, a_np, o_np, gauge)
    mean, scale = scaling.mean, scaling.scale
    w_phys = w_n * scale[:, None, None] + mean[:, None, None]
    offs = offs * scale[None] + mean[None] * (1.0 - gains)
    change = None
    if obj.change is not None:  # additive: in reflectance it scales with the data
        c = centred(obj.change.detach()).double().cpu().numpy()
        change = (c * scale[None, :, None, None]).astype(np.float32)
    return FitResult(weights=w_phys.astype(np.float32), shifts_m=shifts, grid=obj.grid,
                     config=cfg, band_names=band_names,
                     residual_rms=np.zeros(len(shifts)), history=log.history,
                     seconds=time.perf_counter() - log.t0,
                     gains=gains if cfg.radiometry else None,
                     offsets=offs if cfg.radiometry else None,
                     obs_weights=obj.obs_w.double().cpu().numpy(),
                     outlier_fraction=out_frac.double().cpu().numpy(),
                     noise_level=obj.sigma * scale, time_weight=time_w, change=change,
                     change_grid=obj.change_grid,
                     band_offsets_m=None if obj.band_off is None else
                     obj.band_off.double().cpu().numpy())
