"""Outputs of a tiled fit: the blended mosaic COG, the per-tile shift table and shift GeoTIFF.

Both take the source's grid (CRS, transform, size, bands, observation ids and datetimes) from a
:class:`~splatsr.io.stack.Stack` or any :mod:`splatsr.tiles.sources` source, so a fit read straight
from STAC writes the same files as one read from a stack directory.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from splatsr import __version__
from splatsr.core.dates import acquisition_index
from splatsr.core.provenance import fit_tags
from splatsr.core.solver import FitConfig
from splatsr.io.atomic import atomic_path, write_text_atomic
from splatsr.io.export import band_order, shifts_path, write_shifts_csv
from splatsr.io.stack import Stack
from splatsr.tiles.plan import Tile, blend_weights
from splatsr.tiles.sources import TileSource, as_source
from splatsr.tiles.store import entry_paths, sigma_entry_path

MOSAIC_BLOCK_PX = 2048  # output pixels per side of one mosaic window (a multiple of 512)


def write_mosaic(source: Stack | TileSource, tiles: Sequence[Tile], keys: dict[str, str],
                 metas: dict[str, dict], *, out: str | os.PathLike, store: Path, factor: int,
                 overlap: int, config: FitConfig, sigma: str | None = None,
                 band_offsets_m: np.ndarray | None = None, date: int | None = None,
                 extra_tags: dict[str, Any] | None = None) -> Path:
    """Blend the stored tiles into a COG at ``out``, one window at a time.

    Its tags are a whole-stack fit's (:func:`~splatsr.core.provenance.fit_tags` of the
    resolved ``config`` and the whole stack's ``band_offsets_m``) plus the tiling, updated
    with ``extra_tags``. ``date``: the tiles store a series, (T, B, rows, cols) each; blend
    date ``date`` (:mod:`splatsr.tiles.series`).

    With ``sigma`` (the uncertainty mode the tiles were fitted with) blend their stored 1-sigma
    maps instead: the blend weights average the variances, ``sqrt(sum w s^2 / sum w)``.

    The mosaic is written window by window (``MOSAIC_BLOCK_PX`` output pixels a side) into a
    tiled, ZSTD-compressed GTiff beside ``out``; GDAL's COG driver then copies it (adding
    overviews) to a second temporary file, which is renamed onto ``out``. Tile images are
    memory-mapped, so peak memory is about two windows (``2 x B x 2048^2 x 8`` bytes: 256 MB
    for 4 bands) plus GDAL's block cache during the COG copy.
    """
    out = Path(out)
    grid = as_source(source)
    B, f = len(grid.bands), factor
    H, W = grid.height * f, grid.width * f
    res_m = grid.pixel_m / f
    transform = grid.raster().output_transform(res_m)
    order = band_order(list(grid.bands))
    names = [grid.bands[i] + (" sigma" if sigma else "") for i in order]
    tags = _mosaic_tags(grid.ids, grid.datetimes, tiles, config=config, overlap=overlap,
                        res_m=res_m, sigma=sigma, bands=grid.bands,
                        band_offsets_m=band_offsets_m, extra=extra_tags)
    live = [t for t in tiles if metas[t.id]["status"] == "fitted"]
    cog_block = next(b for b in (256, 128, 64, 16) if min(H, W) >= b or b == 16)
    weights = {t.id: (blend_weights(t.rows, factor=f, ramp_px=overlap, start_open=not t.top,
                                    end_open=not t.bottom),
                      blend_weights(t.cols, factor=f, ramp_px=overlap, start_open=not t.left,
                                    end_open=not t.right)) for t in live}
    profile = dict(driver="GTiff", width=W, height=H, count=B, dtype="float32",
                   crs=grid.crs, transform=transform, nodata=float("nan"), tiled=True,
                   blockxsize=512, blockysize=512, compress="ZSTD", zstd_level=1,
                   predictor=3, BIGTIFF="IF_SAFER", num_threads="ALL_CPUS")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".mosaic.tif",
                                    dir=out.parent)
    os.close(fd)
    gtiff = Path(tmp_name)
    try:
        with rasterio.open(gtiff, "w", **profile) as dst:
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**tags)
            for r0 in range(0, H, MOSAIC_BLOCK_PX):
                for c0 in range(0, W, MOSAIC_BLOCK_PX):
                    h, w = min(MOSAIC_BLOCK_PX, H - r0), min(MOSAIC_BLOCK_PX, W - c0)
                    block = _blend_window(live, weights, keys, store=store, f=f, order=order,
                                          window=Window(c0, r0, w, h), sigma=bool(sigma),
                                          date=date)
                    dst.write(block, window=Window(c0, r0, w, h))
        with atomic_path(out) as tmp:
            rasterio.shutil.copy(gtiff, tmp, driver="COG", COMPRESS="DEFLATE",
                                 PREDICTOR="FLOATING_POINT", BLOCKSIZE=cog_block,
                                 OVERVIEW_RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER",
                                 NUM_THREADS="ALL_CPUS")
    finally:
        gtiff.unlink(missing_ok=True)
    return out


def _mosaic_tags(ids: Sequence[str], datetimes: Sequence[str], tiles: Sequence[Tile], *,
                 config: FitConfig, overlap: int, res_m: float, sigma: str | None = None,
                 bands: Sequence[str] = (), band_offsets_m: np.ndarray | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The mosaic's dataset tags (non-strings as JSON), updated with ``extra``; for a sigma
    mosaic, say so."""
    observed = config.observed_date and acquisition_index(
        list(datetimes), target_date=config.target_date,
        valid_fraction=np.ones(len(datetimes))) is not None
    tags = dict(software=f"splatsr {__version__}", resolution_m=res_m,
                observations=list(ids),
                **fit_tags(config, band_names=bands, band_offsets_m=band_offsets_m,
                           anchored=config.median_anchor and not observed,
                           observed=observed),
                tiling=dict(tiles=len(tiles), tile_size=max(t.rows for t in tiles),
                            overlap=overlap))
    tags.update(extra or {})  # e.g. a series date's product and observation
    if sigma:
        tags.update(units="reflectance (0-1), 1-sigma", uncertainty_mode=sigma,
                    content="per-pixel 1-sigma uncertainty of the mosaic of the same name "
                            "without .sigma; tiles blended in variance; NaN where it is NaN")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}


