"""Sentinel-2 L2A specifics: item metadata, harmonisation, the scene classification mask and
the 60 m tile lattice. Pure functions, no I/O.

Harmonisation (ESA, processing baseline 04.00 and later carry ``BOA_ADD_OFFSET = -1000``)::

    reflectance = (DN + offset_dn) / 10000,   offset_dn = -1000 if baseline >= 04.00 else 0

decided by the item's own ``s2:processing_baseline`` (never by its date: scenes from before
2022 reprocessed at 05.xx carry the offset too). DN 0 is no data. Values are not clipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from affine import Affine

from splatsr.errors import FetchError

TEN_M_BANDS = ("B02", "B03", "B04", "B08")  # the 10 m bands splatsr fuses
SCL_ASSET = "SCL"
SCL_INVALID = (0, 1, 3, 8, 9, 10, 11)  # no data, defective, shadow, cloud med/high, cirrus, snow
SCL_NODATA = 0
LATTICE_M = 60.0  # S2 tile origins are multiples of 60 m: 10, 20 and 60 m grids all align
OFFSET_BASELINE = (4, 0)
OFFSET_DN = -1000
QUANTIFICATION = 10000.0


def parse_baseline(text: str) -> tuple[int, ...]:
    """Parse a processing baseline such as ``"05.11"`` into a comparable tuple ``(5, 11)``.

    Raises
    ------
    ValueError
        If ``text`` is not dot-separated integers.
    """
    parts = str(text).strip().split(".")
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"not a processing baseline: {text!r}")
    return tuple(int(p) for p in parts)


def item_baseline(props: Mapping[str, Any]) -> str | None:
    """The item's processing baseline as ``"NN.NN"``; from ``s2:processing_baseline``, else
    ``processing:version``, else the ``_Nxxxx_`` part of ``s2:product_uri``; None if absent."""
    for key in ("s2:processing_baseline", "processing:version"):
        value = props.get(key)
        if value not in (None, "", "N/A"):
            try:
                parse_baseline(str(value))
                return str(value)
            except ValueError:
                pass
    m = re.search(r"_N(\d{2})(\d{2})_", str(props.get("s2:product_uri", "")))
    return f"{m.group(1)}.{m.group(2)}" if m else None


def offset_dn(baseline: str) -> int:
    """The BOA add offset for a processing baseline: -1000 from 04.00 on, else 0."""
    return OFFSET_DN if parse_baseline(baseline) >= OFFSET_BASELINE else 0


def harmonise(dn: np.ndarray, baseline: str) -> np.ndarray:
    """Digital numbers to float32 reflectance; DN 0 becomes NaN; no clipping."""
    dn = np.asarray(dn)
    refl = ((dn.astype(np.float64) + offset_dn(baseline)) / QUANTIFICATION).astype(np.float32)
    refl[dn == 0] = np.nan
    return refl


def upsample_repeat(arr: np.ndarray, factor: int) -> np.ndarray:
    """Upsample the last two axes by pixel repetition (no interpolation)."""
    return np.repeat(np.repeat(arr, factor, axis=-2), factor, axis=-1)


def classify(dn: np.ndarray, scl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel masks ``(nodata, cloud)`` from band DNs (B, H, W) and SCL on the same grid.

    ``nodata``: SCL 0 or DN 0 in any band. ``cloud``: SCL in {1, 3, 8, 9, 10, 11} where there
    is data (defective, shadow, cloud, cirrus, snow: everything unusable for fusion).
    """
    nodata = (scl == SCL_NODATA) | (np.asarray(dn) == 0).any(axis=0)
    cloud = np.isin(scl, [c for c in SCL_INVALID if c != SCL_NODATA]) & ~nodata
    return nodata, cloud


def item_crs(props: Mapping[str, Any], asset: Mapping[str, Any]) -> str | None:
    """``"EPSG:nnnnn"`` (or the raw code) from ``proj:code`` / ``proj:epsg``, asset first."""
    for src in (asset, props):
        code = src.get("proj:code")
        if code:
            return str(code).upper() if str(code).upper().startswith("EPSG:") else str(code)
        epsg = src.get("proj:epsg")
        if epsg:
            return f"EPSG:{int(epsg)}"
    return None


def item_tile(item: Mapping[str, Any]) -> str | None:
    """The MGRS tile id (e.g. ``"33UUU"``) from ``s2:mgrs_tile``, the ``mgrs:`` fields, or the
    ``_Txxxxx_`` part of the item id."""
    props = item.get("properties", {})
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"]).removeprefix("T")
    if props.get("mgrs:utm_zone") and props.get("mgrs:grid_square"):
        return (f"{int(props['mgrs:utm_zone']):02d}{props.get('mgrs:latitude_band', '')}"
                f"{props['mgrs:grid_square']}")
    m = re.search(r"_T(\d{2}[A-Z]{3})(_|$)", str(item.get("id", "")))
    return m.group(1) if m else None


def asset_grid(props: Mapping[str, Any], asset: Mapping[str, Any]
               ) -> tuple[Affine, tuple[int, int]] | None:
    """``(transform, (rows, cols))`` of an asset from ``proj:transform`` / ``proj:shape``."""
    tr = asset.get("proj:transform", props.get("proj:transform"))
    shape = asset.get("proj:shape", props.get("proj:shape"))
    if not tr or not shape or len(tr) < 6 or len(shape) != 2:
        return None
    return Affine(*[float(v) for v in tr[:6]]), (int(shape[0]), int(shape[1]))


def snap_bounds(bounds: tuple[float, float, float, float], origin: tuple[float, float],
                lattice_m: float = LATTICE_M) -> tuple[float, float, float, float]:
    """Snap (west, south, east, north) outward to the lattice through ``origin`` (x, y)."""
    x0, y0 = origin
    eps = 1e-6  # metres: absorbs round-off, never moves a bound by a real pixel
    west = x0 + math.floor((bounds[0] - x0) / lattice_m + eps) * lattice_m
    east = x0 + math.ceil((bounds[2] - x0) / lattice_m - eps) * lattice_m
    north = y0 - math.floor((y0 - bounds[3]) / lattice_m + eps) * lattice_m
    south = y0 - math.ceil((y0 - bounds[1]) / lattice_m - eps) * lattice_m
    return west, south, east, north


def pixel_window(bounds: tuple[float, float, float, float], transform: Affine
                 ) -> tuple[int, int, int, int]:
    """Integer ``(col_off, row_off, width, height)`` of lattice-snapped ``bounds`` in a raster
    with ``transform`` (north-up).

    Raises
    ------
    FetchError
        If the bounds do not fall on whole pixels of that raster.
    """
    res_x, res_y = transform.a, -transform.e
    vals = ((bounds[0] - transform.c) / res_x, (transform.f - bounds[3]) / res_y,
            (bounds[2] - bounds[0]) / res_x, (bounds[3] - bounds[1]) / res_y)
    ints = tuple(round(v) for v in vals)
    off_lattice = any(abs(v - i) > 1e-6 for v, i in zip(vals, ints, strict=True))
    if transform.b or transform.d or off_lattice:
        raise FetchError(f"raster grid {tuple(transform)[:6]} is not on the {LATTICE_M:g} m "
                         "tile lattice; cannot read it without resampling")
    return ints  # type: ignore[return-value]
