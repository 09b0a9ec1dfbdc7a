"""Fetch a cloud-screened Sentinel-2 L2A stack from a STAC API (Planetary Computer by default).

One MGRS tile, one CRS, native 10 m pixels: the AOI is projected into the tile's UTM zone,
snapped outward to the 60 m tile lattice and read with plain rasterio windows (no
resampling). Scenes are harmonised (:mod:`splatsr.io.sentinel2`), screened with the scene
classification layer and written as a :mod:`splatsr.io.stack` directory.

What to fetch is a :class:`~splatsr.io.query.SceneQuery` (or its fields as keywords).

Networking: the search retries 429 (honouring ``Retry-After``), 5xx and timeouts through
pystac-client's ``StacApiIO`` with a urllib3 ``Retry``; a refused connection or a failed DNS
lookup is not retried (offline, the search fails at once, naming the host);
planetary-computer's token requests retry 429/5xx (its own ``Retry``); COG reads retry
429/5xx inside GDAL (``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY``, exponential backoff;
GDAL 3.10 does not read ``Retry-After``).
Asset hrefs are signed with :func:`planetary_computer.sign` just before each scene is read
(only ``*.blob.core.windows.net`` hrefs are signed; others pass unchanged) and re-signed with a
fresh token when a read answers HTTP 403.

Resuming: every scene read leaves ``obs/<item>.scene.json`` (its fractions and grid) and, when
kept, ``obs/<item>.tif``, both written atomically; a re-run on the same grid reads neither
again. ``stack.json`` is written last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm  # not tqdm.auto: no widget (and no warning) in notebooks

import splatsr.io.stac as _stac
from splatsr.errors import ConfigError, FetchError
from splatsr.io.atomic import write_text_atomic
from splatsr.io.query import (
    AOI,
    COLLECTION,
    PC_URL,
    SceneQuery,
    as_query,
    parse_aoi,
    split_query,
)
from splatsr.io.stac import Grid, Scene
from splatsr.io.stack import Stack, read_stack, write_observation, write_stack_json

CACHE_ENV = "SPLATSR_CACHE"
_RECORD_VERSION = 1

log = logging.getLogger(__name__)

__all__ = ["COLLECTION", "PC_URL", "SceneQuery", "ScenePlan", "cache_key", "cache_root",
           "fetch_cached", "fetch_stack", "parse_aoi", "plan_scenes", "remote_gdal_env"]


def fetch_stack(query: SceneQuery | None = None, *, out_dir: str | os.PathLike,
                max_workers: int = 4, progress: bool = True, http_retries: int = 5,
                http_backoff_s: float = 1.0, **query_fields: Any) -> Stack:
    """Search, read and screen Sentinel-2 L2A scenes over an AOI into a stack directory.

    Parameters
    ----------
    query
        What to fetch (:class:`SceneQuery`: AOI, dates, bands, ``max_cloud``,
        ``min_coverage``, ``max_tile_cloud_pct``, ``stac_url``, ``collection``). Instead of
        one, its fields may be given as keywords (``aoi=..., start=..., end=...``).
    out_dir
        The stack directory to write (created; an earlier run's files there are reused).
    max_workers
        Scenes read in parallel.
    progress
        Print a status line before the search and show a progress bar, on stderr.
    http_retries, http_backoff_s
        Retries of searches and COG reads on HTTP 429/5xx and timeouts, and their backoff (s,
        growing exponentially; search retries honour ``Retry-After``). Refused connections
        and failed DNS lookups fail at once. SAS token requests retry on their own.
    **query_fields
        The fields of :class:`SceneQuery`, when ``query`` is not given.

    Returns
    -------
    Stack
        The written stack, observations sorted by time, per-observation metadata in
        :attr:`Observation.extra` (``item_id``, ``baseline``, ``tile``, ``valid_fraction``, ...).

    Raises
    ------
    ConfigError
        Invalid AOI, dates, bands or thresholds; AOI not inside a single tile.
    FetchError
        No scenes match the query, none passes the cloud and coverage screens, the STAC API
        cannot be reached, or a raster read fails after retries.
    """
    q = as_query(query, **query_fields)
    if int(max_workers) < 1:
        raise ConfigError(f"max_workers must be >= 1, got {max_workers}")
    plan = plan_scenes(q, http_retries=http_retries, http_backoff_s=http_backoff_s,
                       progress=progress)
    out = Path(out_dir)
    created = not out.exists()
    records = _fetch_all(plan.scenes, plan.grid, q.bands, out, max_cloud=q.max_cloud,
                         min_coverage=q.min_coverage, max_workers=int(max_workers),
                         progress=progress,
                         gdal_env=remote_gdal_env(http_retries, http_backoff_s))
    kept, screened = _screen_all(plan.scenes, records, q)
    if not kept:
        if created:  # leave nothing behind for a query that produced no stack
            shutil.rmtree(out, ignore_errors=True)
        raise FetchError(_nothing_kept_message(screened, list(plan.prefiltered), q,
                                               plan.grid.tile))
    dropped = list(plan.dropped) + [
        {"id": s.item_id, "reason": r, "cloud_fraction": rec["cloud_fraction"],
         "nodata_fraction": rec["nodata_fraction"]} for s, rec, r in screened]
    _write_json(out, plan, q, [_observation(s, rec) for s, rec, _ in kept], dropped)
    return read_stack(out)


_Screened = list[tuple[Scene, dict[str, Any], str | None]]


def _screen_all(scenes: Sequence[Scene], records: dict[str, dict[str, Any]], q: SceneQuery
                ) -> tuple[_Screened, _Screened]:
    """The scenes kept (sorted by time) and those screened out, with their records."""
    kept: _Screened = []
    screened: _Screened = []
    for scene in scenes:
        rec = records[scene.item_id]
        reason = _screen(rec, q.max_cloud, q.min_coverage)
        (screened if reason else kept).append((scene, rec, reason))
    kept.sort(key=lambda t: (t[0].datetime, t[0].item_id))
    return kept, screened


def _write_json(out: Path, plan: ScenePlan, q: SceneQuery,
                observations: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> None:
    grid = plan.grid
    write_stack_json(out, crs=grid.crs, transform=grid.transform, width=grid.width,
                     height=grid.height, bands=q.bands, observations=observations,
                     tile=grid.tile, source=q.source(),
                     harmonisation="reflectance = (DN + offset_dn) / 10000 with offset_dn = "
                     "-1000 for processing baseline >= 04.00; NaN where DN = 0 or SCL in "
                     "{0, 1, 3, 8, 9, 10, 11}; not clipped",
                     dropped=sorted(dropped, key=lambda d: d["id"]))


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
    query: SceneQuery | None = None  # the query planned


def plan_scenes(query: SceneQuery | None = None, *, http_retries: int = 5,
                http_backoff_s: float = 1.0, progress: bool = False,
                **query_fields: Any) -> ScenePlan:
    """Search STAC, pick the tile and grid for the AOI and pre-filter by ``eo:cloud_cover``.

    No pixel is read. Parameters as for :func:`fetch_stack` (``progress``: print a status
    line on stderr before the search).

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
    q = as_query(query, **query_fields)
    if int(http_retries) < 0 or float(http_backoff_s) < 0:
        raise ConfigError("http_retries and http_backoff_s must be >= 0")
    if progress:
        print(f"searching {q.host} for {q.collection} over "
              f"{','.join(f'{v:g}' for v in q.aoi)}, {q.start} to {q.end} ...",
              file=sys.stderr, flush=True)
    items = _stac.search(q, retries=http_retries, backoff_s=http_backoff_s)
    if not items:
        raise FetchError(f"no scenes found for {q.describe()}")
    scenes, dropped = _stac.parse_items(items, q.bands)
    if not scenes:
        reasons = "; ".join(sorted({d["reason"] for d in dropped}))
        raise FetchError(f"none of the {len(items)} scenes found for {q.describe()} is "
                         f"usable: {reasons}")
    limit = q.max_tile_cloud_pct
    grid, scenes, more = _stac.select_tile(scenes, q.aoi, limit)
    dropped += more
    too_cloudy = [s for s in scenes if s.cloud_pct is not None and s.cloud_pct > limit]
    dropped += [{"id": s.item_id, "reason": f"tile cloud cover {s.cloud_pct:.1f} % > "
                 f"{limit:g} % (eo:cloud_cover pre-filter)"} for s in too_cloudy]
    return ScenePlan(aoi=q.aoi, start=q.start, end=q.end, bands=q.bands, grid=grid,
                     scenes=tuple(s for s in scenes if s not in too_cloudy),
                     prefiltered=tuple(too_cloudy), dropped=tuple(dropped), query=q)


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


def _nothing_kept_message(screened: _Screened, prefiltered: list[Scene], q: SceneQuery,
                          tile: str) -> str:
    cloudy = [rec["cloud_fraction"] for _, rec, r in screened if r and r.startswith("cloud")]
    sparse = [1.0 - rec["nodata_fraction"] for _, rec, r in screened
              if r and r.startswith("obs")]
    n = len(screened) + len(prefiltered)
    parts = []
    if cloudy:
        parts.append(f"{len(cloudy)} too cloudy over the AOI (cloud fractions "
                     f"{', '.join(f'{c:.2f}' for c in cloudy)} > max_cloud {q.max_cloud:g})")
    if prefiltered:
        parts.append(f"{len(prefiltered)} with tile cloud cover "
                     f"{', '.join(f'{s.cloud_pct:.0f}' for s in prefiltered)} % > "
                     f"{q.max_tile_cloud_pct:g} %")
    if sparse:
        parts.append(f"{len(sparse)} observing too little of the AOI (coverage "
                     f"{', '.join(f'{c:.2f}' for c in sparse)} < min_coverage "
                     f"{q.min_coverage:g})")
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


def cache_key(query: SceneQuery | None = None, **query_fields: Any) -> str:
    """A short hash of a fetch query (the folder name :func:`fetch_cached` uses).

    Same as ``SceneQuery(...).cache_key()``; takes a query or its fields as keywords.
    """
    return as_query(query, **query_fields).cache_key()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The parent folder of cached stacks: ``cache_dir``, ``$SPLATSR_CACHE`` or
    ``~/.cache/splatsr/stacks``."""
    root = (cache_dir if cache_dir is not None
            else os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "splatsr" / "stacks")
    return Path(root).expanduser()


def fetch_cached(query: SceneQuery | None = None, *,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True,
                 **kwargs: Any) -> Stack:
    """Like :func:`fetch_stack`, into a cache folder keyed by the query, reused when complete.

    Parameters
    ----------
    query
        What to fetch; or give the :class:`SceneQuery` fields as keywords.
    cache_dir
        Parent folder of the cached stacks; default ``$SPLATSR_CACHE`` or
        ``~/.cache/splatsr/stacks``.
    progress
        As for :func:`fetch_stack`.
    **kwargs
        :class:`SceneQuery` fields (when ``query`` is not given) and further keywords for
        :func:`fetch_stack` (``max_workers``, ``http_retries``, ...); the latter do not enter
        the cache key.

    Returns
    -------
    Stack
        The cached stack (no network access when ``stack.json`` is already there).
    """
    fields_, rest = split_query(kwargs)
    q = as_query(query, **fields_)
    folder = cache_root(cache_dir) / q.cache_key()
    if (folder / "stack.json").is_file():
        try:
            return read_stack(folder)
        except Exception as exc:  # a damaged cache entry is refetched, never trusted
            log.warning("cached stack %s unreadable (%s); fetching again", folder, exc)
    return fetch_stack(q, out_dir=folder, progress=progress, **rest)