def _blend_window(live: Sequence[Tile], weights: dict[str, tuple[np.ndarray, np.ndarray]],
                  keys: dict[str, str], *, store: Path, f: int, order: list[int],
                  window: Window, sigma: bool = False, date: int | None = None
                  ) -> np.ndarray:
    """The blended float32 (B, h, w) output ``window``, NaN where no tile covers it.

    With ``sigma`` the tiles' 1-sigma maps, blended in variance; ``date``: of that date of
    the stored series.
    """
    r0, c0, h, w = window.row_off, window.col_off, window.height, window.width
    acc = np.zeros((len(order), h, w))
    wsum = np.zeros((len(order), h, w))  # per band: a band NaN in every tile stays NaN
    for t in live:
        _accumulate(acc, wsum, t, weights[t.id], store, keys[t.id], f, r0, c0, order,
                    sigma=sigma, date=date)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(wsum > 0, acc / wsum, np.nan)
    return (np.sqrt(out) if sigma else out).astype(np.float32)


def _accumulate(acc: np.ndarray, wsum: np.ndarray, t: Tile, w: tuple[np.ndarray, np.ndarray],
                store: Path, key: str, f: int, r0: int, c0: int, order: list[int],
                sigma: bool = False, date: int | None = None) -> None:
    """Add tile ``t``'s weighted image (or variance; of date ``date`` of a series) to the
    window at (r0, c0)."""
    h, w_ = wsum.shape[1:]
    tr0, tc0 = t.row0 * f, t.col0 * f
    a0, a1 = max(r0, tr0), min(r0 + h, tr0 + t.rows * f)
    b0, b1 = max(c0, tc0), min(c0 + w_, tc0 + t.cols * f)
    if a0 >= a1 or b0 >= b1:
        return
    path = entry_paths(store, t, key)[1]
    img = np.load(sigma_entry_path(path) if sigma else path, mmap_mode="r")  # (B, rows f, cols f)
    img = img if date is None else img[date]  # a series: (T, B, rows f, cols f)
    part = np.asarray(img[:, a0 - tr0:a1 - tr0, b0 - tc0:b1 - tc0], np.float64)[order]
    part = part * part if sigma else part
    ww = np.outer(w[0][a0 - tr0:a1 - tr0], w[1][b0 - tc0:b1 - tc0])
    ok = np.isfinite(part)  # (B, h, w)
    ww = np.where(ok, ww[None], 0.0)
    acc[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] += np.where(ok, part, 0.0) * ww
    wsum[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] += ww


