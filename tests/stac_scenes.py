"""Planted Sentinel-2 scenes for the loopback STAC server (tests/stac_server.py).

Planted scenes (items built from a real Planetary Computer item, tests/data/pc_*.json; COGs
generated here on a small synthetic tile whose origin lies on the 60 m lattice):

====  ==========  ========  ====  ==========================================
name  date        baseline  zone  content
====  ==========  ========  ====  ==========================================
A     2021-06-20  03.00     6     clear (no offset)
B0    2021-08-09  03.01     6     clear; superseded by B1 (same datetime)
B1    2021-08-09  05.00     6     clear, 2021 scene reprocessed: offset -1000
C     2022-07-05  04.00     6     clear, one pixel DN 0 in B03; proj:code on assets
D     2023-07-20  05.09     6     fully cloudy (SCL 9)
E     2024-08-01  05.10     6     15 % of the AOI cloud/shadow/cirrus
F     2024-06-10  05.10     6     clear
G     2025-05-01  05.11     6     no data (DN 0, SCL 0) over the western half
H     2025-07-15  05.11     7     clear, same ground from the neighbouring UTM zone
====  ==========  ========  ====  ==========================================

Asset hrefs are Azure-blob-style (``http://s2fake.blob.core.windows.net/...``) so that the real
``planetary_computer.sign`` signs them with tokens from the loopback token endpoint
(``PC_SDK_SAS_URL``); GDAL reaches them through the loopback server acting as its HTTP proxy
(``GDAL_HTTP_PROXY``), which only serves them with a valid token. Some tests use plain
loopback hrefs instead (what signing leaves alone).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from stac_server import LoopbackStac

DATA = Path(__file__).parent / "data"
TEMPLATE = json.loads(
    (DATA / "pc_S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json").read_text())
AOI = (-144.02, 61.50, -144.00, 61.51)  # ~1.1 x 1.1 km at the UTM zone 6 / 7 boundary
AOI_TEXT = ",".join(str(v) for v in AOI)
BANDS = ("B02", "B03", "B04", "B08")
TILE_PX = 240  # synthetic tile: 2.4 km of 10 m pixels (real tiles: 10980)

SCENES = [  # name, datetime, baseline, zone, tile, kind
    ("A", "2021-06-20T21:25:29.024000Z", "03.00", 6, "06VXN", "clear"),
    ("B0", "2021-08-09T21:25:31.024000Z", "03.01", 6, "06VXN", "clear"),
    ("B1", "2021-08-09T21:25:31.024000Z", "05.00", 6, "06VXN", "clear"),
    ("C", "2022-07-05T21:25:29.024000Z", "04.00", 6, "06VXN", "clear_proj_code"),
    ("D", "2023-07-20T21:25:31.024000Z", "05.09", 6, "06VXN", "cloudy"),
    ("E", "2024-08-01T21:25:29.024000Z", "05.10", 6, "06VXN", "cloud15"),
    ("F", "2024-06-10T21:25:31.024000Z", "05.10", 6, "06VXN", "clear"),
    ("G", "2025-05-01T21:25:29.024000Z", "05.11", 6, "06VXN", "half_nodata"),
    ("H", "2025-07-15T21:25:31.024000Z", "05.11", 7, "07VCH", "clear"),
]
KEPT = {"A", "B1", "C", "E", "F", "G"}


@dataclass
class Planted:
    """One planted scene: what was written, to check what a fetch reads back."""

    name: str
    item_id: str
    baseline: str
    transform: Affine  # 10 m tile grid
    dn: np.ndarray  # (4, H, W) uint16
    scl: np.ndarray  # (H/2, W/2) uint8
    files: dict[str, bytes]
    item: dict


def tile_transform(epsg: int) -> Affine:
    """The synthetic tile's 10 m grid in UTM ``epsg``: on the 60 m lattice, AOI inside."""
    w, s, e, n = transform_bounds("EPSG:4326", f"EPSG:{epsg}", *AOI)
    west = np.floor(w / 60) * 60 - 600  # on the 60 m lattice, AOI well inside the tile
    north = np.ceil(n / 60) * 60 + 600
    return Affine(10.0, 0.0, float(west), 0.0, -10.0, float(north))


def aoi_pixels(transform: Affine, epsg: int) -> tuple[slice, slice]:
    """Rows/cols of the tile (10 m) whose centres are inside the projected AOI."""
    w, s, e, n = transform_bounds("EPSG:4326", f"EPSG:{epsg}", *AOI)
    cx = transform.c + 10 * (np.arange(TILE_PX) + 0.5)
    cy = transform.f - 10 * (np.arange(TILE_PX) + 0.5)
    cols = np.flatnonzero((cx >= w) & (cx <= e))
    rows = np.flatnonzero((cy >= s) & (cy <= n))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def cog_bytes(arr: np.ndarray, epsg: int, transform: Affine) -> bytes:
    """One band as an in-memory COG (no-data 0)."""
    with MemoryFile() as mem:
        with mem.open(driver="COG", width=arr.shape[1], height=arr.shape[0], count=1,
                      dtype=arr.dtype.name, crs=f"EPSG:{epsg}", transform=transform,
                      nodata=0, compress="deflate", overviews="NONE", blocksize=128) as dst:
            dst.write(arr, 1)
        return mem.read()


