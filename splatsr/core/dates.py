"""Observation dates and the target-date weighting of a fit.

With a target date, each observation's data term is weighted by a Gaussian of its distance in
time to the target (``exp(-d**2 / (2 w**2))``, ``d`` in days, ``w`` the time window), scaled
so that the date nearest the target weighs 1: the target need not be a stack date, and a
target far from every date still fits the nearest ones. Without one every date weighs 1
(the season's consensus). The window is set, or chosen from the dates' distances to the
target and how clear they are (:func:`auto_window_days`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from splatsr.errors import ConfigError

DAY_S = 86400.0


def parse_target_date(text: str) -> float:
    """``"YYYY-MM-DD"`` -> days since 1970-01-01 (noon of that day, UTC).

    Raises
    ------
    ConfigError
        If ``text`` is not a valid ``YYYY-MM-DD`` date.
    """
    try:
        if not isinstance(text, str) or len(text) != 10:
            raise ValueError(text)
        day = _dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"target_date must be a date written YYYY-MM-DD, got {text!r}") \
            from None
    return float((day - _dt.date(1970, 1, 1)).days) + 0.5


def day_numbers(dates: Sequence[Any] | np.ndarray) -> np.ndarray:
    """(T,) observation times as float days since 1970-01-01 (UTC).

    ``dates`` are ``numpy.datetime64`` values or ISO-8601 strings (``2019-06-01``,
    ``2019-06-01T10:30:00Z``, ``...+00:00``).

    Raises
    ------
    ConfigError
        If a date cannot be read.
    """
    arr = np.asarray(dates)
    if arr.dtype.kind != "M":
        try:
            arr = np.array([_iso_to_datetime64(str(d)) for d in arr.ravel()])
        except ValueError as e:
            raise ConfigError(f"observation dates must be ISO-8601 (YYYY-MM-DD[Thh:mm:ss]) "
                              f"or numpy datetime64: {e}") from None
    secs = arr.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    return secs / DAY_S


def _iso_to_datetime64(text: str) -> np.datetime64:
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1]
    if len(t) > 19 and t[19] in "+-" or len(t) > 10 and t[-6] in "+-" and t[-3] == ":":
        parsed = _dt.datetime.fromisoformat(t)  # with a UTC offset
        return np.datetime64(parsed.astimezone(_dt.timezone.utc).replace(tzinfo=None), "s")
    return np.datetime64(t, "s")


def time_weights(days: np.ndarray, *, target_day: float, window_days: float) -> np.ndarray:
    """(T,) Gaussian weights of the dates ``days`` around ``target_day``, max 1.

    ``exp(-(d**2 - d_min**2) / (2 window**2))`` with ``d`` the distance in days and
    ``d_min`` the smallest one, so the nearest date weighs 1.
    """
    d = np.abs(np.asarray(days, np.float64) - target_day)
    return np.exp(-(d * d - d.min() ** 2) / (2.0 * window_days ** 2))


# The automatic time window: this many times the distance from the target to the nearest
# clear date (>= CLEAR_FRACTION of its pixels valid; the nearest date if none is), within
# AUTO_WINDOW_DAYS. A near clear date narrows the window towards it; without one the window
# widens to a robust mean over more dates. Against a clear date held out of 20 real windows
# (worldcereal, eo-learn NDVI), dB over bicubic-of-median: fixed 20 days +1.54 / +2.27 (8 /
# 12 windows), automatic +1.75 / +2.31; chosen on those windows (docs/dynamic_scene.md).
AUTO_WINDOW_FACTOR = 3.0
AUTO_WINDOW_DAYS = (10.0, 40.0)
CLEAR_FRACTION = 0.9


def auto_window_days(days: np.ndarray, valid_fraction: np.ndarray, *,
                     target_day: float) -> float:
    """The automatic time window in days for a target ``target_day`` (days since 1970).

    Parameters
    ----------
    days
        (T,) observation times, days since 1970 (:func:`day_numbers`).
    valid_fraction
        (T,) share of each observation's pixels that are valid (not masked).
    """
    d = np.abs(np.asarray(days, np.float64) - target_day)
    clear = np.asarray(valid_fraction) >= CLEAR_FRACTION
    nearest = d[clear].min() if clear.any() else d.min()
    lo, hi = AUTO_WINDOW_DAYS
    return float(np.clip(AUTO_WINDOW_FACTOR * nearest, lo, hi))


def target_time_weights(dates: Sequence[Any] | np.ndarray | None, *, n_obs: int,
                        target_date: str | None, window_days: float) -> np.ndarray | None:
    """(T,) time weights of a fit (:func:`time_weights`), or None without a target date.

    Raises
    ------
    ConfigError
        If ``dates`` is missing while a target date is set, or does not hold ``n_obs`` dates.
    """
    if dates is not None and len(dates) != n_obs:
        raise ConfigError(f"dates must hold one date per observation ({n_obs}), "
                          f"got {len(dates)}")
    if target_date is None:
        return None
    if dates is None:
        raise ConfigError("target_date needs the observation dates: pass dates=... to "
                          "fit_arrays (splatsr.fit passes the stack's)")
    days = day_numbers(dates)
    return time_weights(days, target_day=parse_target_date(target_date),
                        window_days=window_days)


def acquisition_index(dates: Sequence[Any] | np.ndarray | None, *, target_date: str | None,
                      valid_fraction: np.ndarray) -> int | None:
    """Index of the observation acquired on ``target_date`` (the same UTC day), the one with
    the most valid pixels when several are; None without a target or such an observation."""
    if target_date is None or dates is None:
        return None
    day = np.floor(day_numbers(dates))
    same = np.flatnonzero(day == np.floor(parse_target_date(target_date)))
    if len(same) == 0:
        return None
    return int(same[np.argmax(np.asarray(valid_fraction)[same])])


# A gap in the observed date narrower than this (pixels from its nearest valid pixel) is
# bridged from the date itself: the other dates fill only what lies further in. A few
# masked pixels of a clear date are better interpolated from it than painted from dates
# whose state and radiometry differ (set A, 11 real windows centred on clear dates:
# +2.19 dB over bicubic of the date without, +2.43 with 3 px; docs/date_products.md)
GAP_PX = 3.0


def own_date_factor(valid: np.ndarray, *, own: int, wide: np.ndarray, narrow: np.ndarray
                    ) -> np.ndarray:
    """(T, B, H, W) float32 factor of each pixel's time weight in an observed-date fit.

    ``wide`` and ``narrow`` (T,) are the dates' time weights over the fit's window and over
    the date's own (:func:`target_time_weights`). Where the observed date ``own`` is seen
    (``valid`` (T, B, H, W) bool, its gaps narrower than :data:`GAP_PX` pixels included)
    the dates weigh by ``narrow`` instead of ``wide`` (the factor is their ratio, 1 for the
    date itself); further inside its masked areas, by ``wide`` (factor 1). With a window of
    a day the date is fitted on its own where it is seen, and the dates near it fill in
    where it is not (:func:`bridged` says where it counts as seen).
    """
    wide, narrow = np.asarray(wide, np.float64), np.asarray(narrow, np.float64)
    ratio = np.divide(narrow, wide, out=np.zeros_like(narrow), where=wide > 0)  # (T,)
    seen = bridged(np.asarray(valid[own], bool))  # (B, H, W)
    return np.where(seen[None], ratio[:, None, None, None], 1.0).astype(np.float32)


def bridged(seen: np.ndarray) -> np.ndarray:
    """(B, H, W) bool: ``seen`` with its gaps narrower than :data:`GAP_PX` pixels filled
    (a pixel within ``GAP_PX`` of a seen one of its band counts as seen)."""
    seen = np.asarray(seen, bool)
    if seen.all() or not seen.any():
        return seen
    from scipy import ndimage  # here: only an observed date with gaps needs it

    return np.stack([ndimage.distance_transform_edt(~b) <= GAP_PX if b.any() else b
                     for b in seen])


def effective_dates(weights: Sequence[float] | np.ndarray) -> float:
    """How many dates effectively carried a fit: ``(sum w)**2 / sum w**2``.

    ``weights`` (T,) are the dates' weights in the fit, >= 0 (e.g. time weight x robust weight
    x valid fraction: :meth:`splatsr.core.result.FitResult.date_weights`). T equal weights
    give T; one date carrying everything gives 1; all zero gives 0.
    """
    w = np.asarray(weights, np.float64).ravel()
    s2 = float((w * w).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0
