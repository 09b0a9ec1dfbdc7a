"""The stack directory: the input contract of ``fit`` and the output of ``fetch`` and ``simulate``.

A stack directory holds ``stack.json`` and one GeoTIFF per observation::

    {"format": "splatsr-stack/1",
     "crs": "EPSG:32633",
     "transform": [a, b, c, d, e, f],      # rasterio/affine order, the 10 m grid
     "width": W, "height": H,
     "bands": ["B02", "B03", "B04", "B08"],
     "observations": [{"id": ..., "datetime": "2025-06-01T10:30:00Z", "path": "obs/x.tif"}, ...]}

Each observation file is float32 reflectance (0-1 scale) on exactly that grid, one raster band
per entry of ``bands`` in that order, NaN where invalid. Extra keys are allowed anywhere and are
kept in :attr:`Stack.meta` / :attr:`Observation.extra`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from splatsr.errors import StackError
from splatsr.io.atomic import atomic_path, write_text_atomic
from splatsr.io.grid import RasterGrid
from splatsr.io.text import safe_name

FORMAT = "splatsr-stack/1"


@dataclass(frozen=True)
class Observation:
    """One dated image of the stack."""

    id: str  # unique identifier, e.g. the STAC item id
    datetime: str  # ISO-8601 acquisition time
    path: str  # GeoTIFF path relative to the stack directory
    extra: dict[str, Any] = field(default_factory=dict)  # any other keys from stack.json


@dataclass(frozen=True)
class Stack(RasterGrid):
    """A parsed, validated stack directory (metadata only; pixels load on demand).

    The grid's ``pixel_m``, ``bounds`` and ``key()`` come from :class:`RasterGrid`.
    """

    root: Path  # the stack directory
    crs: str  # e.g. "EPSG:32633"
    transform: Affine  # north-up, square pixels
    width: int  # pixels (columns)
    height: int  # pixels (rows)
    bands: tuple[str, ...]  # band names, in file order
    observations: tuple[Observation, ...]
    meta: dict[str, Any] = field(default_factory=dict)  # extra top-level keys of stack.json

    def load(self) -> np.ndarray:
        """Read every observation: float32 array of shape (T, B, H, W), NaN where invalid."""
        out = np.empty((len(self.observations), len(self.bands), self.height, self.width),
                       np.float32)
        for i, obs in enumerate(self.observations):
            out[i] = read_observation(self, obs)
        if not np.isfinite(out).any():
            raise StackError(f"{self.root}: no valid pixels in any observation "
                             "(every value is NaN or no-data)")
        return out


def _fail(root: Path, msg: str) -> StackError:
    return StackError(f"{root / 'stack.json'}: {msg}")


def read_stack(path: str | os.PathLike) -> Stack:
    """Parse and validate a stack directory.

    Parameters
    ----------
    path
        The stack directory (or its ``stack.json``).

    Returns
    -------
    Stack
        Metadata of the stack; call :meth:`Stack.load` for the pixels.

    Raises
    ------
    StackError
        If the directory or ``stack.json`` is missing or malformed, the grid is not north-up
        with square pixels, an observation file is missing, or a file is not on the declared
        grid.
    """
    root = _stack_root(Path(path))
    spec = _read_spec(root)
    crs, transform, width, height = _parse_grid(root, spec)
    bands = spec["bands"]
    if (not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands)
            or len(set(bands)) != len(bands)):
        raise _fail(root, "'bands' must be a non-empty list of distinct band names")
    observations = _parse_observations(root, spec["observations"])
    meta = {k: v for k, v in spec.items() if k not in _SPEC_KEYS}
    stack = Stack(root, crs, transform, width, height, tuple(bands), observations, meta)
    for obs in observations:
        _check_grid(stack, obs)
    return stack


_SPEC_KEYS = ("format", "crs", "transform", "width", "height", "bands", "observations")


def _stack_root(root: Path) -> Path:
    """The stack directory of ``root`` (a directory or its ``stack.json``), which must exist."""
    if root.name == "stack.json" and root.is_file():
        root = root.parent
    if not root.exists():
        raise StackError(f"{root}: no such stack directory")
    if not root.is_dir():
        raise StackError(f"{root}: not a directory; pass the folder that holds stack.json")
    return root


def _read_spec(root: Path) -> dict[str, Any]:
    """``stack.json`` as a dict with the right format and every required key."""
    spec_path = root / "stack.json"
    if not spec_path.is_file():
        raise StackError(f"{root}: no stack.json in this folder; is it a splatsr stack?")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(root, f"not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise _fail(root, "must hold a JSON object")
    if spec.get("format") != FORMAT:
        raise _fail(root, f"'format' must be {FORMAT!r}, got {spec.get('format')!r}")
    for key in _SPEC_KEYS[1:]:
        if key not in spec:
            raise _fail(root, f"missing key {key!r}")
    return spec


def _parse_grid(root: Path, spec: dict[str, Any]) -> tuple[str, Affine, int, int]:
    """The validated (crs, transform, width, height) of ``stack.json``."""
    try:
        crs = CRS.from_user_input(spec["crs"])
    except Exception:
        raise _fail(root, f"'crs' {spec['crs']!r} is not a CRS rasterio understands") from None
    if not crs.is_projected:
        raise _fail(root, f"'crs' {spec['crs']!r} is geographic; a projected CRS in metres "
                    "(e.g. the UTM zone of the tile) is required")
    tr = spec["transform"]
    if (not isinstance(tr, list) or len(tr) not in (6, 9)
            or not all(isinstance(v, (int, float)) for v in tr)):
        raise _fail(root, "'transform' must be a list of 6 numbers [a, b, c, d, e, f]")
    transform = Affine(*tr[:6])
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise _fail(root, f"'transform' {tr[:6]} must be north-up (b = d = 0, a > 0, e < 0)")
    if not math.isclose(transform.a, -transform.e, rel_tol=1e-9):
        raise _fail(root, f"pixels must be square; got {transform.a} x {-transform.e}")
    width, height = spec["width"], spec["height"]
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _fail(root, f"{name!r} must be a positive integer, got {v!r}")
    return crs.to_string(), transform, width, height


def _parse_observations(root: Path, obs_specs: Any) -> tuple[Observation, ...]:
    """The observations of ``stack.json``: required keys, files present, unique ids."""
    if not isinstance(obs_specs, list):
        raise _fail(root, "'observations' must be a list")
    observations = []
    for i, o in enumerate(obs_specs):
        if not isinstance(o, dict) or not all(k in o for k in ("id", "datetime", "path")):
            raise _fail(root, f"observation {i} needs keys 'id', 'datetime' and 'path'")
        extra = {k: v for k, v in o.items() if k not in ("id", "datetime", "path")}
        obs = Observation(str(o["id"]), str(o["datetime"]), str(o["path"]), extra)
        if not (root / obs.path).is_file():
            raise StackError(f"{root / obs.path}: observation {obs.id!r} file is missing")
        observations.append(obs)
    ids = [o.id for o in observations]
    if len(set(ids)) != len(ids):
        raise _fail(root, "observation ids must be unique")
    return tuple(observations)


def _check_grid(stack: Stack, obs: Observation) -> None:
    path = stack.root / obs.path
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise StackError(f"{path}: cannot be read as a raster ({exc})") from None
    with src:
        where = f"{path}: observation {obs.id!r}"
        if (src.width, src.height) != (stack.width, stack.height):
            raise StackError(f"{where} is {src.width}x{src.height} px; the stack grid is "
                             f"{stack.width}x{stack.height}")
        if src.count != len(stack.bands):
            raise StackError(f"{where} has {src.count} bands; stack.json lists "
                             f"{len(stack.bands)} ({', '.join(stack.bands)})")
        if src.crs is None or CRS.from_user_input(stack.crs) != src.crs:
            raise StackError(f"{where} is in {src.crs}; the stack is in {stack.crs}")
        if not src.transform.almost_equals(stack.transform, precision=1e-6 * stack.pixel_m):
            raise StackError(f"{where} is not on the declared grid: transform "
                             f"{tuple(src.transform)[:6]} != {tuple(stack.transform)[:6]}")


def read_observation(stack: Stack, obs: Observation, *,
                     window: Window | None = None) -> np.ndarray:
    """One observation (or a ``window`` of it) as float32 (B, rows, cols), NaN where invalid."""
    with rasterio.open(stack.root / obs.path) as src:
        data = src.read(window=window, out_dtype=np.float32, masked=True)
    arr = data.filled(np.nan)
    arr[~np.isfinite(arr)] = np.nan
    return arr


def write_observation(path: str | os.PathLike, data: np.ndarray, *, crs: str,
                      transform: Affine, bands: Sequence[str]) -> None:
    """Write one observation GeoTIFF atomically (float32, NaN no-data, deflate).

    ``data`` has shape (B, H, W).
    """
    data = np.asarray(data, np.float32)
    if data.ndim != 3 or data.shape[0] != len(bands):
        raise StackError(f"observation array must be (bands={len(bands)}, H, W), "
                         f"got {data.shape}")
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1],
                   count=data.shape[0], dtype="float32", crs=crs, transform=transform,
                   nodata=float("nan"), compress="deflate", predictor=3)
    if min(data.shape[1:]) >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, name in enumerate(bands, start=1):
                dst.set_band_description(i, name)


def write_stack_json(root: str | os.PathLike, *, crs: str, transform: Affine, width: int,
                     height: int, bands: Sequence[str],
                     observations: Sequence[dict[str, Any]], **extra: Any) -> Path:
    """Write ``stack.json`` atomically (write it last, after every observation file).

    ``observations`` are dicts with at least ``id``, ``datetime`` and ``path``.
    """
    root = Path(root)
    spec = {"format": FORMAT, "crs": crs, "transform": list(tuple(transform)[:6]),
            "width": int(width), "height": int(height), "bands": list(bands),
            "observations": list(observations), **extra}
    write_text_atomic(root / "stack.json", json.dumps(spec, indent=2) + "\n")
    return root / "stack.json"


def write_stack(root: str | os.PathLike, data: np.ndarray, *, crs: str, transform: Affine,
                bands: Sequence[str], ids: Sequence[str], datetimes: Sequence[str],
                **extra: Any) -> Stack:
    """Write a whole in-memory stack (T, B, H, W) as a stack directory and read it back."""
    root = Path(root)
    data = np.asarray(data, np.float32)
    if data.ndim != 4 or data.shape[0] != len(ids) or len(ids) != len(datetimes):
        raise StackError(f"data must be (T, B, H, W) with T = len(ids) = len(datetimes); "
                         f"got {data.shape}, {len(ids)} ids, {len(datetimes)} datetimes")
    obs = []
    for i, (oid, dt) in enumerate(zip(ids, datetimes)):
        rel = f"obs/{i:03d}_{safe_name(oid, max_len=80)}.tif"
        write_observation(root / rel, data[i], crs=crs, transform=transform, bands=bands)
        obs.append({"id": oid, "datetime": dt, "path": rel})
    write_stack_json(root, crs=crs, transform=transform, width=data.shape[3],
                     height=data.shape[2], bands=bands, observations=obs, **extra)
    return read_stack(root)