def plant_scene(i: int, name: str, dt: str, baseline: str, zone: int, tile: str, kind: str
                ) -> Planted:
    """Scene ``name`` of :data:`SCENES`: its item, its band COGs and SCL, as bytes."""
    rng = np.random.default_rng(100 + i)
    epsg = 32600 + zone
    tr = tile_transform(epsg)
    dn = rng.integers(1, 9000, size=(4, TILE_PX, TILE_PX), dtype=np.uint16)  # some < 1000
    scl = rng.choice(np.array([2, 4, 5, 6, 7], np.uint8), size=(TILE_PX // 2, TILE_PX // 2))
    rows, cols = aoi_pixels(tr, epsg)
    if kind == "cloudy":
        scl[:] = 9
    elif kind == "cloud15":  # bands of cloud shadow / medium / high cloud / cirrus in the AOI
        n_rows = int(round(0.15 * (rows.stop - rows.start) / 2))
        r0 = rows.start // 2 + 4
        scl[r0:r0 + n_rows, cols.start // 2:(cols.stop + 1) // 2] = np.resize(
            np.array([3, 8, 9, 10], np.uint8), (n_rows, 1))
    elif kind == "half_nodata":  # swath edge: the western part of the tile is empty
        mid = (cols.start + cols.stop) // 2
        mid -= mid % 2
        dn[:, :, :mid] = 0
        scl[:, :mid // 2] = 0
    elif kind == "clear_proj_code":
        dn[1, rows.start + 3, cols.start + 5] = 0  # one no-data pixel in one band
    day = dt[:10].replace("-", "")
    sat = "S2A" if int(day) % 2 else "S2B"
    year = int(day[:4]) + (2 if baseline >= "05" and day < "2022" else 0)  # reprocessing
    proc = f"{year}1201T030405"
    item_id = f"{sat}_MSIL2A_{day}T212529_R043_T{tile}_{proc}"
    files = {k: cog_bytes(dn[j], epsg, tr) for j, k in enumerate(BANDS)}
    scl_tr = Affine(20.0, 0.0, tr.c, 0.0, -20.0, tr.f)
    files["SCL"] = cog_bytes(scl, epsg, scl_tr)
    item = copy.deepcopy(TEMPLATE)
    item["id"] = item_id
    p = item["properties"]
    nb = baseline.replace(".", "")
    p.update({"datetime": dt, "platform": f"Sentinel-2{sat[-1]}", "s2:mgrs_tile": tile,
              "s2:processing_baseline": baseline, "proj:epsg": epsg,
              "eo:cloud_cover": 80.0 if kind == "cloudy" else 3.0,
              "s2:product_uri": f"{sat}_MSIL2A_{day}T212529_N{nb}_R043_T{tile}_{proc}.SAFE",
              "s2:granule_id": f"{sat}_OPER_MSI_L2A_TL_TEST_{proc}_T{tile}_N{baseline}",
              "s2:datatake_id": f"G{sat}_{day}T212529_000000_N{baseline}"})
    w, s, e, n = transform_bounds(f"EPSG:{epsg}", "EPSG:4326", tr.c, tr.f - 10 * TILE_PX,
                                  tr.c + 10 * TILE_PX, tr.f)
    item["bbox"] = [w, s, e, n]
    item["geometry"] = {"type": "Polygon",
                        "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    item["links"] = []
    assets = {}
    for key in (*BANDS, "SCL"):
        a = copy.deepcopy(TEMPLATE["assets"][key])
        res = 20 if key == "SCL" else 10
        px = TILE_PX * 10 // res
        a.update({"href": f"{item_id}/{key}.tif", "proj:shape": [px, px],
                  "proj:transform": [res, 0.0, tr.c, 0.0, -res, tr.f, 0.0, 0.0, 1.0],
                  "proj:bbox": [tr.c, tr.f - 10 * TILE_PX, tr.c + 10 * TILE_PX, tr.f]})
        if kind == "clear_proj_code":
            a["proj:code"] = f"EPSG:{epsg}"
        assets[key] = a
    if kind == "clear_proj_code":
        del p["proj:epsg"]
    item["assets"] = assets
    return Planted(name, item_id, baseline, tr, dn, scl, files, item)


def serve(planted: dict[str, Planted], *, blob: bool, **kw) -> LoopbackStac:
    """A started loopback server holding the planted items (Azure-blob or plain hrefs)."""
    srv = LoopbackStac(**kw).start()
    for p in planted.values():
        item = copy.deepcopy(p.item)
        for key, a in item["assets"].items():
            name = a["href"]
            srv.add_file(name, p.files[key])
            a["href"] = srv.blob_href(name) if blob else srv.file_href(name)
        srv.items.append(item)
    return srv
