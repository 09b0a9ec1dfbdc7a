"""What to fetch: a :class:`SceneQuery` (AOI, dates, bands, cloud limits, STAC source).

One frozen, validated value shared by :func:`splatsr.io.fetch.fetch_stack`,
:func:`splatsr.io.fetch.plan_scenes`, the fetch cache key and
:func:`splatsr.tiles.run.fit_aoi_tiled`, so the query is checked once and named the same way
everywhere. :func:`as_query` turns the keyword form (``aoi=..., start=..., end=...``) those
functions have always accepted into one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from splatsr.errors import ConfigError
from splatsr.io.sentinel2 import TEN_M_BANDS

PC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
COLLECTION = "sentinel-2-l2a"
DEFAULT_MAX_TILE_CLOUD_PCT = 95.0
AOI = tuple[float, float, float, float]  # (west, south, east, north), lon/lat degrees

__all__ = ["AOI", "COLLECTION", "PC_URL", "SceneQuery", "as_query", "parse_aoi",
           "query_fields", "split_query"]


@dataclass(frozen=True)
class SceneQuery:
    """A Sentinel-2 L2A query: where, when, which bands, how clear, from which STAC API.

    Every field is validated and normalised on construction (``ConfigError`` otherwise), so
    two queries that mean the same compare equal and hash to the same :meth:`cache_key`.

    Parameters
    ----------
    aoi
        ``(west, south, east, north)`` in lon/lat degrees, or text for :func:`parse_aoi`
        (``"W,S,E,N"`` or a GeoJSON file).
    start, end
        First and last acquisition day (inclusive): ``YYYY-MM-DD`` or a date.
    bands
        10 m bands in file order (``"B04,B08"`` or a sequence).
    max_cloud
        Largest fraction of the AOI's observed pixels that may be cloud, cloud shadow, cirrus,
        snow or defective (SCL 1, 3, 8, 9, 10, 11) for a scene to be kept.
    min_coverage
        Smallest fraction of the AOI a scene must observe (DN > 0 and SCL > 0). No-data is
        not counted as cloud: a scene that sees half the AOI cloud-free is kept (NaN over the
        other half) unless ``min_coverage`` > 0.5.
    max_tile_cloud_pct
        Pre-filter on the tile-wide ``eo:cloud_cover`` (percent).
    stac_url, collection
        STAC API root and collection id.
    """

    aoi: AOI
    start: str
    end: str
    bands: tuple[str, ...] = TEN_M_BANDS
    max_cloud: float = 0.2
    min_coverage: float = 0.25
    max_tile_cloud_pct: float = DEFAULT_MAX_TILE_CLOUD_PCT
    stac_url: str = PC_URL
    collection: str = COLLECTION

    def __post_init__(self) -> None:
        aoi = self.aoi
        aoi_ll = (parse_aoi(aoi) if isinstance(aoi, (str, os.PathLike))
                  else _check_aoi(aoi, str(aoi)))
        start, end = _check_date(self.start, "start"), _check_date(self.end, "end")
        if start > end:
            raise ConfigError(f"start {start} is after end {end}")
        for name in ("max_cloud", "min_coverage"):
            v = _number(getattr(self, name), name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be a fraction in [0, 1], got {v:g}")
            object.__setattr__(self, name, v)
        pct = _number(self.max_tile_cloud_pct, "max_tile_cloud_pct")
        if not 0.0 <= pct <= 100.0:
            raise ConfigError(f"max_tile_cloud_pct must be a percentage in [0, 100], got {pct:g}")
        url = str(self.stac_url).strip().rstrip("/")
        if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
            raise ConfigError(f"STAC URL {self.stac_url!r} must be an http(s) URL")
        for name, value in (("aoi", aoi_ll), ("start", start), ("end", end),
                            ("bands", _check_bands(self.bands)), ("max_tile_cloud_pct", pct),
                            ("stac_url", url), ("collection", str(self.collection))):
            object.__setattr__(self, name, value)

    @property
    def host(self) -> str:
        """The STAC API's host name (and port), for messages."""
        return urlparse(self.stac_url).netloc

    @property
    def datetime(self) -> str:
        """The STAC ``datetime`` interval: whole days, UTC."""
        return f"{self.start}T00:00:00Z/{self.end}T23:59:59Z"

    def describe(self) -> str:
        """One line for messages: collection, host, bbox and dates."""
        return (f"{self.collection} at {self.stac_url}, bbox "
                f"{','.join(f'{v:g}' for v in self.aoi)}, {self.start}/{self.end}")

    def cache_key(self) -> str:
        """A 16-hex-digit hash of everything that decides the fetched stack.

        ``max_tile_cloud_pct`` enters only when it differs from its default, so keys of
        earlier versions (which left it out) stay valid.
        """
        doc: dict[str, Any] = {
            "v": 1, "aoi": [round(v, 7) for v in self.aoi], "start": self.start,
            "end": self.end, "bands": list(self.bands), "max_cloud": self.max_cloud,
            "min_coverage": self.min_coverage, "stac_url": self.stac_url,
            "collection": self.collection}
        if self.max_tile_cloud_pct != DEFAULT_MAX_TILE_CLOUD_PCT:
            doc["max_tile_cloud_pct"] = self.max_tile_cloud_pct
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def source(self) -> dict[str, Any]:
        """The query as recorded in ``stack.json`` (key ``source``)."""
        return {"stac_url": self.stac_url, "collection": self.collection,
                "aoi_lonlat": list(self.aoi), "start": self.start, "end": self.end,
                "max_cloud": self.max_cloud, "min_coverage": self.min_coverage,
                "max_tile_cloud_pct": self.max_tile_cloud_pct}


def query_fields() -> frozenset[str]:
    """The names of :class:`SceneQuery`'s fields (the keywords :func:`as_query` takes)."""
    return frozenset(f.name for f in fields(SceneQuery))


def as_query(query: SceneQuery | None = None, **fields_: Any) -> SceneQuery:
    """A :class:`SceneQuery` from a query or from its fields as keywords (not both).

    Keywords set to ``None`` count as not given, so callers can pass their defaults through.

    Raises
    ------
    ConfigError
        Both forms given, a required field (``aoi``, ``start``, ``end``) missing, an unknown
        keyword, or an invalid value.
    """
    given = {k: v for k, v in fields_.items() if v is not None}
    unknown = set(given) - query_fields()
    if unknown:
        raise ConfigError(f"unknown query field(s) {', '.join(sorted(unknown))}; a SceneQuery "
                          f"has {', '.join(sorted(query_fields()))}")
    if query is not None:
        if given:
            raise ConfigError(f"give either a SceneQuery or its fields, not both "
                              f"({', '.join(sorted(given))})")
        if not isinstance(query, SceneQuery):
            raise ConfigError(f"query must be a SceneQuery, got {type(query).__name__}")
        return query
    missing = [k for k in ("aoi", "start", "end") if k not in given]
    if missing:
        raise ConfigError(f"the query needs {', '.join(missing)} (an AOI and a date range)")
    return SceneQuery(**given)


def split_query(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keywords into :class:`SceneQuery` fields and the rest."""
    names = query_fields()
    return ({k: v for k, v in kwargs.items() if k in names},
            {k: v for k, v in kwargs.items() if k not in names})


def _number(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return v


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
    try:
        w, s, e, n = (float(v) for v in b)
    except (TypeError, ValueError):
        raise ConfigError(f"AOI {shown!r} must be (west, south, east, north) in lon/lat "
                          "degrees") from None
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


