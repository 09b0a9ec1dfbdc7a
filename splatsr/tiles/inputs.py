"""What a tiled fit decides once, on the whole source, before the tiles are fitted.

* The input guard (:mod:`splatsr.core.inputs`): each tile's fit leaves out its own empty dates
  and bands without a word (a date clouded over one tile is ordinary); what holds for the
  whole stack -- a band or a date without a valid pixel anywhere, a target date outside the
  dates' span -- is found here and said once (the same sentences as a whole-stack fit).
* The automatic choices a fit makes from its data -- the change layer
  (:meth:`FitConfig.with_change_cell`), the time window (:meth:`FitConfig.with_time_window`)
  and the band offsets (:func:`splatsr.core.bands.band_offsets`) -- resolved on the whole
  stack and passed to every tile, so neighbouring tiles fit one model, the one a whole-stack
  fit would choose.

A stack on disk is read whole for this (one float32 copy of its pixels: far less than a
fit's memory, which is what tiling bounds). Scenes read remotely per tile are not read here:
their tiles choose for themselves, and only the target date is checked.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from splatsr.core.bands import band_offsets
from splatsr.core.config import FitConfig
from splatsr.core.inputs import (
    InputReport,
    InputWarning,
    inspect_stack,
    report_from_seen,
    shift_limit_lines,
)
from splatsr.core.model import MAX_SHIFT_M
from splatsr.tiles.sources import LocalSource, TileSource


@dataclass(frozen=True)
class StackChoices:
    """The whole source's input report and automatic choices."""

    inputs: InputReport
    config: FitConfig  # change layer and time window resolved (as set, for remote scenes)
    band_offsets_m: np.ndarray | None = None  # (B, 2), or None: each tile estimates its own
    valid_fraction: np.ndarray | None = None  # (T,) each date's valid share (None: remote)


def stack_choices(source: TileSource, config: FitConfig) -> StackChoices:
    """:class:`StackChoices` of ``source``: a stack on disk read whole, once."""
    T, B = len(source.ids), len(source.bands)
    if not isinstance(source, LocalSource):
        seen = np.ones((T, B), bool)
        return StackChoices(report_from_seen(seen, band_names=source.bands,
                                             dates=source.datetimes,
                                             target_date=config.target_date), config)
    data = source.stack.load()  # (T, B, H, W)
    inputs = inspect_stack(data, band_names=source.bands, dates=source.datetimes,
                           target_date=config.target_date)
    valid = np.isfinite(data).reshape(T, -1).mean(axis=1)  # (T,)
    used_d, used_b = inputs.used_dates, inputs.used_bands
    if used_d.sum() < 2 or not used_b.any():
        return StackChoices(inputs, config, valid_fraction=valid)  # the tiles' fits say why
    data = data[used_d][:, used_b]
    dates = [d for d, u in zip(source.datetimes, used_d) if u]
    cfg = config.with_change_cell(data, pixel_m=source.pixel_m).with_time_window(data,
                                                                                  dates=dates)
    offsets = None
    if cfg.band_offsets and used_b.sum() > 1:
        offsets = np.zeros((B, 2))
        offsets[used_b] = band_offsets(data, pixel_m=source.pixel_m)
    return StackChoices(inputs, cfg, offsets, valid)


def warn_shift_limit(shifts_m: np.ndarray, labels: tuple[str, ...]) -> None:
    """Say (an :class:`InputWarning`) which dates reached the search limit in some tile:
    ``shifts_m`` (n_tiles, T, 2), NaN where a tile did not fit a date."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a date no tile fitted
        widest = np.nanmax(np.abs(shifts_m), axis=0)  # (T, 2)
    for line in shift_limit_lines(widest, limit_m=MAX_SHIFT_M, labels=labels):
        warnings.warn(line.replace("the shift of", "in some tile, the shift of"), InputWarning,
                      stacklevel=3)
