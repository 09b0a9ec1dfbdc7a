"""The input guard of a tiled fit: :mod:`splatsr.core.inputs` on the whole source, once.

Each tile's fit leaves out its own empty dates and bands without a word (a date clouded over
one tile is ordinary); what holds for the whole stack -- a band or a date without a valid pixel
anywhere, a target date outside the dates' span -- is found here, before the tiles are fitted,
and said once (the same sentences as a whole-stack fit).
"""

from __future__ import annotations

import numpy as np

from splatsr.core.config import FitConfig
from splatsr.core.inputs import InputReport, report_from_seen
from splatsr.io.stack import read_observation
from splatsr.tiles.sources import LocalSource, TileSource


def source_report(source: TileSource, config: FitConfig) -> InputReport:
    """The input report of a tile source: every observation of a stack on disk read once,
    one at a time (memory: one date); scenes read remotely per tile are taken as seen (only
    the target date is checked, their pixels are read in the tasks)."""
    T, B = len(source.ids), len(source.bands)
    seen = np.ones((T, B), bool)  # (T, B) any valid pixel of date t in band b
    if isinstance(source, LocalSource):
        for t, obs in enumerate(source.stack.observations):
            seen[t] = np.isfinite(read_observation(source.stack, obs)).any(axis=(1, 2))
    return report_from_seen(seen, band_names=source.bands, dates=source.datetimes,
                            target_date=config.target_date)
