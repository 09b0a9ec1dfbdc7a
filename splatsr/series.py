"""Every acquisition, sharper: the series product of a stack, as a library call.

:func:`fit_series` fits the stack's dates in segments of consecutive dates
(:mod:`splatsr.core.products.series`) and returns a :class:`SeriesFit`, which renders any
date's observed-date scene (:meth:`SeriesFit.render_date`), writes the series folder
(:meth:`SeriesFit.save`: a COG per date, ``shifts.csv``, a STAC ``items.json``) or gives it
as a (time, band, y, x) ``xarray.DataArray`` (:meth:`SeriesFit.to_xarray`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from splatsr import __version__
from splatsr.core.config import FitConfig
from splatsr.core.dates import acquisition_index
from splatsr.core.model import output_shape
from splatsr.core.products.series import Segment, fit_segments, plan_from_data
from splatsr.core.products.uncertainty import UncertaintyMode, as_mode
from splatsr.core.provenance import fit_tags
from splatsr.errors import ConfigError
from splatsr.io.export import write_shifts_csv
from splatsr.io.series import SeriesGrid, write_series
from splatsr.io.stack import Stack, read_stack
from splatsr.io.xarray import scene_to_xarray


@dataclass
class SeriesFit:
    """The fits of a stack's date segments and the stack's pixels they were fitted to."""

    stack: Stack  # the stack fitted
    data: np.ndarray  # (T, B, H, W) its observations, NaN where invalid
    segments: list[Segment]  # the fits, each of consecutive dates
    config: FitConfig  # the settings the fits shared
    seconds: float = 0.0  # wall time of all fits

    def segment_index(self, t: int) -> int:
        """The index in :attr:`segments` of the segment that renders date ``t``."""
        return next(i for i, s in enumerate(self.segments) if s.renders(t))

    def segment_of(self, t: int) -> Segment:
        """The segment that renders date ``t``."""
        return self.segments[self.segment_index(t)]

    def observation_index(self, which: int | str) -> int:
        """Observation ``which`` given as its index, id or date (YYYY-MM-DD, the clearest of
        that day), as an index.

        Raises
        ------
        ConfigError
            If no observation matches.
        """
        return observation_index(self.stack, which, valid_fraction=np.isfinite(
            self.data).reshape(len(self.data), -1).mean(axis=1))

    def render_date(self, which: int | str, resolution_m: float = 2.5) -> np.ndarray:
        """(B, H', W') observation ``which``'s observed-date scene at ``resolution_m``."""
        t = self.observation_index(which)
        return self.segment_of(t).scene(self.data, t, resolution_m)

    def sigma_date(self, which: int | str, resolution_m: float = 2.5, *,
                   mode: UncertaintyMode = "full") -> np.ndarray:
        """(B, H', W') float32 the 1-sigma map of :meth:`render_date` (its own date counts
        first; the other dates of its segment as far as it agrees with them; see
        :mod:`splatsr.core.products.uncertainty`)."""
        t = self.observation_index(which)
        return self.segment_of(t).sigma(self.data, t, resolution_m, mode=mode)

    def save(self, out_dir: str | os.PathLike, *, resolution_m: float = 2.5,
             uncertainty: bool | UncertaintyMode = False) -> Path:
        """Write every date's scene as ``<id>.tif`` in ``out_dir`` (one at a time), the
        shifts as ``shifts.csv`` and ``items.json``, a STAC ItemCollection that odc-stac or
        stackstac load as a (time, band, y, x) cube (:func:`splatsr.io.series.read_series`).
        With ``uncertainty`` (True or a mode) also each date's ``<id>.sigma.tif``
        (:meth:`sigma_date`), the item's ``sigma`` asset. Returns the path of ``items.json``."""
        st = self.stack
        transform = st.output_transform(resolution_m)
        shape = output_shape((st.height * st.pixel_m, st.width * st.pixel_m), resolution_m)
        names = tuple(self.segments[0].fit.band_names)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_shifts_csv(out_dir / "shifts.csv", ids=[o.id for o in st.observations],
                         datetimes=[o.datetime for o in st.observations],
                         shifts_m=self.shifts_m(), extra={"segment": [
                             self.segment_index(t) for t in range(len(st.observations))]})
        return write_series(out_dir, self._scenes(resolution_m, as_mode(uncertainty)),
                            grid=SeriesGrid(st.crs, transform, shape, names))

    def _scenes(self, resolution_m: float, mode: UncertaintyMode | None):
        """(id, datetime, image, tags, sigma or None) of every date, one at a time."""
        for t, o in enumerate(self.stack.observations):
            seg = self.segment_of(t)
            i = seg.index_of(t)
            ds = seg.date_scene(self.data, t)
            tags = dict(software=f"splatsr {__version__}", resolution_m=resolution_m,
                        observations=[self.stack.observations[k].id for k in seg.dates],
                        **fit_tags(seg.fit.config, band_names=seg.fit.band_names,
                                   band_offsets_m=seg.fit.band_offsets_m, anchored=False))
            tags.update(product="observed date scene", observation=o.id, datetime=o.datetime,
                        date_weight=float(seg.fit.obs_weights[i]))
            image = ds.render(seg.fit, resolution_m)
            sigma = None if mode is None else seg.sigma(self.data, t, resolution_m, mode=mode,
                                                        scene=image)
            yield o.id, o.datetime, image, tags, sigma

    def shifts_m(self) -> np.ndarray:
        """(T, 2) every date's shift in the series' frame (the mean of the dates')."""
        return np.array([self.segment_of(t).shift_m(t) for t in range(len(self.data))])

    def to_xarray(self, resolution_m: float = 2.5) -> Any:
        """Every date's scene as a georeferenced (time, band, y, x) ``xarray.DataArray``
        (all in memory at once; :meth:`save` writes one date at a time). Needs the
        ``xarray`` extra."""
        import xarray

        st = self.stack
        transform = st.output_transform(resolution_m)
        names = list(self.segments[0].fit.band_names)
        attrs = {"units": "reflectance (0-1)", "software": f"splatsr {__version__}",
                 "product": "observed date scene"}
        cube = xarray.concat([scene_to_xarray(self.render_date(t, resolution_m), crs=st.crs,
                                              transform=transform, band_names=names,
                                              attrs=attrs)
                              for t in range(len(self.data))], dim="time")
        times = [np.datetime64(o.datetime.rstrip("Z")[:19], "s") for o in st.observations]
        return cube.assign_coords(time=times,
                                  observation=("time", [o.id for o in st.observations]))


