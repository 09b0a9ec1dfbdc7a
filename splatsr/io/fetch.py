"""Fetch a cloud-screened Sentinel-2 L2A stack from a STAC API (Planetary Computer by default).

One MGRS tile, one CRS, native 10 m pixels: the AOI is projected into the tile's UTM zone,
snapped outward to the 60 m tile lattice and read with plain rasterio windows (no
resampling). Scenes are harmonised (:mod:`splatsr.io.sentinel2`), screened with the scene
classification layer and written as a :mod:`splatsr.io.stack` directory.

Networking: the search retries 429 (honouring ``Retry-After``) and 5xx through pystac-client's
``StacApiIO`` with a urllib3 ``Retry``; planetary-computer's token requests retry the same
way (its own ``Retry``); COG reads retry 429/5xx inside GDAL (``GDAL_HTTP_MAX_RETRY``,
``GDAL_HTTP_RETRY_DELAY``, exponential backoff; GDAL 3.10 does not read ``Retry-After``).
Asset hrefs are signed with :func:`planetary_computer.sign` just before each scene is read
(only ``*.blob.core.windows.net`` hrefs are signed; others pass unchanged) and re-signed with a
fresh token when a read answers HTTP 403.

Resuming: every scene read leaves ``obs/<item>.scene.json`` (its fractions and grid) and, when
kept, ``obs/<item>.tif``, both written atomically; a re-run on the same grid reads neither
again. ``stack.json`` is written last.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import splatsr.io.stac as _stac
from splatsr.errors import ConfigError, FetchError
from splatsr.io.atomic import write_text_atomic
from splatsr.io.sentinel2 import TEN_M_BANDS
from splatsr.io.stac import AOI, Grid, Scene
from splatsr.io.stack import Stack, read_stack, write_observation, write_stack_json

PC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
COLLECTION = "sentinel-2-l2a"
CACHE_ENV = "SPLATSR_CACHE"
_RECORD_VERSION = 1

log = logging.getLogger(__name__)

__all__ = ["PC_URL", "fetch_cached", "fetch_stack", "parse_aoi"]


def parse_aoi(text: str | os.PathLike) -> AOI:
    """Parse an area of interest into lon/lat bounds.

    Parameters
    ----------
    text
        ``"W,S,E,N"`` in degrees (longitude, latitude; WGS 84), or the path of a GeoJSON file
        holding a Feature, a FeatureCollection or a bare geometry (its bounds are used).

    Returns
    -------
    tuple of float
        ``(west, south, east, north)`` in degrees.

    Raises
    ------
    ConfigError
        If the text is neither, the file is not GeoJSON, or the bounds are empty, out of range
        or cross the antimeridian.
    """
    s = os.fspath(text).strip()
    path = Path(s)
    if s.lower().endswith((".json", ".geojson")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"AOI file {s!r} does not exist")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            xs, ys = _geojson_coords(doc)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
                ValueError, IndexError) as exc:
            raise ConfigError(f"AOI file {s!r} is not a GeoJSON Feature, FeatureCollection "
                              f"or geometry ({exc})") from None
        if not xs:
            raise ConfigError(f"AOI file {s!r} holds no coordinates")
        return _check_aoi((min(xs), min(ys), max(xs), max(ys)), s)
    parts = [p for p in s.replace(" ", ",").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise ConfigError(f"AOI {s!r} must be 'W,S,E,N' (lon/lat degrees) or a GeoJSON file")
    return _check_aoi(tuple(values), s)  # type: ignore[arg-type]


def _geojson_coords(doc: dict[str, Any]) -> tuple[list[float], list[float]]:
    geoms: list[dict[str, Any]] = []
    if doc.get("type") == "FeatureCollection":
        geoms = [f["geometry"] for f in doc["features"] if f.get("geometry")]
    elif doc.get("type") == "Feature":
        geoms = [doc["geometry"]] if doc.get("geometry") else []
    elif doc.get("type") == "GeometryCollection":
        geoms = list(doc["geometries"])
    elif "coordinates" in doc:
        geoms = [doc]
    else:
        raise ValueError(f"unexpected type {doc.get('type')!r}")
    xs: list[float] = []
    ys: list[float] = []

    def walk(c: Any) -> None:
        if c and isinstance(c[0], (int, float)):
            xs.append(float(c[0]))
            ys.append(float(c[1]))
        else:
            for v in c:
                walk(v)

    for g in geoms:
        if g.get("type") == "GeometryCollection":
            gx, gy = _geojson_coords(g)
            xs += gx
            ys += gy
        else:
            walk(g["coordinates"])
    return xs, ys


def _check_aoi(b: Sequence[float], shown: str) -> AOI:
    w, s, e, n = (float(v) for v in b)
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise ConfigError(f"AOI {shown!r}: bounds must be finite numbers")
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise ConfigError(f"AOI {shown!r}: longitudes must lie in [-180, 180] and latitudes "
                          "in [-90, 90] (order W,S,E,N)")
    if not (w < e and s < n):
        raise ConfigError(f"AOI {shown!r} is empty or inverted: need W < E and S < N "
                          "(order W,S,E,N; areas across the antimeridian are not supported)")
    return (w, s, e, n)


def _check_date(value: str | _dt.date, name: str) -> str:
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, _dt.date):
        return value.isoformat()
    try:
        return _dt.date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise ConfigError(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None


def _check_bands(bands: str | Sequence[str]) -> tuple[str, ...]:
    items = bands.split(",") if isinstance(bands, str) else list(bands)
    out = tuple(str(b).strip().upper() for b in items if str(b).strip())
    if not out:
        raise ConfigError("no bands given; choose from " + ", ".join(TEN_M_BANDS))
    for b in out:
        if b not in TEN_M_BANDS:
            raise ConfigError(f"unknown band {b!r}: splatsr fetches the 10 m bands "
                              f"{', '.join(TEN_M_BANDS)}")
    if len(set(out)) != len(out):
        raise ConfigError(f"bands {','.join(out)} list a band twice")
    return out


def fetch_stack(*, aoi: AOI | str, start: str | _dt.date, end: str | _dt.date,
                out_dir: str | os.PathLike, bands: str | Sequence[str] = TEN_M_BANDS,
                max_cloud: float = 0.2, min_coverage: float = 0.25,
                stac_url: str = PC_URL, collection: str = COLLECTION, max_workers: int = 4,
                progress: bool = True, max_tile_cloud_pct: float = 95.0,
                http_retries: int = 5, http_backoff_s: float = 1.0) -> Stack:
    """Search, read and screen Sentinel-2 L2A scenes over an AOI into a stack directory.

    Parameters
    ----------
    aoi
        ``(west, south, east, north)`` in lon/lat degrees, or text for :func:`parse_aoi`.
    start, end
        First and last acquisition day (inclusive), ``YYYY-MM-DD``.
    out_dir
        The stack directory to write (created; an earlier run's files there are reused).
    bands
        10 m bands, in file order.
    max_cloud
        Largest fraction of the AOI's observed pixels that may be cloud, cloud shadow, cirrus,
        snow or defective (SCL 1, 3, 8, 9, 10, 11) for a scene to be kept.
    min_coverage
        Smallest fraction of the AOI a scene must observe (DN > 0 and SCL > 0). No-data is
        not counted as cloud: a scene that sees half the AOI cloud-free is kept (NaN over the
        other half) unless ``min_coverage`` > 0.5.
    stac_url, collection
        STAC API root and collection id.
    max_workers
        Scenes read in parallel.
    progress
        Show a progress bar on stderr.
    max_tile_cloud_pct
        Coarse pre-filter: scenes whose tile-wide ``eo:cloud_cover`` exceeds this (percent)
        are not read.
    http_retries, http_backoff_s
        Retries of searches and COG reads on HTTP 429/5xx and connection errors, and their
        backoff in seconds (delays grow exponentially; a ``Retry-After`` header sets the
        delay of search retries). SAS token requests use planetary-computer's own retries
        (10, honouring ``Retry-After``).

    Returns
    -------
    Stack
        The written stack, observations sorted by time, per-observation metadata in
        :attr:`Observation.extra` (``item_id``, ``baseline``, ``tile``, ``relative_orbit``,
        ``valid_fraction``, ...).

    Raises
    ------
    ConfigError
        Invalid AOI, dates, bands or thresholds; AOI not inside a single tile.
    FetchError
        No scenes match the query, none passes the cloud and coverage screens, or the STAC API
        or a raster read fails after retries.
    """
    for name, v in (("max_cloud", max_cloud), ("min_coverage", min_coverage)):
        if not 0.0 <= float(v) <= 1.0:
            raise ConfigError(f"{name} must be a fraction in [0, 1], got {v}")
    if int(max_workers) < 1:
        raise ConfigError(f"max_workers must be >= 1, got {max_workers}")
    plan = plan_scenes(aoi=aoi, start=start, end=end, bands=bands, stac_url=stac_url,
                       collection=collection, max_tile_cloud_pct=max_tile_cloud_pct,
                       http_retries=http_retries, http_backoff_s=http_backoff_s)
    aoi_ll, start_s, end_s, band_t = plan.aoi, plan.start, plan.end, plan.bands
    grid, scenes, dropped = plan.grid, list(plan.scenes), list(plan.dropped)
    too_cloudy_tile = list(plan.prefiltered)

    out = Path(out_dir)
    created = not out.exists()
    env = remote_gdal_env(http_retries, http_backoff_s)
    records = _fetch_all(scenes, grid, band_t, out, max_cloud=max_cloud,
                         min_coverage=min_coverage, max_workers=int(max_workers),
                         progress=progress, gdal_env=env)
    kept, screened = [], []
    for scene in scenes:
        rec = records[scene.item_id]
        reason = _screen(rec, max_cloud, min_coverage)
        (screened if reason else kept).append((scene, rec, reason))
    dropped += [{"id": s.item_id, "reason": r, "cloud_fraction": rec["cloud_fraction"],
                 "nodata_fraction": rec["nodata_fraction"]} for s, rec, r in screened]
    if not kept:
        if created:  # leave nothing behind for a query that produced no stack
            shutil.rmtree(out, ignore_errors=True)
        raise FetchError(_nothing_kept_message(screened, too_cloudy_tile, max_cloud,
                                               min_coverage, max_tile_cloud_pct, grid.tile))
    kept.sort(key=lambda t: (t[0].datetime, t[0].item_id))
    observations = [_observation(s, rec) for s, rec, _ in kept]
    write_stack_json(out, crs=grid.crs, transform=grid.transform, width=grid.width,
                     height=grid.height, bands=band_t, observations=observations,
                     tile=grid.tile, source={
                         "stac_url": stac_url, "collection": collection,
                         "aoi_lonlat": list(aoi_ll), "start": start_s, "end": end_s,
                         "max_cloud": max_cloud, "min_coverage": min_coverage,
                         "max_tile_cloud_pct": max_tile_cloud_pct},
                     harmonisation="reflectance = (DN + offset_dn) / 10000 with offset_dn = "
                     "-1000 for processing baseline >= 04.00; NaN where DN = 0 or SCL in "
                     "{0, 1, 3, 8, 9, 10, 11}; not clipped",
                     dropped=sorted(dropped, key=lambda d: d["id"]))
    return read_stack(out)


@dataclass(frozen=True)
class ScenePlan:
    """What a STAC search picked for an AOI: the stack grid and the scenes to read on it."""

    aoi: AOI  # (west, south, east, north), lon/lat degrees
    start: str  # first day, YYYY-MM-DD
    end: str  # last day, YYYY-MM-DD
    bands: tuple[str, ...]  # 10 m bands, in file order
    grid: Grid  # the AOI on the chosen tile's 10 m grid, snapped to the 60 m lattice
    scenes: tuple[Scene, ...]  # the tile's scenes within the eo:cloud_cover pre-filter, by time
    prefiltered: tuple[Scene, ...]  # the tile's scenes above the pre-filter
    dropped: tuple[dict[str, Any], ...]  # {"id", "reason"} of every scene not used


def plan_scenes(*, aoi: AOI | str, start: str | _dt.date, end: str | _dt.date,
                bands: str | Sequence[str] = TEN_M_BANDS, stac_url: str = PC_URL,
                collection: str = COLLECTION, max_tile_cloud_pct: float = 95.0,
                http_retries: int = 5, http_backoff_s: float = 1.0) -> ScenePlan:
    """Search STAC, pick the tile and grid for the AOI and pre-filter by ``eo:cloud_cover``.

    No pixel is read. Parameters as for :func:`fetch_stack`.

    Returns
    -------
    ScenePlan

    Raises
    ------
    ConfigError
        Invalid AOI, dates, bands or retry settings; AOI not inside a single tile.
    FetchError
        The search fails or finds no usable item.
    """
    aoi_ll = parse_aoi(aoi) if isinstance(aoi, (str, os.PathLike)) else _check_aoi(aoi, str(aoi))
    start_s, end_s = _check_date(start, "start"), _check_date(end, "end")
    if start_s > end_s:
        raise ConfigError(f"start {start_s} is after end {end_s}")
    band_t = _check_bands(bands)
    if int(http_retries) < 0 or float(http_backoff_s) < 0:
        raise ConfigError("http_retries and http_backoff_s must be >= 0")
    query = (f"{collection} at {stac_url}, bbox {','.join(f'{v:g}' for v in aoi_ll)}, "
             f"{start_s}/{end_s}")
    items = _stac.search(stac_url=stac_url, collection=collection, aoi=aoi_ll,
                         datetime=f"{start_s}T00:00:00Z/{end_s}T23:59:59Z",
                         retries=http_retries, backoff_s=http_backoff_s, query=query)
    if not items:
        raise FetchError(f"no scenes found for {query}")
    scenes, dropped = _stac.parse_items(items, band_t)
    if not scenes:
        reasons = "; ".join(sorted({d["reason"] for d in dropped}))
        raise FetchError(f"none of the {len(items)} scenes found for {query} is usable: "
                         f"{reasons}")
    grid, scenes, more = _stac.select_tile(scenes, aoi_ll, max_tile_cloud_pct)
    dropped += more
    too_cloudy_tile = [s for s in scenes if s.cloud_pct is not None
                       and s.cloud_pct > max_tile_cloud_pct]
    dropped += [{"id": s.item_id, "reason": f"tile cloud cover {s.cloud_pct:.1f} % > "
                 f"{max_tile_cloud_pct:g} % (eo:cloud_cover pre-filter)"}
                for s in too_cloudy_tile]
    return ScenePlan(aoi=aoi_ll, start=start_s, end=end_s, bands=band_t, grid=grid,
                     scenes=tuple(s for s in scenes if s not in too_cloudy_tile),
                     prefiltered=tuple(too_cloudy_tile), dropped=tuple(dropped))


def remote_gdal_env(retries: int, backoff_s: float) -> dict[str, str]:
    """GDAL settings for remote COG reads: retries with backoff, merged range requests."""
    return {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": str(retries),
            "GDAL_HTTP_RETRY_DELAY": f"{max(backoff_s, 0.001):g}",
            "GDAL_HTTP_MULTIRANGE": "YES", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
            "VSI_CACHE": "TRUE", "GDAL_HTTP_TIMEOUT": "120"}


def _screen(rec: dict[str, Any], max_cloud: float, min_coverage: float) -> str | None:
    """Why a scene is dropped, or None when it is kept."""
    coverage = 1.0 - rec["nodata_fraction"]
    if coverage <= 0.0 or coverage < min_coverage:
        return f"observes {coverage:.2f} of the AOI < min_coverage {min_coverage:g}"
    if rec["cloud_fraction"] > max_cloud:
        return f"cloud fraction {rec['cloud_fraction']:.2f} > max_cloud {max_cloud:g}"
    return None


def _nothing_kept_message(screened: list[tuple[Scene, dict[str, Any], str]],
                          prefiltered: list[Scene], max_cloud: float, min_coverage: float,
                          max_tile_pct: float, tile: str) -> str:
    cloudy = [rec["cloud_fraction"] for _, rec, r in screened if r.startswith("cloud")]
    sparse = [1.0 - rec["nodata_fraction"] for _, rec, r in screened if r.startswith("obs")]
    n = len(screened) + len(prefiltered)
    parts = []
    if cloudy:
        parts.append(f"{len(cloudy)} too cloudy over the AOI (cloud fractions "
                     f"{', '.join(f'{c:.2f}' for c in cloudy)} > max_cloud {max_cloud:g})")
    if prefiltered:
        parts.append(f"{len(prefiltered)} with tile cloud cover "
                     f"{', '.join(f'{s.cloud_pct:.0f}' for s in prefiltered)} % > "
                     f"{max_tile_pct:g} %")
    if sparse:
        parts.append(f"{len(sparse)} observing too little of the AOI (coverage "
                     f"{', '.join(f'{c:.2f}' for c in sparse)} < min_coverage {min_coverage:g})")
    return f"no usable scene among the {n} of tile {tile}: " + "; ".join(parts)


def _observation(scene: Scene, rec: dict[str, Any]) -> dict[str, Any]:
    return {"id": scene.item_id, "datetime": scene.datetime, "path": rec["path"],
            "item_id": scene.item_id, "baseline": scene.baseline,
            "offset_dn": _stac.offset_for(scene), "tile": scene.tile, "crs": scene.crs,
            "relative_orbit": scene.relative_orbit, "platform": scene.platform,
            "valid_fraction": rec["valid_fraction"], "cloud_fraction": rec["cloud_fraction"],
            "nodata_fraction": rec["nodata_fraction"], "tile_cloud_pct": scene.cloud_pct}


def _fetch_all(scenes: Sequence[Scene], grid: Grid, bands: tuple[str, ...], out: Path, *,
               max_cloud: float, min_coverage: float, max_workers: int, progress: bool,
               gdal_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per-scene records, reading only the scenes that have no usable record on disk."""
    key = {"version": _RECORD_VERSION, **grid.key(), "bands": list(bands)}
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for scene in scenes:
        rec = _load_record(out, scene, key)
        if rec is not None and (_screen(rec, max_cloud, min_coverage) or rec["path"]):
            records[scene.item_id] = rec  # decided without reading: dropped, or file on disk
        else:
            todo.append(scene)
    if not todo:
        return records
    _retire_stale_stack(out, grid, bands)
    bar = tqdm(total=len(todo), desc="reading scenes", unit="scene", disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=max_workers) as pool:
        futures = {pool.submit(_fetch_one, s, grid, bands, out, key, max_cloud, min_coverage,
                               gdal_env): s for s in todo}
        try:
            for fut in as_completed(futures):
                records[futures[fut].item_id] = fut.result()
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return records


def _fetch_one(scene: Scene, grid: Grid, bands: tuple[str, ...], out: Path,
               key: dict[str, Any], max_cloud: float, min_coverage: float,
               gdal_env: dict[str, str]) -> dict[str, Any]:
    refl, nodata, cloud = _stac.read_scene(scene, grid, bands, gdal_env)
    aoi = grid.aoi_mask()
    n_aoi = int(aoi.sum())
    n_nodata = int((nodata & aoi).sum())
    n_cloud = int((cloud & aoi).sum())
    n_data = n_aoi - n_nodata
    rec: dict[str, Any] = {
        **key, "item_id": scene.item_id, "path": None, "aoi_pixels": n_aoi,
        "nodata_fraction": n_nodata / n_aoi,
        "cloud_fraction": n_cloud / n_data if n_data else 1.0,
        "valid_fraction": (n_data - n_cloud) / n_aoi}
    if _screen(rec, max_cloud, min_coverage) is None:
        rel = f"obs/{_stac.safe_name(scene.item_id)}.tif"
        write_observation(out / rel, refl, crs=grid.crs, transform=grid.transform, bands=bands)
        rec["path"] = rel
    write_text_atomic(_record_path(out, scene), json.dumps(rec, indent=1) + "\n")
    return rec


def _record_path(out: Path, scene: Scene) -> Path:
    return out / "obs" / f"{_stac.safe_name(scene.item_id)}.scene.json"


def _load_record(out: Path, scene: Scene, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        rec = json.loads(_record_path(out, scene).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or any(rec.get(k) != v for k, v in key.items()):
        return None  # another grid, band list or format: read again
    if rec.get("path") and not (out / rec["path"]).is_file():
        return None
    return rec


def _retire_stale_stack(out: Path, grid: Grid, bands: tuple[str, ...]) -> None:
    """Remove a ``stack.json`` of another grid before observation files are replaced, so no
    stack.json ever describes files it does not match."""
    spec_path = out / "stack.json"
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    same = (isinstance(spec, dict) and spec.get("crs") == grid.crs
            and spec.get("transform") == list(tuple(grid.transform)[:6])
            and spec.get("width") == grid.width and spec.get("height") == grid.height
            and spec.get("bands") == list(bands))
    if not same:
        spec_path.unlink(missing_ok=True)


def cache_key(*, aoi: AOI | str, start: str | _dt.date, end: str | _dt.date,
              bands: str | Sequence[str] = TEN_M_BANDS, max_cloud: float = 0.2,
              min_coverage: float = 0.25, stac_url: str = PC_URL,
              collection: str = COLLECTION) -> str:
    """A short hash of a fetch query (the folder name :func:`fetch_cached` uses)."""
    aoi_ll = parse_aoi(aoi) if isinstance(aoi, (str, os.PathLike)) else _check_aoi(aoi, str(aoi))
    query = {"v": 1, "aoi": [round(v, 7) for v in aoi_ll], "start": _check_date(start, "start"),
             "end": _check_date(end, "end"), "bands": list(_check_bands(bands)),
             "max_cloud": float(max_cloud), "min_coverage": float(min_coverage),
             "stac_url": stac_url.rstrip("/"), "collection": collection}
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def fetch_cached(*, aoi: AOI | str, start: str | _dt.date, end: str | _dt.date,
                 bands: str | Sequence[str] = TEN_M_BANDS, max_cloud: float = 0.2,
                 min_coverage: float = 0.25, stac_url: str = PC_URL,
                 collection: str = COLLECTION, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True, **kwargs: Any) -> Stack:
    """Like :func:`fetch_stack`, into a cache folder keyed by the query, reused when complete.

    Parameters
    ----------
    aoi, start, end, bands, max_cloud, min_coverage, stac_url, collection, progress
        As for :func:`fetch_stack`.
    cache_dir
        Parent folder of the cached stacks; default ``$SPLATSR_CACHE`` or
        ``~/.cache/splatsr/stacks``.
    **kwargs
        Further keywords for :func:`fetch_stack` (``max_workers``, ``http_retries``, ...);
        they do not enter the cache key.

    Returns
    -------
    Stack
        The cached stack (no network access when ``stack.json`` is already there).
    """
    root = Path(cache_dir if cache_dir is not None
                else os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "splatsr" / "stacks")
    query = dict(aoi=aoi, start=start, end=end, bands=bands, max_cloud=max_cloud,
                 min_coverage=min_coverage, stac_url=stac_url, collection=collection)
    folder = root.expanduser() / cache_key(**query)
    if (folder / "stack.json").is_file():
        try:
            return read_stack(folder)
        except Exception as exc:  # a damaged cache entry is refetched, never trusted
            log.warning("cached stack %s unreadable (%s); fetching again", folder, exc)
    return fetch_stack(out_dir=folder, progress=progress, **query, **kwargs)
