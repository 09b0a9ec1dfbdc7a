"""The tile plan of a tiled fit: overlapping windows, their blend weights, the seam statistic.

One global shift per date holds only over a few km of flat ground, and a full Sentinel-2 tile
does not fit one GPU. So a large area is cut into overlapping tiles, each fitted on its own
(its own scene *and* its own shifts, together a coarse deformation field), and the tiles are
blended with smooth weights into one mosaic:

* :func:`plan_tiles` -- overlapping windows of ``tile_size`` 10 m pixels, spread evenly so that
  neighbours overlap by at least ``overlap`` pixels.
* :func:`blend_weights` -- a tile's weight along one axis (below).
* :func:`seam_step` -- how much larger the error steps across inner tile edges are than
  elsewhere (a check that the mosaic has no seams).

The rest of a tiled fit lives beside this module: :mod:`splatsr.tiles.store` (finished tiles),
:mod:`splatsr.tiles.sources` (where the pixels come from), :mod:`splatsr.tiles.run` (the Dask
task and drivers) and :mod:`splatsr.tiles.mosaic` (the blended COG and shift outputs); a tile
that keeps failing raises :class:`splatsr.errors.TileError`.

Blending: along each axis a tile's weight rises as ``sin^2`` from 0 at an inner tile edge to 1
at ``overlap`` pixels from it (edges on the stack border keep weight 1). Where two neighbours
overlap by exactly ``overlap`` pixels the weights sum to one (``sin^2 + cos^2``); elsewhere the
mosaic divides by the summed weight. The weight is ~0 at a tile edge, where a fit is least
constrained, so the mosaic has no seams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from splatsr.errors import ConfigError

MIN_TILE_PX = 8  # smaller tiles hold too few pixels to fit shifts


@dataclass(frozen=True)
class Tile:
    """One window of the stack, in stack pixels, and its place in the tile grid."""

    row: int  # tile-grid row (0 = north)
    col: int  # tile-grid column (0 = west)
    row0: int  # first stack row of the window
    col0: int  # first stack column of the window
    rows: int  # window height (pixels)
    cols: int  # window width (pixels)
    top: bool = False  # the window's north edge is the stack's
    bottom: bool = False  # ... south edge
    left: bool = False  # ... west edge
    right: bool = False  # ... east edge

    @property
    def id(self) -> str:
        """``r001c002`` style identifier."""
        return f"r{self.row:03d}c{self.col:03d}"

    @property
    def window(self) -> Window:
        """The rasterio window of the tile in the stack grid."""
        return Window(self.col0, self.row0, self.cols, self.rows)


def _starts(n: int, size: int, overlap: int) -> list[int]:
    """Evenly spread starts of windows of ``size`` over ``n`` with overlaps >= ``overlap``."""
    if n <= size:
        return [0]
    count = math.ceil((n - size) / (size - overlap)) + 1
    return [round(k * (n - size) / (count - 1)) for k in range(count)]


def plan_tiles(*, height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering a ``height x width`` raster, row-major from the north-west.

    Parameters
    ----------
    height, width
        Raster size in pixels.
    tile_size
        Tile side in pixels (smaller along an axis shorter than this).
    overlap
        Smallest overlap between neighbouring tiles, in pixels; also the width of the blend
        ramp. Between 0 and ``tile_size / 2``.

    Returns
    -------
    list of Tile
    """
    if tile_size < MIN_TILE_PX:
        raise ConfigError(f"tile size must be at least {MIN_TILE_PX} pixels, got {tile_size}")
    if overlap < 0 or 2 * overlap > tile_size:
        raise ConfigError(f"overlap must be between 0 and half the tile size "
                          f"({tile_size // 2} px), got {overlap}")
    rows, cols = _starts(height, tile_size, overlap), _starts(width, tile_size, overlap)
    h, w = min(tile_size, height), min(tile_size, width)
    return [Tile(i, j, r, c, h, w, top=r == 0, bottom=r + h == height, left=c == 0,
                 right=c + w == width)
            for i, r in enumerate(rows) for j, c in enumerate(cols)]


def blend_weights(n: int, *, factor: int, ramp_px: int, start_open: bool,
                  end_open: bool) -> np.ndarray:
    """1-D blend weights (n * factor,) of a tile axis of ``n`` pixels at ``factor`` samples/px.

    The weight is ``sin^2(pi/2 * d / ramp)`` at distance ``d`` from an *open* (inner) edge,
    1 beyond ``ramp_px`` pixels and along closed edges (the stack border).
    """
    u = (np.arange(n * factor) + 0.5) / factor  # sample centres in pixels from the start
    w = np.ones(n * factor)
    if ramp_px > 0:
        for open_, d in ((start_open, u), (end_open, n - u)):
            if open_:
                w *= np.sin(0.5 * np.pi * np.clip(d / ramp_px, 0.0, 1.0)) ** 2
    return w


def seam_step(error: np.ndarray, tiles: Sequence[Tile], *, factor: int,
              border_px: int = 2) -> float:
    """How much the error jumps across inner tile edges, relative to elsewhere (~1: no seams).

    Parameters
    ----------
    error
        (B, H*f, W*f) mosaic minus truth on the output grid.
    tiles
        The tile plan (in stack pixels).
    factor
        Output pixels per stack pixel.
    border_px
        Stack pixels at the image border left out of the reference statistic.

    Returns
    -------
    float
        Mean ``|e[j] - e[j-1]|`` over output-pixel pairs straddling an inner tile edge
        (edges not on the stack border), divided by the median of the same over all
        neighbouring pairs. Compare it with the same number for an untiled fit.
    """
    e = np.asarray(error, np.float64)
    dx = np.abs(np.diff(e, axis=2)).mean(axis=(0, 1))  # step from column j to j + 1
    dy = np.abs(np.diff(e, axis=1)).mean(axis=(0, 2))
    cols = {t.col0 * factor for t in tiles if not t.left} | \
        {(t.col0 + t.cols) * factor for t in tiles if not t.right}
    rows = {t.row0 * factor for t in tiles if not t.top} | \
        {(t.row0 + t.rows) * factor for t in tiles if not t.bottom}
    if not cols and not rows:
        return 1.0
    at_seams = np.mean([dx[c - 1] for c in cols] + [dy[r - 1] for r in rows])
    b = border_px * factor
    return float(at_seams / np.median(np.r_[dx[b:len(dx) - b], dy[b:len(dy) - b]]))


__all__ = ["Tile", "blend_weights", "plan_tiles", "seam_step"]