def write_shifts(source: Stack | TileSource, tiles: Sequence[Tile], metas: dict[str, dict], *,
                 out: str | os.PathLike, in_folder: bool = False
                 ) -> tuple[np.ndarray, Path, Path]:
    """Per-date mean shifts CSV, per-tile shift table CSV and a shifts-per-date GeoTIFF:
    ``<out stem>.shifts.csv``, ``.tile_shifts.csv`` and ``.shifts.tif`` beside ``out``, or
    with ``in_folder`` ``shifts.csv``, ``tile_shifts.csv`` and ``shifts.tif`` in ``out``.

    Returns
    -------
    shifts_m : numpy.ndarray
        (n_tiles, T, 2) per-tile shifts, NaN for empty tiles and dates a tile did not see.
    tile_shifts_csv, shifts_tif : Path
        The per-tile table and the GeoTIFF (the per-date CSV is :func:`shifts_path` of out).
    """
    grid = as_source(source)
    out = Path(out)
    csv_path, tile_csv, shifts_tif = (
        (out / "shifts.csv", out / "tile_shifts.csv", out / "shifts.tif") if in_folder else
        (shifts_path(out), out.with_name(out.stem + ".tile_shifts.csv"),
         out.with_name(out.stem + ".shifts.tif")))
    ids, dts = grid.ids, grid.datetimes
    T = len(ids)
    shifts = np.full((len(tiles), T, 2), np.nan)
    rms = np.full((len(tiles), T), np.nan)
    for i, t in enumerate(tiles):
        m = metas[t.id]
        if m["status"] == "fitted":
            shifts[i] = np.asarray(m["shifts_m"], float)  # null (unseen date) -> NaN
            rms[i] = np.asarray(m["residual_rms"], float)
    with warnings.catch_warnings():  # a date no tile saw: NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(shifts, axis=0)  # (T, 2)
    write_shifts_csv(csv_path, ids=ids, datetimes=dts, shifts_m=mean,
                     extra={"tiles": [int(np.isfinite(shifts[:, k, 0]).sum())
                                      for k in range(T)]})
    tr = grid.transform
    lines = ["tile,row0,col0,rows,cols,x_centre,y_centre,status,id,datetime,dx_m,dy_m,"
             "residual_rms"]
    for i, t in enumerate(tiles):
        xc, yc = tr @ (t.col0 + t.cols / 2, t.row0 + t.rows / 2)
        for k in range(T):
            lines.append(f"{t.id},{t.row0},{t.col0},{t.rows},{t.cols},{xc:.3f},{yc:.3f},"
                         f"{metas[t.id]['status']},{ids[k]},{dts[k]},{shifts[i, k, 0]:.4f},"
                         f"{shifts[i, k, 1]:.4f},{rms[i, k]:.6g}")
    write_text_atomic(tile_csv, "\n".join(lines) + "\n")

    # one cell per tile; cells split the stack extent evenly (a cell's centre lies within
    # half a tile step of its tile's centre; exact centres are in the CSV)
    ny, nx = max(t.row for t in tiles) + 1, max(t.col for t in tiles) + 1
    cells = shifts.reshape(ny, nx, T, 2).transpose(2, 3, 0, 1).reshape(2 * T, ny, nx)
    cell = Affine(grid.width * tr.a / nx, 0, tr.c, 0, grid.height * tr.e / ny, tr.f)
    with atomic_path(shifts_tif) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=nx, height=ny, count=2 * T,
                           dtype="float32", crs=grid.crs, transform=cell,
                           nodata=float("nan")) as dst:
            dst.write(cells.astype(np.float32))
            for k in range(T):
                dst.set_band_description(2 * k + 1, f"dx_m {ids[k]} {dts[k]}")
                dst.set_band_description(2 * k + 2, f"dy_m {ids[k]} {dts[k]}")
            dst.update_tags(units="metres; content displacement, east and north positive",
                            layout="bands: dx_m, dy_m per observation in stack order")
    return shifts, tile_csv, shifts_tif
