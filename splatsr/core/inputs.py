"""The input guard in front of every fit: what a stack lacks, found before the fit and said.

A stack can be well-formed and still degenerate: a band with no valid pixel in any date, a
date with no valid pixel at all, a target date outside the dates' span. Each is inspected
once here (:func:`inspect_stack`) and answered the same way on the whole-stack and the tiled
routes: an empty band comes out NaN in every output, an empty date is left out of the fit
(marked ``used`` 0 in the shifts CSV), a far target date gets a line saying how many days it
lies from the data. :meth:`InputReport.lines` are those sentences (the command prints them);
:meth:`InputReport.warn` raises each once as an :class:`InputWarning` for API users.

Shifts found at the search limit (:data:`~splatsr.core.model.MAX_SHIFT_M`) are said after
the fit (:func:`shift_limit_lines`): the date may be displaced further than the fit can reach.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splatsr.core.dates import day_numbers, parse_target_date

# A shift within this share of the search limit counts as "at the limit".
LIMIT_SHARE = 0.98


class InputWarning(UserWarning):
    """A degenerate input that the fit answers (empty band or date, far target, ...)."""


@dataclass(frozen=True)
class InputReport:
    """What :func:`inspect_stack` found in a (T, B, H, W) stack."""

    band_names: tuple[str, ...]  # (B,)
    date_labels: tuple[str, ...]  # (T,) the dates as YYYY-MM-DD, else "date 1" ...
    empty_bands: np.ndarray  # (B,) bool: no valid pixel in any date
    empty_dates: np.ndarray  # (T,) bool: no valid pixel in any band
    target_date: str | None = None
    target_gap_days: float = 0.0  # > 0 after the last date, < 0 before the first, else 0
    nearest_label: str = ""  # the first or last date, when the target lies outside

    @property
    def used_dates(self) -> np.ndarray:
        """(T,) bool: the dates the fit uses."""
        return ~self.empty_dates

    @property
    def used_bands(self) -> np.ndarray:
        """(B,) bool: the bands the fit uses (the others come out NaN)."""
        return ~self.empty_bands

    @property
    def degenerate(self) -> bool:
        """Whether anything was found."""
        return bool(self.empty_bands.any() or self.empty_dates.any()
                    or self.target_gap_days != 0.0)

    def lines(self) -> list[str]:
        """One sentence per finding, for the command's summary."""
        out = []
        if self.empty_bands.any():
            names = ", ".join(b for b, e in zip(self.band_names, self.empty_bands) if e)
            out.append(f"band(s) {names} have no valid pixel in any date: they are NaN in "
                       "every output")
        if self.empty_dates.any():
            names = ", ".join(d for d, e in zip(self.date_labels, self.empty_dates) if e)
            out.append(f"{int(self.empty_dates.sum())} date(s) have no valid pixel and are "
                       f"left out of the fit: {names} (used = 0 in the shifts CSV)")
        gap = self.target_gap_days
        if gap != 0.0:
            where = "after the last" if gap > 0 else "before the first"
            out.append(f"target date {self.target_date} is {abs(gap):.0f} days {where} "
                       f"observation ({self.nearest_label}): the result is an extrapolation")
        return out

    def warn(self, *, stacklevel: int = 3) -> None:
        """Each of :meth:`lines` as an :class:`InputWarning`."""
        for line in self.lines():
            warnings.warn(line, InputWarning, stacklevel=stacklevel)


def date_label(day: float) -> str:
    """Days since 1970-01-01 -> ``YYYY-MM-DD``."""
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=int(np.floor(day)))).isoformat()


def date_labels(dates: Sequence[Any] | np.ndarray | None, n: int) -> tuple[str, ...]:
    """(n,) the dates as ``YYYY-MM-DD`` for messages, or ``date 1`` ... without them."""
    if dates is None or len(dates) != n:
        return tuple(f"date {t + 1}" for t in range(n))
    return tuple(date_label(d) for d in day_numbers(dates))


def target_gap(days: np.ndarray, target_day: float) -> tuple[float, int]:
    """(days outside the span of ``days``, signed: > 0 after the last; index of the date at
    that end), or (0, -1) when ``target_day`` is within the span (to the day)."""
    last, first = int(np.argmax(days)), int(np.argmin(days))
    after, before = target_day - days[last], days[first] - target_day
    if after >= 1.0:
        return float(after), last
    if before >= 1.0:
        return -float(before), first
    return 0.0, -1


def inspect_stack(data: np.ndarray, *, band_names: Sequence[str] | None = None,
                  dates: Sequence[Any] | np.ndarray | None = None,
                  target_date: str | None = None) -> InputReport:
    """Inspect a (T, B, H, W) stack (NaN invalid), its dates and the target date.

    Cheap (one pass of ``isfinite``); no warnings of its own. ``dates`` may be None (no date
    labels or target check then).
    """
    T, B = data.shape[:2]
    seen = np.isfinite(data).any(axis=(2, 3))  # (T, B)
    return report_from_seen(seen, band_names=band_names, dates=dates,
                            target_date=target_date)


def report_from_seen(seen: np.ndarray, *, band_names: Sequence[str] | None = None,
                     dates: Sequence[Any] | np.ndarray | None = None,
                     target_date: str | None = None) -> InputReport:
    """:func:`inspect_stack` from ``seen`` (T, B): whether date t has any valid pixel in
    band b (the tiled route builds it one observation at a time)."""
    T, B = seen.shape
    names = tuple(band_names or (f"band{i + 1}" for i in range(B)))
    days = day_numbers(dates) if dates is not None and len(dates) == T else None
    labels = date_labels(dates, T)
    gap, end = 0.0, -1
    if target_date is not None and days is not None:
        gap, end = target_gap(days, parse_target_date(target_date))
    return InputReport(band_names=names, date_labels=labels,
                       empty_bands=~seen.any(axis=0), empty_dates=~seen.any(axis=1),
                       target_date=target_date, target_gap_days=gap,
                       nearest_label=labels[end] if end >= 0 else "")


def shift_limit_lines(shifts_m: np.ndarray, *, limit_m: float,
                      labels: Sequence[str] | None = None) -> list[str]:
    """A sentence naming the dates whose fitted shift (T, 2) reached the search limit."""
    s = np.asarray(shifts_m, np.float64)
    at = np.isfinite(s).all(axis=1) & (np.abs(s).max(axis=1) >= LIMIT_SHARE * limit_m)
    if not at.any():
        return []
    labels = list(labels or (f"date {t + 1}" for t in range(len(s))))
    names = ", ".join(lbl for lbl, a in zip(labels, at) if a)
    return [f"the shift of {names} reached the search limit of {limit_m:g} m: the date may "
            "be misregistered by more than the fit can correct"]
