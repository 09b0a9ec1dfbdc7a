"""Outputs of a fit: a Cloud-Optimized GeoTIFF of the scene and a CSV of the shifts."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from splatsr.io.atomic import atomic_path, write_text_atomic
from splatsr.io.text import format_cell

RGB_FIRST = ("B04", "B03", "B02")  # QGIS draws bands 1, 2, 3 as R, G, B


def shifts_path(out: str | os.PathLike) -> Path:
    """``sr.tif`` -> ``sr.shifts.csv`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".shifts.csv")


def sigma_path(out: str | os.PathLike) -> Path:
    """``sr.tif`` -> ``sr.sigma.tif`` beside it (the per-pixel 1-sigma uncertainty)."""
    out = Path(out)
    return out.with_name(out.stem + ".sigma" + (out.suffix or ".tif"))


def band_order(names: Sequence[str]) -> list[int]:
    """Indices that put B04, B03, B02 (when present) first, then the rest in order."""
    first = [names.index(b) for b in RGB_FIRST if b in names]
    return first + [i for i in range(len(names)) if i not in first]


def write_cog(path: str | os.PathLike, image: np.ndarray, *, crs: str, transform: Affine,
              band_names: Sequence[str], tags: Mapping[str, Any] | None = None) -> Path:
    """Write (B, H, W) reflectance as a COG: float32, NaN no-data, deflate, overviews.

    Bands are reordered so that B04, B03, B02 come first (natural colour in QGIS); each band's
    description is its name. ``tags`` are stored as dataset tags (non-strings as JSON).
    The file is written to a temporary name beside ``path`` and renamed on success.
    """
    image = np.asarray(image, np.float32)
    order = band_order(list(band_names))
    image = image[order]
    names = [band_names[i] for i in order]
    B, H, W = image.shape
    block = 256 if min(H, W) >= 256 else 128 if min(H, W) >= 128 else 64 if min(H, W) >= 64 \
        else 16
    profile = dict(driver="COG", width=W, height=H, count=B, dtype="float32", crs=crs,
                   transform=transform, nodata=float("nan"), compress="DEFLATE", predictor=3,
                   blocksize=block, overview_resampling="average", BIGTIFF="IF_SAFER")
    flat_tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (tags or {}).items()}
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(image)
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**flat_tags)
    return Path(path)


def write_sigma_cog(path: str | os.PathLike, sigma: np.ndarray, *, crs: str,
                    transform: Affine, band_names: Sequence[str],
                    tags: Mapping[str, Any] | None = None) -> Path:
    """Write a (B, H, W) 1-sigma map as a COG in the band order of :func:`write_cog`.

    Band ``i`` is described as ``"<band> sigma"``; the tags say what the values are.
    """
    order = band_order(list(band_names))
    names = [f"{band_names[i]} sigma" for i in order]
    info = dict(tags or {}, units="reflectance (0-1), 1-sigma",
                content="per-pixel 1-sigma uncertainty of the scene of the same name without "
                        ".sigma; NaN where the scene is NaN")
    return write_cog(path, np.asarray(sigma, np.float32)[order], crs=crs, transform=transform,
                     band_names=names, tags=info)


def write_shifts_csv(path: str | os.PathLike, *, ids: Sequence[str], datetimes: Sequence[str],
                     shifts_m: np.ndarray, extra: Mapping[str, Sequence[Any]] | None = None
                     ) -> Path:
    """Write ``id,datetime,dx_m,dy_m[,extra...]`` atomically.

    ``(dx_m, dy_m)`` is the displacement of the scene's content in each observation, east and
    north positive, in metres.
    """
    extra = dict(extra or {})
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["id", "datetime", "dx_m", "dy_m", *extra])
    for i, (oid, dt) in enumerate(zip(ids, datetimes)):
        wr.writerow([oid, dt, f"{shifts_m[i, 0]:.4f}", f"{shifts_m[i, 1]:.4f}",
                     *(format_cell(col[i], nan="nan") for col in extra.values())])
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def read_shifts_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a shifts CSV back: (ids, (T, 2) array of dx_m, dy_m)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["id"] for r in rows], np.array([[float(r["dx_m"]), float(r["dy_m"])]
                                             for r in rows]).reshape(-1, 2)

