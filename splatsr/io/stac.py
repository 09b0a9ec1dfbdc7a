"""STAC search, item parsing, tile choice and native-grid scene reads for splatsr.io.fetch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlparse

import numpy as np
import planetary_computer
import rasterio
import requests
from affine import Affine
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import DoesNotConformTo
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from urllib3 import Retry
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)

import splatsr.io.sentinel2 as s2
from splatsr.errors import ConfigError, FetchError
from splatsr.io.grid import RasterGrid
from splatsr.io.query import AOI, SceneQuery

RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Scene:
    """What the fetcher needs of one STAC item."""

    item_id: str
    datetime: str
    tile: str
    crs: str
    baseline: str
    relative_orbit: int | None
    platform: str | None
    cloud_pct: float | None  # eo:cloud_cover of the whole tile, percent
    hrefs: tuple[tuple[str, str], ...]  # (asset key, unsigned href)
    tile_transform: Affine  # of the first band asset (the 10 m grid)
    tile_shape: tuple[int, int]  # (rows, cols)


@dataclass(frozen=True)
class Grid(RasterGrid):
    """The stack grid: the AOI in the tile CRS, snapped outward to the 60 m lattice."""

    tile: str
    crs: str
    transform: Affine  # 10 m pixels
    width: int
    height: int
    aoi_bounds: tuple[float, float, float, float]  # projected AOI, not snapped

    @cached_property
    def _mask(self) -> np.ndarray:
        t, (w, s, e, n) = self.transform, self.aoi_bounds
        cx = t.c + t.a * (np.arange(self.width) + 0.5)
        cy = t.f + t.e * (np.arange(self.height) + 0.5)
        mask = ((cy >= s) & (cy <= n))[:, None] & ((cx >= w) & (cx <= e))[None, :]
        return mask if mask.any() else np.ones_like(mask)  # AOI thinner than a pixel

    def aoi_mask(self) -> np.ndarray:
        """Pixels whose centre lies inside the projected AOI (the fractions are taken there)."""
        return self._mask


def offset_for(scene: Scene) -> int:
    """The harmonisation offset (DN) of a scene."""
    return s2.offset_dn(scene.baseline)


def safe_name(name: str) -> str:
    """A file-name-safe form of an item id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]


class FailFastRetry(Retry):
    """A urllib3 ``Retry`` that gives up at once when no connection can be made.

    A refused connection or a failed DNS lookup (urllib3's ``NewConnectionError`` and its
    subclass ``NameResolutionError``) does not recover within a backoff, so it is raised on
    the first try; connect and read timeouts, 429 and 5xx are retried as usual.
    """

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None, _pool: Any = None,
                  _stacktrace: Any = None) -> Retry:
        if isinstance(error, NewConnectionError):
            raise MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def search(query: SceneQuery, *, retries: int, backoff_s: float,
           timeout_s: tuple[float, float] = (10.0, 120.0)) -> list[dict[str, Any]]:
    """All items (as dicts, unsigned) of the query's collection, AOI and dates.

    ``timeout_s`` is (connect, read). Raises :class:`FetchError` with one line naming the host
    when the API cannot be reached.
    """
    retry = FailFastRetry(total=retries, backoff_factor=backoff_s,
                          status_forcelist=RETRY_STATUS, allowed_methods=None,
                          respect_retry_after_header=True)
    io = StacApiIO(max_retries=retry, timeout=timeout_s)
    url = query.stac_url
    try:
        client = Client.open(url, stac_io=io)
    except Exception as exc:  # network, HTTP or "not a STAC catalog": all one message
        raise FetchError(network_message(exc, query.host)
                         or f"cannot open the STAC API at {url}: {_one_line(exc)}") from None
    methods = {link.extra_fields.get("method", "GET") or "GET"
               for link in client.get_links("search")}
    method = "POST" if "POST" in methods or not methods else "GET"
    try:
        found = client.search(collections=[query.collection], bbox=list(query.aoi),
                              datetime=query.datetime, limit=100, method=method)
        return list(found.items_as_dicts())
    except (NotImplementedError, DoesNotConformTo) as exc:
        raise FetchError(f"{url} offers no item search: {_one_line(exc)}") from None
    except (APIError, requests.RequestException, OSError, ValueError) as exc:
        raise FetchError(network_message(exc, query.host) or
                         f"search failed for {query.describe()}: {_one_line(exc)}") from None


