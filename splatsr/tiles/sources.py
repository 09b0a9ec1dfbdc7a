"""Where a tiled fit reads its pixels: a local stack directory or remote Sentinel-2 scenes.

Both sources describe the same thing the mosaic writer needs (CRS, 10 m transform, size, band
names, observation ids and datetimes: what ``stack.json`` holds) and read one window of every
observation as float32 reflectance (T, B, rows, cols), NaN where invalid:

* :class:`LocalSource` -- the observation GeoTIFFs of a stack directory.
* :class:`RemoteSource` -- the COGs of the scenes a STAC search picked for an AOI
  (:func:`splatsr.io.fetch.plan_scenes`). Each tile reads only its own window, straight from the
  COGs, with :func:`splatsr.io.stac.read_scene` (hrefs signed just before the read, re-signed
  after an HTTP 403; pixels masked with the scene classification layer). Meant to run inside
  the Dask task, so SAS tokens are fresh however long the run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from affine import Affine
from rasterio.windows import Window

import splatsr.io.stac as stac  # read_scene looked up at call time (tests patch it)
from splatsr.io.sentinel2 import LATTICE_M
from splatsr.io.stac import Grid, Scene
from splatsr.io.stack import Stack, read_observation


class GridSource:
    """What every source shares: the 10 m grid's CRS, transform, size and pixel size.

    A source names its grid (a :class:`~splatsr.io.grid.RasterGrid`-like object with ``crs``,
    ``transform``, ``width`` and ``height``) in :meth:`raster`.
    """

    def raster(self) -> Stack | Grid:
        """The grid the source reads on."""
        raise NotImplementedError

    @property
    def crs(self) -> str:
        """CRS of the 10 m grid, e.g. "EPSG:32633"."""
        return self.raster().crs

    @property
    def transform(self) -> Affine:
        """North-up transform of the 10 m grid."""
        return self.raster().transform

    @property
    def width(self) -> int:
        """Grid columns (pixels)."""
        return self.raster().width

    @property
    def height(self) -> int:
        """Grid rows (pixels)."""
        return self.raster().height

    @property
    def pixel_m(self) -> float:
        """Pixel size in metres."""
        return float(self.raster().transform.a)


@dataclass(frozen=True)
class LocalSource(GridSource):
    """The observation files of a stack directory."""

    stack: Stack

    def raster(self) -> Stack:
        """The stack's grid."""
        return self.stack

    @property
    def name(self) -> str:
        """How errors name the source."""
        return str(self.stack.root)

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names, in read order."""
        return self.stack.bands

    @property
    def ids(self) -> list[str]:
        """Observation ids, in order (T)."""
        return [o.id for o in self.stack.observations]

    @property
    def datetimes(self) -> list[str]:
        """ISO-8601 acquisition times, in order (T)."""
        return [o.datetime for o in self.stack.observations]

    def fingerprint(self) -> str:
        """Hash of ``stack.json`` and the size and sha256 of every observation file.

        Content-based (a copied or touched stack keeps its tiles); reading every file costs
        about one read of the stack, small next to fitting it.
        """
        h = hashlib.sha256((self.stack.root / "stack.json").read_bytes())
        for obs in self.stack.observations:
            path = self.stack.root / obs.path
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            h.update(f"{obs.path}:{path.stat().st_size}:{digest.hexdigest()}".encode())
        return h.hexdigest()

    def read(self, window: Window) -> np.ndarray:
        """The window of every observation: float32 (T, B, rows, cols), NaN where invalid."""
        stack = self.stack
        out = np.empty((len(stack.observations), len(stack.bands), int(window.height),
                        int(window.width)), np.float32)
        for i, obs in enumerate(stack.observations):
            out[i] = read_observation(stack, obs, window=window)
        return out


@dataclass(frozen=True)
class RemoteSource(GridSource):
    """Scenes of one MGRS tile read window by window from their COGs (no local copy)."""

    grid: Grid  # the whole AOI grid (10 m, on the 60 m lattice of the tile)
    scenes: tuple[Scene, ...]  # the observations, by time
    band_names: tuple[str, ...]  # 10 m bands, in output order
    gdal_env: tuple[tuple[str, str], ...]  # GDAL settings for the reads

    def raster(self) -> Grid:
        """The AOI grid."""
        return self.grid

    @property
    def name(self) -> str:
        """How errors name the source."""
        return f"tile {self.grid.tile} ({self.grid.crs})"

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names, in read order."""
        return self.band_names

    @property
    def ids(self) -> list[str]:
        """Observation ids, in order (T)."""
        return [s.item_id for s in self.scenes]

    @property
    def datetimes(self) -> list[str]:
        """ISO-8601 acquisition times, in order (T)."""
        return [s.datetime for s in self.scenes]

    def fingerprint(self) -> str:
        """Hash of the plan: grid, bands and every scene (hrefs without their query string,
        so a fresh SAS token does not change it)."""
        scenes = [dict(id=s.item_id, datetime=s.datetime, baseline=s.baseline,
                       hrefs=[[k, _strip_query(h)] for k, h in s.hrefs]) for s in self.scenes]
        spec = dict(grid=self.grid.key(), tile=self.grid.tile, bands=list(self.band_names),
                    scenes=scenes)
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def read(self, window: Window) -> np.ndarray:
        """The window of every scene: float32 (T, B, rows, cols), NaN where no data or where
        the scene classification says cloud, shadow, cirrus, snow or defective.

        The read is widened to the 60 m lattice (so the 20 m SCL pixels nest) and cropped.
        """
        col0, row0 = int(window.col_off), int(window.row_off)
        rows, cols = int(window.height), int(window.width)
        k = round(LATTICE_M / self.pixel_m)  # 10 m pixels per lattice step
        r0, c0 = row0 // k * k, col0 // k * k
        r1 = min(-(-(row0 + rows) // k) * k, self.height)
        c1 = min(-(-(col0 + cols) // k) * k, self.width)
        sub = replace(self.grid, transform=self.grid.transform @ Affine.translation(c0, r0),
                      width=c1 - c0, height=r1 - r0)
        env = dict(self.gdal_env)
        out = np.empty((len(self.scenes), len(self.band_names), rows, cols), np.float32)
        for i, scene in enumerate(self.scenes):
            refl, _, _ = stac.read_scene(scene, sub, self.band_names, env)  # (B, r1-r0, c1-c0)
            out[i] = refl[:, row0 - r0:row0 - r0 + rows, col0 - c0:col0 - c0 + cols]
        return out


TileSource = LocalSource | RemoteSource


def as_source(source: Stack | TileSource) -> TileSource:
    """A stack as a :class:`LocalSource`; sources pass unchanged."""
    return LocalSource(source) if isinstance(source, Stack) else source


def _strip_query(href: str) -> str:
    parts = urlsplit(href)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
