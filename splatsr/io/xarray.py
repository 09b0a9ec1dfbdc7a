"""xarray in and out: a (time, band, y, x) DataArray as a stack, a fitted scene as a DataArray.

The way EO notebooks hold data -- ``rioxarray.open_rasterio``, ``odc.stac.load(...)
.to_array("band")``, ``stackstac`` -- becomes a fit input without writing files:
:func:`stack_from_xarray` checks that the array is on a native, north-up, square-pixel grid in
a projected CRS and wraps it as an :class:`ArrayStack` (a :class:`~splatsr.io.stack.Stack`
whose pixels are in memory). :func:`scene_to_xarray` returns a rendered scene with its CRS,
transform, band names and pixel-centre coordinates.

Inputs as the usual loaders give them: ``stackstac.stack`` (time, band, y, x; a ``crs``
attribute; pixel *corner* coordinates by default, told apart from centres by its ``transform``
attribute), ``odc.stac.load`` (a Dataset of one (time, y, x) variable per band, a
``spatial_ref`` coordinate: pass it as it is, or ``.to_array("band")``; a ``variable`` dimension
is read as the bands), ``rioxarray.open_rasterio`` files concatenated along ``time`` (band
numbers named from the ``long_name`` descriptions).

xarray is imported lazily (the ``xarray`` extra, which also installs rioxarray). The ``.rio``
accessor is registered for the user (rioxarray imported when installed), so the scene from
:func:`scene_to_xarray` answers ``.rio.crs``, ``.rio.transform()``, ``.rio.nodata`` (NaN) and
``.rio.to_raster(path)`` writes its band names as the band descriptions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from splatsr.errors import ConfigError, StackError
from splatsr.io.stack import Observation, Stack

DIMS = ("time", "band", "y", "x")
NATIVE_PIXEL_M = 10.0  # Sentinel-2's 10 m bands
_REL_TOL = 1e-6  # of the pixel size: spacing and lattice checks

__all__ = ["ArrayStack", "is_dataarray", "is_dataset", "scene_to_xarray", "stack_from_xarray"]


@dataclass(frozen=True)
class ArrayStack(Stack):
    """A :class:`Stack` whose pixels are held in memory (``root`` names where they came from)."""

    data: np.ndarray | None = field(default=None, repr=False, compare=False)  # (T, B, H, W)

    def load(self) -> np.ndarray:
        """The pixels: float32 (T, B, H, W), NaN where invalid (the array itself, no copy)."""
        if self.data is None or not np.isfinite(self.data).any():
            raise StackError(f"{self.root}: no valid pixels in any observation")
        return self.data


def is_dataarray(obj: Any) -> bool:
    """True for an ``xarray.DataArray`` (without importing xarray)."""
    return _is_xarray(obj, "DataArray")


def is_dataset(obj: Any) -> bool:
    """True for an ``xarray.Dataset`` (without importing xarray)."""
    return _is_xarray(obj, "Dataset")


def _is_xarray(obj: Any, name: str) -> bool:
    return any(c.__module__.startswith("xarray") and c.__name__ == name
               for c in type(obj).__mro__)


def stack_from_xarray(da: Any, *, native_pixel_m: float | None = NATIVE_PIXEL_M,
                      crs: str | None = None) -> ArrayStack:
    """Wrap a (time, band, y, x) ``xarray.DataArray`` of reflectance as a stack.

    Parameters
    ----------
    da
        Reflectance (0-1 scale, NaN or the array's ``_FillValue``/``nodata`` where invalid)
        with dimensions ``time``, ``band`` (or ``variable``), ``y``, ``x`` (any order) and 1-D
        ``x``/``y`` coordinates at pixel centres (or corners, where a ``transform`` attribute
        says so, as stackstac's), evenly spaced, in a projected CRS in metres; or a Dataset of
        one (time, y, x) variable per band (odc-stac), each variable's ``nodata`` as NaN. The
        CRS is taken from ``crs``, ``da.rio.crs`` (rioxarray), a ``spatial_ref`` coordinate
        (``crs_wkt``, as rioxarray and odc-stac write it) or ``da.attrs["crs"]`` (stackstac).
    native_pixel_m
        The sensor's native pixel size; the grid must have it and lie on its lattice (a
        resampled or reprojected grid is refused). ``None`` accepts any square grid.
    crs
        The CRS, when the array does not carry one.

    Returns
    -------
    ArrayStack

    Raises
    ------
    ConfigError
        Not a DataArray; wrong dimensions; uneven, non-square, resampled or off-lattice grid;
        no or a geographic CRS; values that are not reflectance.
    """
    if is_dataset(da):
        da = _bands_of_dataset(da)
    if not is_dataarray(da):
        raise ConfigError(f"expected a stack directory, a Stack or an xarray.DataArray "
                          f"(time, band, y, x); got {type(da).__name__}")
    _import_xarray()  # with rioxarray when installed: da.rio.crs
    if "variable" in da.dims and "band" not in da.dims:  # ds.to_array() without a name
        da = da.rename(variable="band")
    if set(da.dims) != set(DIMS):
        raise ConfigError(f"the DataArray must have dimensions {', '.join(DIMS)}; it has "
                          f"{', '.join(map(str, da.dims))} (odc-stac: ds.to_array('band'))")
    da = da.transpose(*DIMS)
    if float(da.y[-1]) > float(da.y[0]):  # south-up rows: flip to north-up
        da = da.isel(y=slice(None, None, -1))
    transform = _grid_transform(da, native_pixel_m)
    crs_text = _crs_of(da, crs)
    data = _reflectance(da)
    T, B, H, W = data.shape
    times = [_iso(t) for t in da["time"].values]
    ids = ([str(v) for v in da["id"].values] if "id" in da.coords and da["id"].ndim == 1
           else [f"t{i:03d}_{t[:10]}" for i, t in enumerate(times)])
    bands = _band_names(da)
    if len(set(bands)) != B or len(set(ids)) != T:
        raise ConfigError("band names and observation ids must be unique")
    name = da.name if da.name is not None else "DataArray"
    obs = tuple(Observation(i, t, "") for i, t in zip(ids, times))
    return ArrayStack(Path(f"<xarray {name}>"), crs_text, transform, W, H, bands, obs,
                      {"source": "xarray"}, data=data)


def _grid_transform(da: Any, native_pixel_m: float | None) -> Affine:
    """The north-up affine transform of the x/y pixel-centre coordinates, checked."""
    x = np.asarray(da["x"].values, np.float64)
    y = np.asarray(da["y"].values, np.float64)
    if x.ndim != 1 or y.ndim != 1 or len(x) < 2 or len(y) < 2:
        raise ConfigError("the DataArray needs 1-D x and y coordinates of at least 2 pixels")
    dx, dy = (x[-1] - x[0]) / (len(x) - 1), (y[0] - y[-1]) / (len(y) - 1)
    if dx <= 0 or not np.allclose(np.diff(x), dx, rtol=0, atol=_REL_TOL * dx) or \
            not np.allclose(-np.diff(y), dy, rtol=0, atol=_REL_TOL * dy):
        raise ConfigError("x and y must be evenly spaced, x increasing (a regular grid)")
    if not math.isclose(dx, dy, rel_tol=_REL_TOL):
        raise ConfigError(f"pixels are {dx:g} x {dy:g} m; splatsr needs square pixels on the "
                          "native grid (load without resampling)")
    left, top = (x[0], y[0]) if _corner_coords(da, x[0], y[0], dx) else \
        (x[0] - dx / 2, y[0] + dy / 2)
    if native_pixel_m is not None:
        if not math.isclose(dx, native_pixel_m, rel_tol=_REL_TOL):
            raise ConfigError(f"pixels are {dx:g} m, not the native {native_pixel_m:g} m: the "
                              f"data were resampled; load at resolution={native_pixel_m:g} "
                              "in the tile's own CRS (or pass native_pixel_m=None)")
        off = [abs(v / dx - round(v / dx)) for v in (left, top)]
        if max(off) > 1e-3:
            raise ConfigError(f"the grid's corner ({left:.3f}, {top:.3f}) is not on the "
                              f"{dx:g} m pixel lattice: the data were reprojected or shifted; "
                              "load them in the tile's own CRS and grid")
    return Affine(dx, 0.0, left, 0.0, -dy, top)


def _corner_coords(da: Any, x0: float, y0: float, dx: float) -> bool:
    """Whether the x/y coordinates are pixel corners: the array's ``transform`` attribute
    (stackstac's, whose default ``xy_coords="topleft"`` labels corners; ``xarray.open_rasterio``'s
    6-tuple) puts the first coordinate on its corner lattice, not half a pixel off it."""
    t = da.attrs.get("transform")
    try:
        t = t if isinstance(t, Affine) else Affine(*(float(v) for v in list(t)[:6]))
    except (TypeError, ValueError):  # none, or not an affine transform
        return False
    if not math.isclose(abs(t.a), dx, rel_tol=_REL_TOL):
        return False
    off = [abs(v - round(v)) for v in ((x0 - t.c) / dx, (y0 - t.f) / dx)]
    return max(off) < 0.25


def _bands_of_dataset(ds: Any) -> Any:
    """odc-stac's Dataset (one (time, y, x) variable per band) as a (band, time, y, x)
    DataArray, each variable's no-data value as NaN."""
    xr = _import_xarray()
    names = list(ds.data_vars)
    if not names:
        raise ConfigError("the Dataset has no data variables (one per band expected)")
    bands = []
    for name in names:
        var, fill = ds[name], _fill_value(ds[name])
        var = var.astype(np.float32)
        bands.append(var.where(var != fill) if fill is not None and np.isfinite(fill) else var)
    return xr.concat(bands, dim="band", coords="minimal", compat="override",
                     join="exact").assign_coords(band=names)


def _band_names(da: Any) -> tuple[str, ...]:
    """The ``band`` coordinate as text; band numbers (rioxarray) named by ``long_name``."""
    values = list(da["band"].values)
    names = da.attrs.get("long_name")
    if all(isinstance(v, (int, np.integer)) for v in values) and \
            isinstance(names, (tuple, list)) and len(names) == len(values):
        values = list(names)
    return tuple(str(b) for b in values)


def _crs_of(da: Any, crs: str | None) -> str:
    """The CRS as text, from the argument, rioxarray, a spatial_ref coordinate or attrs."""
    found: Any = crs
    if found is None:
        try:
            found = da.rio.crs  # only when rioxarray is installed
        except Exception:  # no accessor, or a CRS it cannot read: the fallbacks below
            found = None
    if found is None and "spatial_ref" in da.coords:
        attrs = da["spatial_ref"].attrs
        found = attrs.get("crs_wkt") or attrs.get("spatial_ref")
    if found is None:
        found = da.attrs.get("crs")
    if found is None:
        raise ConfigError("the DataArray has no CRS: pass crs='EPSG:326..' or set it with "
                          "da.rio.write_crs(...)")
    try:
        parsed = CRS.from_user_input(found)
    except Exception:
        raise ConfigError(f"the DataArray's CRS {str(found)[:60]!r} is not one rasterio "
                          "understands") from None
    if not parsed.is_projected:
        raise ConfigError("the DataArray is in a geographic CRS; splatsr needs the native "
                          "projected grid (e.g. the tile's UTM zone, metres)")
    return parsed.to_string()


def _reflectance(da: Any) -> np.ndarray:
    """float32 values, the fill value as NaN; refuses digital numbers."""
    data = np.asarray(da.values)
    fill = _fill_value(da)
    out = data.astype(np.float32)
    if fill is not None and np.isfinite(fill):
        out[data == fill] = np.nan
    out[~np.isfinite(out)] = np.nan
    if not np.isfinite(out).any():
        raise ConfigError("the DataArray holds no valid pixel (all NaN or no-data)")
    if np.nanmax(np.abs(out)) > 2.0:
        raise ConfigError(f"values up to {np.nanmax(out):g}: splatsr needs reflectance on a "
                          "0-1 scale, not digital numbers; e.g. for Sentinel-2 L2A baseline "
                          ">= 04.00: (da.where(da > 0) - 1000) / 10000")
    return out


def _fill_value(da: Any) -> Any:
    """The array's no-data value (``_FillValue``/``nodata`` attribute or encoding), or None."""
    return next((v for v in (da.attrs.get("_FillValue"), da.attrs.get("nodata"),
                             da.encoding.get("_FillValue")) if v is not None), None)


def _iso(t: Any) -> str:
    """A time coordinate value as ISO-8601 UTC text."""
    if isinstance(t, np.datetime64):
        return np.datetime_as_string(t.astype("datetime64[s]"), unit="s") + "Z"
    return str(t)


def scene_to_xarray(image: np.ndarray, *, crs: str, transform: Affine,
                    band_names: Sequence[str], attrs: dict[str, Any] | None = None) -> Any:
    """A (band, y, x) georeferenced ``xarray.DataArray`` of a rendered scene.

    ``x``/``y`` are pixel centres; the CRS and transform are written as a ``spatial_ref``
    coordinate (CF grid mapping, as rioxarray writes it), the no-data value NaN as the
    encoded ``_FillValue`` and the band names also as the ``long_name`` tuple (rioxarray's
    band descriptions). With rioxarray installed (imported here) ``.rio.crs``,
    ``.rio.transform()`` and ``.rio.nodata`` work and ``.rio.to_raster`` keeps the band names.
    """
    xr = _import_xarray()
    B, H, W = image.shape
    t = transform
    x = t.c + t.a * (np.arange(W) + 0.5)
    y = t.f + t.e * (np.arange(H) + 0.5)
    wkt = CRS.from_user_input(crs).to_wkt()
    ref = xr.DataArray(0, attrs={"crs_wkt": wkt, "spatial_ref": wkt,
                                 "GeoTransform": " ".join(f"{v!r}" for v in
                                                          (t.c, t.a, t.b, t.f, t.d, t.e))})
    da = xr.DataArray(image, dims=("band", "y", "x"),
                      coords={"band": list(band_names), "y": y, "x": x, "spatial_ref": ref},
                      attrs={"crs": crs, "resolution_m": float(t.a), **(attrs or {}),
                             "long_name": tuple(str(b) for b in band_names)},
                      name="reflectance")
    da.encoding.update(grid_mapping="spatial_ref", _FillValue=np.float32(np.nan))
    return da


def _import_xarray() -> Any:
    """xarray, with rioxarray's ``.rio`` accessor registered when rioxarray is installed."""
    try:
        import xarray
    except ImportError:
        raise ConfigError("xarray is not installed: pip install 'splatsr[xarray]'") from None
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)
    except ImportError:
        pass
    return xarray
