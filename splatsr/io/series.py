"""The series output: one COG per observation and a STAC ItemCollection that lists them.

``splatsr fit STACK --every-date --out DIR`` writes::

    DIR/
      <id>.tif      one COG per observation (the conventions of :func:`write_cog`)
      <id>.sigma.tif  its 1-sigma map, when the series was saved with uncertainty
      items.json    a STAC ItemCollection: one Item per observation, its COG as the asset
                    ``data`` (href relative to DIR), its date, projection and bands

odc-stac or stackstac load the ItemCollection as a (time, band, y, x) cube
(:func:`read_series` makes the hrefs absolute first, so it loads from any working folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from splatsr.io.atomic import write_text_atomic
from splatsr.io.export import band_order, sigma_path, write_cog, write_sigma_cog
from splatsr.io.text import safe_name

ITEMS_NAME = "items.json"  # the ItemCollection's file name inside the series folder
ASSET_KEY = "data"  # the COG's asset key in each item
SIGMA_KEY = "sigma"  # the 1-sigma COG's asset key, when there is one


@dataclass(frozen=True)
class SeriesGrid:
    """Where the series' COGs lie: CRS, output transform and shape, band names."""

    crs: str  # e.g. "EPSG:32631"
    transform: Affine  # of the output grid (resolution_m pixels)
    shape: tuple[int, int]  # (rows, cols)
    band_names: tuple[str, ...]  # in the scene's order (the COGs put B04, B03, B02 first)


def write_series(out_dir: str | os.PathLike,
                 scenes: Iterable[tuple[str, str, np.ndarray, Mapping[str, Any],
                                        np.ndarray | None]], *,
                 grid: SeriesGrid) -> Path:
    """Write each ``(id, datetime, image (B, H, W), tags, sigma (B, H, W) or None)`` of
    ``scenes`` as ``<id>.tif`` (and ``<id>.sigma.tif``, the item's ``sigma`` asset) in
    ``out_dir`` as it comes (one image in memory at a time), then ``items.json``.

    Returns the path of ``items.json``. Every file is written to a temporary name and
    renamed; the ItemCollection last, so a folder with ``items.json`` is complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for obs_id, when, image, tags, sigma in scenes:
        name = series_name(obs_id)
        write_cog(out_dir / name, image, crs=grid.crs, transform=grid.transform,
                  band_names=list(grid.band_names), tags=tags)
        sig = None if sigma is None else write_sigma_cog(
            sigma_path(out_dir / name), sigma, crs=grid.crs, transform=grid.transform,
            band_names=list(grid.band_names), tags=tags)
        items.append(series_item(obs_id, when, href=name, grid=grid,
                                 product=str(tags.get("product", "")),
                                 sigma_href=None if sig is None else sig.name))
    return write_items(out_dir, items)


def series_name(obs_id: str) -> str:
    """The file name of an observation's COG in a series folder: ``<id>.tif``."""
    return f"{safe_name(obs_id)}.tif"


def write_items(out_dir: str | os.PathLike, items: list[pystac.Item]) -> Path:
    """Write ``items`` as the series folder's ``items.json`` (hrefs kept relative); its path."""
    collection = pystac.ItemCollection(items)
    path = Path(out_dir) / ITEMS_NAME
    write_text_atomic(path, json.dumps(collection.to_dict(transform_hrefs=False), indent=1))
    return path


def series_item(obs_id: str, when: str, *, href: str, grid: SeriesGrid,
                product: str = "", sigma_href: str | None = None) -> pystac.Item:
    """One observation's STAC Item: footprint in WGS 84, date, projection, bands, asset
    ``data`` at ``href`` (and ``sigma`` at ``sigma_href``)."""
    rows, cols = grid.shape
    t = grid.transform
    x0, y0 = t.c, t.f
    x1, y1 = t.c + cols * t.a, t.f + rows * t.e
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    geom = transform_geom(grid.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    lons = [p[0] for p in geom["coordinates"][0]]
    lats = [p[1] for p in geom["coordinates"][0]]
    names = [grid.band_names[i] for i in band_order(list(grid.band_names))]
    item = pystac.Item(id=obs_id, geometry=geom, bbox=[min(lons), min(lats), max(lons),
                                                         max(lats)],
                       datetime=pystac.utils.str_to_datetime(when),
                       properties={"splatsr:product": product})
    asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["data"])
    item.add_asset(ASSET_KEY, asset)
    crs = CRS.from_user_input(grid.crs)
    for target in (ProjectionExtension.ext(item, add_if_missing=True),
                   ProjectionExtension.ext(asset)):
        target.apply(epsg=crs.to_epsg(), wkt2=None if crs.to_epsg() else crs.to_wkt(),
                     shape=[rows, cols], transform=list(t)[:6])
    EOExtension.ext(asset, add_if_missing=True).apply(
        bands=[Band.create(name=n) for n in names])
    RasterExtension.ext(asset, add_if_missing=True).apply(
        bands=[RasterBand.create(data_type=DataType.FLOAT32, nodata=float("nan"),
                                 spatial_resolution=abs(t.a), unit="reflectance")
               for _ in names])
    if sigma_href is not None:
        item.add_asset(SIGMA_KEY, pystac.Asset(
            href=sigma_href, media_type=pystac.MediaType.COG, roles=["uncertainty"],
            title="per-pixel 1-sigma uncertainty (reflectance)"))
    return item


def read_series(out_dir: str | os.PathLike) -> pystac.ItemCollection:
    """The ItemCollection of a series folder with its asset hrefs made absolute (the file
    keeps them relative, so the folder can move)."""
    out_dir = Path(out_dir).resolve()
    collection = pystac.ItemCollection.from_file(str(out_dir / ITEMS_NAME))
    for item in collection:
        for asset in item.assets.values():
            if not os.path.isabs(asset.href) and "://" not in asset.href:
                asset.href = str(out_dir / asset.href)
    return collection