def network_message(exc: BaseException, host: str) -> str | None:
    """One line for an error that means the host could not be reached, else None."""
    causes = _causes(exc)
    if any(isinstance(c, NameResolutionError) for c in causes):
        why = f"cannot resolve the host name {host}"
    elif any(isinstance(c, NewConnectionError) for c in causes):
        why = f"cannot connect to {host} (connection refused or unreachable)"
    elif any(isinstance(c, (ConnectTimeoutError, ReadTimeoutError, requests.Timeout))
             for c in causes):
        why = f"{host} did not answer in time"
    elif any(isinstance(c, requests.ConnectionError) for c in causes):
        why = f"cannot connect to {host}"
    else:
        return None
    return f"STAC search failed: {why} (no network?); check the connection or the STAC URL"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (cause, context, urllib3 ``reason``, args), recursively."""
    seen: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or any(e is s for s in seen) or len(seen) > 50:
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    return seen


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:1000] + ("..." if len(text) > 1000 else "") if text else type(exc).__name__


def parse_items(items: list[dict[str, Any]], bands: tuple[str, ...]
                ) -> tuple[list[Scene], list[dict[str, Any]]]:
    """Scenes, deduplicated (same tile and datetime: highest baseline wins), and the dropped
    items with reasons."""
    scenes: list[Scene] = []
    dropped: list[dict[str, Any]] = []
    for item in items:
        scene_or_reason = _parse_item(item, bands)
        if isinstance(scene_or_reason, str):
            dropped.append({"id": str(item.get("id")), "reason": scene_or_reason})
        else:
            scenes.append(scene_or_reason)
    best: dict[tuple[str, str, str], Scene] = {}
    for sc in scenes:
        k = (sc.tile, sc.crs, sc.datetime)
        rank = (s2.parse_baseline(sc.baseline), sc.item_id)
        if k not in best or rank > (s2.parse_baseline(best[k].baseline), best[k].item_id):
            best[k] = sc
    winners = set(id(s) for s in best.values())
    for sc in scenes:
        if id(sc) not in winners:
            keep = best[(sc.tile, sc.crs, sc.datetime)]
            dropped.append({"id": sc.item_id, "reason": f"reprocessed copy: {keep.item_id} "
                            f"(baseline {keep.baseline}) supersedes baseline {sc.baseline}"})
    return [s for s in scenes if id(s) in winners], dropped


def _parse_item(item: dict[str, Any], bands: tuple[str, ...]) -> Scene | str:
    props = item.get("properties") or {}
    assets = item.get("assets") or {}
    missing = [k for k in (*bands, s2.SCL_ASSET) if k not in assets or not
               assets[k].get("href")]
    if missing:
        return f"no asset {', '.join(missing)}"
    crs = s2.item_crs(props, assets[bands[0]])
    if crs is None:
        return "no proj:epsg / proj:code"
    grid = s2.asset_grid(props, assets[bands[0]])
    if grid is None:
        return f"no proj:transform / proj:shape for {bands[0]}"
    baseline = s2.item_baseline(props)
    if baseline is None:
        return "no s2:processing_baseline: cannot tell whether the -1000 offset applies"
    if not props.get("datetime"):
        return "no datetime"
    tile = s2.item_tile(item) or f"{crs}@{grid[0].c:.0f},{grid[0].f:.0f}"
    orbit = props.get("sat:relative_orbit")
    cloud = props.get("eo:cloud_cover")
    return Scene(item_id=str(item["id"]), datetime=str(props["datetime"]), tile=tile, crs=crs,
                 baseline=baseline, relative_orbit=int(orbit) if orbit is not None else None,
                 platform=props.get("platform"),
                 cloud_pct=float(cloud) if cloud is not None else None,
                 hrefs=tuple((k, assets[k]["href"]) for k in (*bands, s2.SCL_ASSET)),
                 tile_transform=grid[0], tile_shape=grid[1])


def _grid_for(tile: str, crs: str, transform: Affine, shape: tuple[int, int], aoi: AOI
              ) -> Grid | None:
    """The AOI grid in this tile, or None when the AOI is not inside the tile's raster."""
    try:
        proj = transform_bounds("EPSG:4326", crs, *aoi, densify_pts=21)
    except Exception:  # unknown CRS or projection failure: this tile cannot hold the AOI
        return None
    if not all(math.isfinite(v) for v in proj):
        return None
    w, s, e, n = s2.snap_bounds(proj, (transform.c, transform.f))
    tw, tn = transform.c, transform.f
    te, ts = tw + transform.a * shape[1], tn + transform.e * shape[0]
    eps = 1e-6
    if w < tw - eps or e > te + eps or s < ts - eps or n > tn + eps:
        return None
    res = transform.a
    return Grid(tile=tile, crs=crs, transform=Affine(res, 0.0, w, 0.0, -res, n),
                width=round((e - w) / res), height=round((n - s) / res), aoi_bounds=proj)


