"""The series product: every date's observed-date scene, from fits of consecutive dates.

Fine texture changes over a season (crops grow, fields are ploughed), so the detail a date
can borrow is that of the dates near it in time. The series therefore splits the dates,
in time order, into segments of about :data:`SEGMENT_DATES` effective dates (dates weighted
by their share of valid pixels) and fits each segment once; every date's scene is then the
observed-date scene (:mod:`~.observed`) of its segment's fit. The automatic choices that
need many dates are made once on the whole stack and shared by the segments: the change
layer (:meth:`~splatsr.core.config.FitConfig.with_change_cell`) and the band offsets.
The fits together cost about one fit of the whole stack (each step's cost grows with the
number of dates).

Measured with ``benchmarks/date_products.py`` (mean gain over each date's own bicubic; the
size was chosen on 3 tuning windows of 8, 10 and 12 real dates): one fit of all dates +1.75
/ +1.47 dB on the tuning / report windows, these segments +2.15 / +1.63 (docs/date_products.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from splatsr.core.bands import band_offsets
from splatsr.core.checks import MIN_OBSERVATIONS
from splatsr.core.config import FitConfig
from splatsr.core.dates import day_numbers
from splatsr.core.products.observed import date_scene
from splatsr.core.result import FitResult
from splatsr.core.solver import fit_arrays
from splatsr.errors import ConfigError

SEGMENT_DATES = 4.0  # effective dates per segment fit (chosen on the tuning windows)


@dataclass
class Segment:
    """A fit of some of the stack's dates, and the dates whose scenes it renders."""

    dates: np.ndarray  # (n,) indices in the stack of the dates fitted, in the fit's order
    fit: FitResult  # the fit of data[dates]
    shows: np.ndarray | None = None  # (m,) the stack dates it renders (None: all of dates)

    def renders(self, t: int) -> bool:
        """Whether this segment renders stack date ``t``."""
        return bool(np.any((self.dates if self.shows is None else self.shows) == t))

    def index_of(self, t: int) -> int:
        """Stack date ``t``'s index in this segment's fit."""
        return int(np.flatnonzero(self.dates == t)[0])

    def scene(self, data: np.ndarray, t: int, resolution_m: float) -> np.ndarray:
        """(B, H', W') stack date ``t``'s observed-date scene (``data`` the whole stack)."""
        i = self.index_of(t)
        return date_scene(self.fit, data[t], i).render(self.fit, resolution_m)


@dataclass(frozen=True)
class SeriesPlan:
    """What the segment fits share, decided once on the whole stack."""

    config: FitConfig  # change layer resolved; no median anchor when there are segments
    groups: tuple[np.ndarray, ...]  # the stack dates each segment renders, in time order
    band_offsets_m: np.ndarray | None = None  # (B, 2) shared band offsets, or None


def segment_dates(days: np.ndarray, valid_fraction: np.ndarray, *,
                  per_segment: float = SEGMENT_DATES) -> list[np.ndarray]:
    """Consecutive groups (in time) of the dates' indices, each holding about
    ``per_segment`` effective dates (valid fractions summed); one group when the stack
    holds fewer than two segments' worth."""
    order = np.argsort(np.asarray(days, np.float64), kind="stable")
    vf = np.asarray(valid_fraction, np.float64)[order]
    k = max(1, int(vf.sum() // per_segment))
    # a segment ends with the date whose running total reaches its share (rounding aside)
    edges = np.searchsorted(np.cumsum(vf), vf.sum() * np.arange(1, k) / k + 1e-9,
                            side="right")
    return [np.sort(g) for g in np.split(order, edges) if len(g)]


def series_plan(config: FitConfig, *, dates: Sequence[Any], valid_fraction: np.ndarray,
                band_offsets_m: np.ndarray | None = None) -> SeriesPlan:
    """The :class:`SeriesPlan` of a stack observed on ``dates`` with (T,) ``valid_fraction``;
    ``config`` has its change layer resolved on the whole stack."""
    if config.target_date is not None:
        raise ConfigError("the series renders every date from fits of the season; leave "
                          "out target_date (--target-date)")
    groups = segment_dates(day_numbers(dates), valid_fraction)
    cfg = config if len(groups) == 1 else replace(config, median_anchor=False)
    return SeriesPlan(cfg, tuple(groups), band_offsets_m)


def plan_from_data(data: np.ndarray, *, pixel_m: float, config: FitConfig,
                   dates: Sequence[Any]) -> SeriesPlan:
    """:func:`series_plan` with the change layer and band offsets chosen on (T, B, H, W)
    ``data`` (the dates with a valid pixel)."""
    valid = np.isfinite(data).reshape(len(data), -1).mean(axis=1)  # (T,)
    cfg = config.with_change_cell(data[valid > 0], pixel_m=pixel_m)
    offsets = band_offsets(data[valid > 0], pixel_m=pixel_m) \
        if cfg.band_offsets and data.shape[1] > 1 else None
    return series_plan(cfg, dates=dates, valid_fraction=valid, band_offsets_m=offsets)


def with_seen_dates(group: np.ndarray, seen: np.ndarray, days: np.ndarray) -> np.ndarray:
    """``group`` (stack date indices) plus the dates nearest in time to it that have valid
    pixels, until :data:`MIN_OBSERVATIONS` of its dates do (``seen`` (T,) bool): a segment
    whose dates are clouded over a tile borrows its neighbours' there."""
    need = MIN_OBSERVATIONS - int(seen[group].sum())
    if need <= 0:
        return group
    centre = float(np.mean(days[group]))
    others = np.flatnonzero(seen & ~np.isin(np.arange(len(seen)), group))
    nearest = others[np.argsort(np.abs(days[others] - centre), kind="stable")][:need]
    return np.sort(np.concatenate([group, nearest]))


def fit_segments(data: np.ndarray, *, pixel_m: float, plan: SeriesPlan, dates: Sequence[Any],
                 band_names: tuple[str, ...] | None = None) -> list[Segment]:
    """One fit per group of ``plan`` of (T, B, H, W) ``data`` observed on ``dates`` (each
    group with at least two dates that have valid pixels, borrowed from its neighbours in
    time where it has fewer)."""
    seen = np.isfinite(data).reshape(len(data), -1).any(axis=1)  # (T,)
    days = np.asarray(day_numbers(dates), np.float64)
    out = []
    for g in plan.groups:
        fitted = with_seen_dates(g, seen, days)
        res = fit_arrays(data[fitted], pixel_m=pixel_m, config=plan.config,
                         band_names=band_names, dates=[dates[k] for k in fitted],
                         band_offsets_m=plan.band_offsets_m)
        out.append(Segment(fitted, res, None if len(fitted) == len(g) else g))
    return out
