"""The series product: every date's observed-date scene, from fits of consecutive dates.

Fine texture changes over a season (crops grow, fields are ploughed), so the detail a date
can borrow is that of the dates near it in time. The series therefore splits the dates,
in time order, into segments of about :data:`SEGMENT_DATES` effective dates (dates weighted
by their share of valid pixels) and fits each segment once; every date's scene is then the
observed-date scene (:mod:`~.observed`) of its segment's fit. The automatic choices that
need many dates are made once on the whole stack and shared by the segments: the change
layer (:meth:`~splatsr.core.config.FitConfig.with_change_cell`) and the band offsets.
Each fit after the first also fits a tie date of the segment before it, which puts every
segment's scenes in one frame (:func:`tie_frames`). The fits together cost about one fit
of the whole stack (each step's cost grows with the number of dates), plus the tie dates.

Measured with ``benchmarks/date_products.py`` (mean gain over each date's own bicubic; the
size was chosen on 3 tuning windows of 8, 10 and 12 real dates): one fit of all dates +1.75
/ +1.47 dB on the tuning / report windows, these segments +2.15 / +1.63 before they were
tied, +1.87 / +1.64 tied, at 1.0-1.8 x the time of one fit of all dates
(docs/date_products.md).
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
from splatsr.core.products.observed import DateScene, date_scene, frame_shift
from splatsr.core.products.uncertainty import sigma_map
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
    # (dx_m, dy_m) where the series' frame lies in this fit's (each fit's shifts are
    # mean-zero over its own dates): its scenes are rendered displaced by it
    frame_shift_m: tuple[float, float] = (0.0, 0.0)

    def renders(self, t: int) -> bool:
        """Whether this segment renders stack date ``t``."""
        return bool(np.any((self.dates if self.shows is None else self.shows) == t))

    def index_of(self, t: int) -> int:
        """Stack date ``t``'s index in this segment's fit."""
        return int(np.flatnonzero(self.dates == t)[0])

    def date_scene(self, data: np.ndarray, t: int) -> DateScene:
        """Stack date ``t``'s observed-date scene, in the series' frame (``data`` the whole
        (T, B, H, W) stack)."""
        return replace(date_scene(self.fit, data[t], self.index_of(t)),
                       frame_shift_m=self.frame_shift_m)

    def shift_m(self, t: int) -> np.ndarray:
        """(2,) stack date ``t``'s shift in the series' frame (NaN: left out of the fit)."""
        return self.fit.reported_shifts_m()[self.index_of(t)] - np.asarray(self.frame_shift_m)

    def scene(self, data: np.ndarray, t: int, resolution_m: float) -> np.ndarray:
        """(B, H', W') stack date ``t``'s observed-date scene (``data`` the whole stack)."""
        return self.date_scene(data, t).render(self.fit, resolution_m)

    def sigma(self, data: np.ndarray, t: int, resolution_m: float, *, mode: str = "full",
              scene: np.ndarray | None = None) -> np.ndarray:
        """(B, H', W') float32 the 1-sigma map of :meth:`scene`, in the series' frame
        (:func:`~splatsr.core.products.uncertainty.sigma_map`; NaN where ``scene`` is)."""
        return sigma_map(self.fit, data[self.dates], resolution_m=resolution_m, mode=mode,
                         own=self.index_of(t), scene=scene, frame_shift_m=self.frame_shift_m)


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
    time where it has fewer), in one frame.

    Each fit after the first also fits a tie date of the group before it
    (:func:`tie_date`); where the tie sits in the two fits says how their frames lie, and
    every segment's scenes are moved into the mean frame of the stack's dates
    (:func:`tie_frames`): one co-registered series instead of a step at each boundary."""
    seen = np.isfinite(data).reshape(len(data), -1).any(axis=1)  # (T,)
    valid = np.isfinite(data).reshape(len(data), -1).mean(axis=1)  # (T,)
    days = np.asarray(day_numbers(dates), np.float64)
    out, ties = [], []
    for k, g in enumerate(plan.groups):
        fitted = with_seen_dates(g, seen, days)
        tie = None if k == 0 else tie_date(plan.groups[k - 1], valid)
        if tie is not None and tie not in fitted:
            fitted = np.sort(np.append(fitted, tie))
        ties.append(tie)
        res = fit_arrays(data[fitted], pixel_m=pixel_m, config=plan.config,
                         band_names=band_names, dates=[dates[j] for j in fitted],
                         band_offsets_m=plan.band_offsets_m)
        out.append(Segment(fitted, res, None if len(fitted) == len(g) else g))
    return tie_frames(out, ties)


def tie_date(group: np.ndarray, valid_fraction: np.ndarray) -> int | None:
    """The date of ``group`` that ties the next segment's frame to its own: the latest of
    those at least half as clear as its clearest; None when none has a valid pixel."""
    vf = np.asarray(valid_fraction, np.float64)[group]
    if vf.max() <= 0:
        return None
    return int(group[np.flatnonzero(vf >= 0.5 * vf.max())[-1]])


def tie_frames(segments: list[Segment], ties: list[int | None]) -> list[Segment]:
    """``segments`` with their :attr:`Segment.frame_shift_m` set: segment ``k``'s frame
    lies at ``o_k`` in the first's, ``o_k = o_(k-1) + s_(k-1) - s_k`` with ``s`` the tie
    date's shift in either fit (``ties[k]``, :func:`frame_shift`; no tie: the same frame),
    and the series' frame is the mean geometry of the dates, each at its shift in the
    segment that renders it."""
    origin = np.zeros((len(segments), 2))  # (K, 2) o_k
    for k in range(1, len(segments)):
        t, before, seg = ties[k], segments[k - 1], segments[k]
        step = (0.0, 0.0) if t is None else frame_shift(before.fit, seg.fit, before.index_of(t),
                                                        seg.index_of(t))
        origin[k] = origin[k - 1] + np.nan_to_num(step)
    where = [o + s.fit.reported_shifts_m()[[s.index_of(t) for t in (
        s.dates if s.shows is None else s.shows)]] for s, o in zip(segments, origin)]
    mean = np.nanmean(np.concatenate(where), axis=0)  # (2,) the dates' mean, in the first's
    return [replace(s, frame_shift_m=(float(mean[0] - o[0]), float(mean[1] - o[1])))
            for s, o in zip(segments, origin)]
