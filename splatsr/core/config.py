"""Settings of one fit: :class:`FitConfig` (one field per knob, each with its default) and
:data:`PLAIN`, the least-squares settings behind ``splatsr fit --plain``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from splatsr.core.change import change_ratio
from splatsr.core.dates import auto_window_days, day_numbers, parse_target_date
from splatsr.core.memory import resolve_device
from splatsr.core.outliers import hazy_dates
from splatsr.core.prior import PRIORS
from splatsr.core.robust import check_loss
from splatsr.errors import ConfigError

# The plain settings (``splatsr fit --plain``): least squares, no per-date radiometry, no date
# weights. The default is robust (Cauchy loss, a gain/offset per date and band, date
# weights): on stacks with haze, clouds and drift the plain fit loses 10-15 dB to it, while on
# clean stacks simulated from real texture the robust fit costs ~0.25 dB (+2.96 vs +3.21 dB
# over bicubic at 5 m, 3 crops, 16 dates; docs/quality.md).
# The automatic change layer is off too (0): plain is the static least-squares model.
PLAIN = dict(loss="l2", radiometry=False, reweight=False, change_cell_m=0.0)
# change layer of a target-date fit unless set: +0.23 dB against the held-out date over the
# 8 real-series windows (40 m; 60 m +0.21, 20 m +0.19), no cost on clean stacks
# (docs/dynamic_scene.md)
TARGET_CHANGE_CELL_M = 40.0
# The consensus gets a change layer when the stack changes at field scale:
# splatsr.core.change.change_ratio at TARGET_CHANGE_CELL_M above this (measured: <= 0.85 on
# static simulated stacks and pure noise, >= 5.5 on 20 real windows); on pure noise a layer
# raised the output's spread (hallucination ratio 1.13), hence the test.
CONSENSUS_CHANGE_RATIO = 3.0
# That layer has a node per pixel and a tenth of the roughness penalty: every date may differ
# from the shared scene by a field smooth at the pixel scale, while what lies below the pixel
# (seen through the sub-pixel shifts) stays shared. Against the median composite of 20 real
# windows +0.39 / +0.41 dB over a 40 m layer; ~0.15 dB less on stacks with unmasked clouds,
# which the layer lets keep their weight (docs/dynamic_scene.md).
CONSENSUS_CHANGE_WEIGHT = 0.1
# prior="auto": with few valid dates (splatsr.core.prior_choice) the Huber prior at the
# weight that predicts left-out dates best, else DEFAULT_PRIOR
AUTO_PRIOR = "auto"
# the vectorial TV: one gradient magnitude over the bands, so their edges fall together
# (fewer colour fringes) and a faint edge in one band is held by the others. Against the
# per-band TV on the 4-band real windows (docs/date_products.md): --target-date on the
# centred windows +2.23 / +2.28 vs +2.10 / +2.18 dB over bicubic of the date, --every-date
# +2.07 / +2.07 vs +2.00 / +1.99, the consensus vs the median composite +1.74 vs +1.71;
# on one band it is the TV
DEFAULT_PRIOR = "vtv"


@dataclass
class FitConfig:
    """Settings of one fit. Every field has a default that works for Sentinel-2 10 m."""

    psf_sigma_m: float = 4.0  # Gaussian PSF width; S2's 10 m MTF suggests 3-4 m
    # Gaussian PSF width per band (m, one per band in the stack's order), for bands whose
    # optics differ and are known; None = psf_sigma_m for every band (held-out dates do not
    # tell the bands' widths apart reliably: docs/quality.md)
    band_psf_sigma_m: tuple[float, ...] | None = None
    splat_spacing_m: float = 2.0  # distance between splat centres at the finest level
    splat_sigma_m: float | None = None  # splat width; None = 0.8 x the spacing
    coarse_levels: int = 1  # extra levels before the finest, each at twice the spacing
    adam_steps: int = 60  # Adam warm-up steps at the finest level (half at coarse levels)
    adam_lr: float = 0.3  # Adam step size of the splat weights (noise units)
    adam_lr_shifts_m: float = 0.05  # Adam step size of the shifts (m) and gains/offsets
    lbfgs_iters: int = 60  # L-BFGS iterations (at most) at the finest level, half at coarse
    lbfgs_history: int = 20  # L-BFGS memory (pairs of vectors)
    tv_weight: float = 0.05  # smoothed-TV weight, in units of the residual noise level; 0 = off
    fit_shifts: bool = True  # optimise the per-observation shifts (else keep the initial ones)
    loss: str = "cauchy"  # data term: robust "cauchy" (default) / "charbonnier", or "l2"
    robust_scale: float = 2.385  # loss scale in units of the residual noise level
    radiometry: bool = True  # fit a gain and an offset per observation and band
    reweight: bool = True  # down-weight observations whose residuals are unusually large
    noise_from_residuals: bool = True  # TV weight and loss scale in the residuals' noise level
    device: str = "auto"  # "auto", "cpu" or "cuda"
    seed: int = 0  # seeds torch for reproducible fits
    progress: bool = False  # show a progress bar on stderr
    # the scene as of this day, "YYYY-MM-DD" (need not be a stack date): dates are weighted
    # by a Gaussian of their distance in days to it; None = the season's consensus (all equal)
    target_date: str | None = None
    # width (Gaussian sigma, days) of that weighting; None = automatic: 3 x the distance from
    # the target to the nearest clear date, within 10-40 days (see with_time_window())
    time_window_days: float | None = None
    # change layer: each date and band may differ from the static scene by a smooth field
    # on a node lattice of this spacing (metres, from the pixel size to ~80 m); 0 = off
    # (scalar gain and offset per date only); None = automatic: TARGET_CHANGE_CELL_M with a
    # target date; for the consensus a node per pixel where the stack changes at field
    # scale, else off (see with_change_cell())
    change_cell_m: float | None = None
    # roughness penalty of the change layer (noise units); None = automatic:
    # CONSENSUS_CHANGE_WEIGHT for the consensus's automatic layer, else 1
    change_weight: float | None = None
    # per-band sub-pixel offsets against the first band, shared by the dates, estimated from
    # the bands' common edges before the fit (kept only where significant over the dates);
    # every output band is then in the first band's frame
    band_offsets: bool = True
    # prior on the scene: "vtv" (DEFAULT_PRIOR: vectorial TV, couples the bands' edges),
    # "tv" (smoothed total variation per band), "huber" (quadratic below one noise unit:
    # smooth ramps instead of plateaus) or "auto" (AUTO_PRIOR: chosen by splatsr.fit from
    # held-out dates before the fit, splatsr.core.prior_choice.resolve_prior).
    # Measured on known truth (benchmarks/few_dates.py, docs/few_dates.md; 3 and 5 dates,
    # 128 px crops): "auto" vs "tv" on the held-out crop +1.34 vs +1.29 dB over bicubic of the
    # median, flat-plateau excess 0.013 vs 0.101; on the two tuning crops +0.84 vs +0.95 dB,
    # 0.018 vs 0.102. More than 5 dates (prior_choice.MAX_DATES): DEFAULT_PRIOR.
    prior: str = DEFAULT_PRIOR
    # take the pixel-scale content from the per-pixel median of the dates (with a target
    # date: of their residuals, time- and robust-weighted) and the detail from the fit
    # (splatsr.core.products.consensus); False = the fitted scene as it is
    median_anchor: bool = True
    # when the target date is an acquisition of the stack (the same UTC day), that date's own
    # observation decides the 10 m-scale content: the scene is corrected until its sensor
    # view reproduces that observation to within the noise (splatsr.core.products.observed); False =
    # the time-weighted scene of the other dates
    observed_date: bool = True
    # with observed_date: average that scene with the same date's observed scene from a fit
    # of the whole season (no time weighting; a second fit), so the fine detail is not only
    # that of the dates near in time (+0.2 / +0.46 dB on tuning / report real windows,
    # docs/date_products.md); False = the time-weighted fit's scene alone
    season_blend: bool = True
    # with the season blend, where the observed date is valid the time-weighted fit weighs
    # the dates by a Gaussian of this many days instead of time_window_days: the date is
    # fitted on its own there (and the season's fit lends the detail); deeper inside its
    # masked areas a plain time-weighted fit supplies the date's scene (a third fit). 1 day,
    # against the 10-day window, on real windows centred on clear dates, both with the blend's
    # scenes in one frame: +2.04 / +2.13 vs +1.85 / +2.00 dB over bicubic of the date
    # (chosen on set A, set B held out) (docs/date_products.md)
    own_window_days: float = 1.0
    # that own-window fit is one of the two scenes the blend averages, so it is regularised
    # less: its tv_weight is multiplied by this (FitResult.prior_weight records the product).
    # 0.5 against 1 on the centred windows: +2.10 / +2.17 vs +2.04 / +2.13 dB (chosen on set
    # A, set B held out; the 11 windows +0.02 / +0.06); with the vectorial TV +2.23 / +2.28
    # vs +2.14 / +2.22 (docs/date_products.md)
    own_prior_factor: float = 0.5

    def psf_widths_m(self) -> float | tuple[float, ...]:
        """The renderer's PSF width: one per band when ``band_psf_sigma_m`` is set."""
        return self.psf_sigma_m if self.band_psf_sigma_m is None else \
            tuple(float(v) for v in self.band_psf_sigma_m)

    def widest_psf_m(self) -> float:
        """The widest PSF of any band (metres): it sizes the splat grid's margin."""
        return self.psf_sigma_m if self.band_psf_sigma_m is None else \
            float(max(self.band_psf_sigma_m))

    def check_bands(self, n_bands: int) -> None:
        """Raise :class:`ConfigError` if ``band_psf_sigma_m`` does not give one width per band."""
        if self.band_psf_sigma_m is not None and len(self.band_psf_sigma_m) != n_bands:
            raise ConfigError(f"band_psf_sigma_m gives {len(self.band_psf_sigma_m)} PSF width(s) "
                              f"for a stack of {n_bands} bands; give one per band, or None")

    def change_cell(self) -> float | None:
        """The change layer's spacing in metres, or None when the layer is off (an automatic
        consensus layer is off until :meth:`with_change_cell` has read the data)."""
        if self.change_cell_m is None:
            return TARGET_CHANGE_CELL_M if self.target_date is not None else None
        return self.change_cell_m or None

    def finest_change_cell(self, *, pixel_m: float) -> float | None:
        """The finest change lattice a fit of this config can get, before the data are read
        (memory planning): :meth:`change_cell`, or a node per pixel for an automatic
        consensus layer."""
        if self.change_cell_m is None and self.target_date is None:
            return pixel_m
        return self.change_cell()

    def with_change_cell(self, data: np.ndarray, *, pixel_m: float) -> "FitConfig":
        """This config with the automatic change layer resolved for ``data`` (T, B, H, W):
        ``change_cell_m`` set to the spacing or 0 (off), ``change_weight`` to its penalty.

        A target-date fit gets :data:`TARGET_CHANGE_CELL_M`, roughness weight 1. The
        consensus gets a node per pixel (``pixel_m``) and :data:`CONSENSUS_CHANGE_WEIGHT`
        where :func:`~splatsr.core.change.change_ratio` at :data:`TARGET_CHANGE_CELL_M`
        exceeds :data:`CONSENSUS_CHANGE_RATIO`, else no layer. Values set are kept.
        """
        cell, weight = self.change_cell(), 1.0
        if self.change_cell_m is None and cell is None:  # the consensus: read the data
            cell_px = max(1, round(TARGET_CHANGE_CELL_M / pixel_m))
            if change_ratio(data, cell_px=cell_px) > CONSENSUS_CHANGE_RATIO:
                cell, weight = pixel_m, CONSENSUS_CHANGE_WEIGHT
        if self.change_weight is not None:
            weight = self.change_weight
        return replace(self, change_cell_m=cell or 0.0, change_weight=weight)

    def with_time_window(self, data: np.ndarray, *, dates: Any) -> "FitConfig":
        """This config with an automatic time window resolved for ``data`` (T, B, H, W)
        observed on ``dates``: :func:`~splatsr.core.dates.auto_window_days` (a hazy date,
        :func:`~splatsr.core.outliers.hazy_dates`, is not a clear one); itself without
        a target date, with a window set, or without one date per observation (the fit
        then says what is missing)."""
        if (self.target_date is None or self.time_window_days is not None or dates is None
                or len(dates) != len(data)):
            return self
        valid = np.isfinite(data).reshape(len(data), -1).mean(axis=1)  # (T,)
        valid = np.where(hazy_dates(data), 0.0, valid)  # a hazy date is not a clear one
        window = auto_window_days(day_numbers(dates), valid,
                                  target_day=parse_target_date(self.target_date))
        return replace(self, time_window_days=window)

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a value is out of range."""
        checks = [
            (self.psf_sigma_m >= 0, f"psf_sigma_m must be >= 0, got {self.psf_sigma_m}"),
            (self.band_psf_sigma_m is None or (len(self.band_psf_sigma_m) > 0
                                               and min(self.band_psf_sigma_m) >= 0),
             f"band_psf_sigma_m must be one width >= 0 per band, got {self.band_psf_sigma_m}"),
            (self.splat_spacing_m > 0,
             f"splat_spacing_m must be > 0, got {self.splat_spacing_m}"),
            (self.coarse_levels >= 0, f"coarse_levels must be >= 0, got {self.coarse_levels}"),
            (self.adam_steps >= 0, f"adam_steps must be >= 0, got {self.adam_steps}"),
            (self.lbfgs_iters >= 0, f"lbfgs_iters must be >= 0, got {self.lbfgs_iters}"),
            (self.adam_lr > 0, f"adam_lr must be > 0, got {self.adam_lr}"),
            (self.adam_lr_shifts_m > 0,
             f"adam_lr_shifts_m must be > 0, got {self.adam_lr_shifts_m}"),
            (self.tv_weight >= 0, f"tv_weight must be >= 0, got {self.tv_weight}"),
            (self.own_window_days > 0,
             f"own_window_days must be > 0, got {self.own_window_days}"),
            (self.own_prior_factor > 0,
             f"own_prior_factor must be > 0, got {self.own_prior_factor}"),
            (self.robust_scale > 0, f"robust_scale must be > 0, got {self.robust_scale}"),
            (self.change_cell_m is None or self.change_cell_m >= 0,
             f"change_cell_m must be >= 0 (0 = off) or None (automatic), got "
             f"{self.change_cell_m}"),
            (self.change_weight is None or self.change_weight >= 0,
             f"change_weight must be >= 0 or None (automatic), got {self.change_weight}"),
            (self.time_window_days is None or self.time_window_days > 0,
             f"time_window_days must be > 0 or None (automatic), got "
             f"{self.time_window_days}"),
            (self.device in ("auto", "cpu", "cuda"),
             f"device must be auto, cpu or cuda, got {self.device!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        check_loss(self.loss)
        if self.prior not in (*PRIORS, AUTO_PRIOR):
            raise ConfigError(f"prior must be one of {', '.join(PRIORS)} or {AUTO_PRIOR}; "
                              f"got {self.prior!r}")
        if self.target_date is not None:
            parse_target_date(self.target_date)
        resolve_device(self.device)  # a ConfigError for "cuda" where torch sees none