def select_tile(scenes: list[Scene], aoi: AOI, max_tile_cloud_pct: float
                ) -> tuple[Grid, list[Scene], list[dict[str, Any]]]:
    """Among tiles (tile id, CRS, tile grid) whose raster extent contains the AOI, the one with
    the most scenes within ``max_tile_cloud_pct`` (ties: more scenes, then the AOI nearest the
    tile centre).

    Returns the grid, that tile's scenes and the other tiles' scenes as dropped records.
    """
    groups: dict[tuple[Any, ...], list[Scene]] = {}
    for sc in scenes:
        groups.setdefault((sc.tile, sc.crs, tuple(sc.tile_transform)[:6], sc.tile_shape),
                          []).append(sc)
    candidates = []
    for (tile, crs, tr, shape), members in groups.items():
        grid = _grid_for(tile, crs, Affine(*tr), shape, aoi)
        if grid is None:
            continue
        t = Affine(*tr)
        cx, cy = t.c + t.a * shape[1] / 2, t.f + t.e * shape[0] / 2
        gx, gy = (grid.bounds[0] + grid.bounds[2]) / 2, (grid.bounds[1] + grid.bounds[3]) / 2
        usable = sum(1 for m in members
                     if m.cloud_pct is None or m.cloud_pct <= max_tile_cloud_pct)
        candidates.append(((-usable, -len(members), math.hypot(gx - cx, gy - cy), tile, crs),
                           grid, members))
    if not candidates:
        tiles = sorted({f"{k[0]} ({k[1]})" for k in groups})
        raise ConfigError(f"AOI {','.join(f'{v:g}' for v in aoi)} is not inside one tile: it "
                          f"crosses the edge of {', '.join(tiles)}; use a smaller AOI or "
                          "split it")
    candidates.sort(key=lambda c: c[0])
    _, grid, members = candidates[0]
    others = [{"id": sc.item_id, "reason": f"other tile {sc.tile} ({sc.crs}); the stack uses "
               f"{grid.tile} ({grid.crs})"}
              for _, g, ms in candidates[1:] for sc in ms]
    others += [{"id": sc.item_id, "reason": f"tile {sc.tile} ({sc.crs}) does not contain the "
                "whole AOI"}
               for sc in scenes if sc not in members
               and not any(sc in ms for _, _, ms in candidates)]
    return grid, sorted(members, key=lambda sc: sc.datetime), others


def _sign(href: str) -> str:
    try:
        return planetary_computer.sign(href)
    except (requests.RequestException, ValueError) as exc:
        raise FetchError(f"cannot get a SAS token to sign {href}: {_one_line(exc)}") from None


def _forget_tokens(hrefs: list[str]) -> bool:
    """Drop cached SAS tokens for these hrefs' containers; True if any href is signable."""
    settings = planetary_computer.settings.Settings.get()
    found = False
    for href in hrefs:
        parsed = urlparse(href)
        if parsed.netloc.endswith(".blob.core.windows.net"):
            account = parsed.netloc.split(".")[0]
            container = parsed.path.lstrip("/").split("/", 1)[0]
            planetary_computer.sas.TOKEN_CACHE.pop(
                f"{settings.sas_url}/{account}/{container}", None)
            found = True
    return found


def read_scene(scene: Scene, grid: Grid, bands: tuple[str, ...], gdal_env: dict[str, str]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one scene on the stack grid: reflectance (B, H, W) with NaN where invalid, and
    the ``nodata`` and ``cloud`` masks (H, W).

    Signs just before reading; after an HTTP 403 (expired or revoked SAS token) signs again
    with a fresh token, once.
    """
    hrefs = dict(scene.hrefs)
    for attempt in range(2):
        signed = {k: _sign(h) for k, h in hrefs.items()}
        try:
            with rasterio.Env(**gdal_env):
                dn = np.stack([_read_window(signed[b], grid, b, scene, repeat=False)
                               for b in bands])
                scl = _read_window(signed[s2.SCL_ASSET], grid, s2.SCL_ASSET, scene, repeat=True)
            break
        except RasterioIOError as exc:
            if attempt == 0 and "403" in str(exc) and _forget_tokens(list(hrefs.values())):
                continue
            raise FetchError(f"reading {scene.item_id} failed: {_one_line(exc)}") from None
    nodata, cloud = s2.classify(dn, scl)
    refl = s2.harmonise(dn, scene.baseline)
    refl[:, nodata | cloud] = np.nan
    return refl, nodata, cloud


def _read_window(href: str, grid: Grid, key: str, scene: Scene, *, repeat: bool
                 ) -> np.ndarray:
    """The grid's window of one asset at native resolution; coarser pixels (SCL) are repeated
    up to the grid when ``repeat``."""
    with rasterio.open(href) as src:
        where = f"{scene.item_id} asset {key}"
        if src.crs is None or src.crs != CRS.from_user_input(grid.crs):
            raise FetchError(f"{where} is in {src.crs}, its item says {grid.crs}")
        col, row, w, h = s2.pixel_window(grid.bounds, src.transform)
        if col < 0 or row < 0 or col + w > src.width or row + h > src.height:
            raise FetchError(f"{where}: the AOI window lies outside the raster")
        data = src.read(1, window=Window(col, row, w, h))
    factor = grid.width / w
    if factor != int(factor) or grid.height / h != factor or (factor != 1 and not repeat):
        raise FetchError(f"{where}: {src.transform.a:g} m pixels do not nest in the "
                         f"{grid.transform.a:g} m grid")
    return s2.upsample_repeat(data, int(factor)) if factor > 1 else data