def observation_index(stack: Stack, which: int | str, *,
                      valid_fraction: np.ndarray | None = None) -> int:
    """The index in ``stack`` of observation ``which``: an index, an id, or a date
    (YYYY-MM-DD; the observation of that day with the largest ``valid_fraction``).

    Raises
    ------
    ConfigError
        If no observation matches.
    """
    n = len(stack.observations)
    if isinstance(which, (int, np.integer)):
        if not -n <= which < n:
            raise ConfigError(f"observation index {which} is out of range for {n} dates")
        return int(which) % n
    ids = [o.id for o in stack.observations]
    if which in ids:
        return ids.index(which)
    dates = [o.datetime for o in stack.observations]
    idx = acquisition_index(dates, target_date=which if len(str(which)) == 10 else None,
                            valid_fraction=np.ones(n) if valid_fraction is None
                            else valid_fraction)
    if idx is None:
        raise ConfigError(f"no observation with id or date {which!r}; the stack has "
                          f"{', '.join(d[:10] for d in dates[:8])}{' ...' if n > 8 else ''}")
    return idx


def fit_series(stack: Stack | str | os.PathLike, *, config: FitConfig | None = None,
               **overrides: Any) -> SeriesFit:
    """Fit a stack (directory or :class:`Stack`) for its series product: segments of
    consecutive dates (:func:`splatsr.core.products.series.fit_segments`); with
    ``--tile-size``: :func:`splatsr.tiles.series.fit_series_tiled`.

    ``overrides`` are :class:`FitConfig` fields (e.g. ``psf_sigma_m=4.0``).

    Raises
    ------
    ConfigError
        For an unknown field, or a target date (the series renders every date).
    """
    if not isinstance(stack, Stack):
        stack = read_stack(stack)
    unknown = set(overrides) - {f.name for f in fields(FitConfig)}
    if unknown:
        raise ConfigError(f"unknown fit option(s): {', '.join(sorted(unknown))}")
    cfg = replace(config or FitConfig(), **overrides)
    cfg.validate()
    data = stack.load()
    t0 = time.perf_counter()
    dates = [o.datetime for o in stack.observations]
    plan = plan_from_data(data, pixel_m=stack.pixel_m, config=cfg, dates=dates)
    segments = fit_segments(data, pixel_m=stack.pixel_m, plan=plan, band_names=stack.bands,
                            dates=dates)
    return SeriesFit(stack, data, segments, cfg, time.perf_counter() - t0)
