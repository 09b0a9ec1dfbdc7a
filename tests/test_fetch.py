"""Offline tests of ``splatsr fetch`` against a real HTTP STAC API, token endpoint and COG server
on loopback (tests/stac_server.py), with the real pystac-client, planetary-computer and
rasterio/GDAL.

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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import planetary_computer
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from stac_server import LoopbackStac

import splatsr.io.stac
from splatsr.cli import main
from splatsr.errors import ConfigError, FetchError
from splatsr.io.fetch import cache_key, fetch_cached, fetch_stack, parse_aoi
from splatsr.io.stack import read_stack

DATA = Path(__file__).parent / "data"
TEMPLATE = json.loads(
    (DATA / "pc_S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json").read_text())
AOI = (-144.02, 61.50, -144.00, 61.51)  # ~1.1 x 1.1 km at the UTM zone 6 / 7 boundary
AOI_TEXT = ",".join(str(v) for v in AOI)
BANDS = ("B02", "B03", "B04", "B08")
TILE_PX = 240  # synthetic tile: 2.4 km of 10 m pixels (real tiles: 10980)
FAST = dict(http_backoff_s=0.01, progress=False)  # keep retry sleeps short in tests

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
    name: str
    item_id: str
    baseline: str
    transform: Affine  # 10 m tile grid
    dn: np.ndarray  # (4, H, W) uint16
    scl: np.ndarray  # (H/2, W/2) uint8
    files: dict[str, bytes]
    item: dict


def _tile_transform(epsg: int) -> Affine:
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


def _cog(arr: np.ndarray, epsg: int, transform: Affine) -> bytes:
    with MemoryFile() as mem:
        with mem.open(driver="COG", width=arr.shape[1], height=arr.shape[0], count=1,
                      dtype=arr.dtype.name, crs=f"EPSG:{epsg}", transform=transform,
                      nodata=0, compress="deflate", overviews="NONE", blocksize=128) as dst:
            dst.write(arr, 1)
        return mem.read()


def _plant(i: int, name: str, dt: str, baseline: str, zone: int, tile: str, kind: str
           ) -> Planted:
    rng = np.random.default_rng(100 + i)
    epsg = 32600 + zone
    tr = _tile_transform(epsg)
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
    files = {k: _cog(dn[j], epsg, tr) for j, k in enumerate(BANDS)}
    scl_tr = Affine(20.0, 0.0, tr.c, 0.0, -20.0, tr.f)
    files["SCL"] = _cog(scl, epsg, scl_tr)
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


@pytest.fixture(scope="module")
def planted() -> dict[str, Planted]:
    return {s[0]: _plant(i, *s) for i, s in enumerate(SCENES)}


def _serve(planted: dict[str, Planted], *, blob: bool, **kw) -> LoopbackStac:
    srv = LoopbackStac(**kw).start()
    for p in planted.values():
        item = copy.deepcopy(p.item)
        for key, a in item["assets"].items():
            name = a["href"]
            srv.add_file(name, p.files[key])
            a["href"] = srv.blob_href(name) if blob else srv.file_href(name)
        srv.items.append(item)
    return srv


@pytest.fixture
def pc_env(monkeypatch):
    """Point planetary-computer and GDAL at whatever server the test starts."""
    def use(srv: LoopbackStac) -> LoopbackStac:
        monkeypatch.setenv("PC_SDK_SAS_URL", srv.sas_url)
        monkeypatch.setenv("GDAL_HTTP_PROXY", srv.proxy)
        planetary_computer.settings.Settings.get.cache_clear()
        return srv
    yield use
    planetary_computer.settings.Settings.get.cache_clear()
    planetary_computer.sas.TOKEN_CACHE.clear()


@pytest.fixture
def server(planted, pc_env):
    srv = pc_env(_serve(planted, blob=True))
    yield srv
    srv.stop()


@pytest.fixture
def plain_server(planted, pc_env):
    srv = pc_env(_serve(planted, blob=False))
    yield srv
    srv.stop()


def _fetch(srv: LoopbackStac, out: Path, **kw):
    args = dict(aoi=AOI, start="2021-06-01", end="2025-09-30", out_dir=out,
                stac_url=srv.url, **FAST)
    return fetch_stack(**{**args, **kw})


def _check_values(stack, planted: dict[str, Planted]) -> None:
    """Every pixel on the source lattice with exactly the harmonised value; NaN elsewhere."""
    data = stack.load()
    for t, obs in enumerate(stack.observations):
        p = next(q for q in planted.values() if q.item_id == obs.id)
        col = (stack.transform.c - p.transform.c) / 10
        row = (p.transform.f - stack.transform.f) / 10
        assert col == int(col) and row == int(row), "stack grid is off the source lattice"
        rs = slice(int(row), int(row) + stack.height)
        cs = slice(int(col), int(col) + stack.width)
        dn = p.dn[:, rs, cs]
        scl = np.repeat(np.repeat(p.scl, 2, 0), 2, 1)[rs, cs]
        offset = -1000 if p.baseline >= "04.00" else 0
        assert obs.extra["offset_dn"] == offset
        expect = (dn.astype(np.float32) + np.float32(offset)) / np.float32(10000)
        invalid = np.isin(scl, [0, 1, 3, 8, 9, 10, 11]) | (dn == 0).any(0)
        expect[:, invalid] = np.nan
        np.testing.assert_array_equal(data[t], expect, err_msg=obs.id)


# --------------------------------------------------------------------------- must show


def test_must_show_cli(server, planted, tmp_path):
    out = tmp_path / "STACK"
    res = CliRunner().invoke(main, ["fetch", "--aoi", AOI_TEXT, "--start", "2021-06-01",
                                    "--end", "2025-09-30", "--stac-url", server.url,
                                    "--max-cloud", "0.2", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "6 observations" in res.output
    stack = read_stack(out)
    ids = {o.id for o in stack.observations}
    assert ids == {planted[n].item_id for n in KEPT}
    assert stack.crs == "EPSG:32606" and stack.pixel_m == 10.0
    assert [o.datetime for o in stack.observations] == sorted(o.datetime
                                                              for o in stack.observations)
    # 60 m lattice of the tile, AOI inside
    tile_tr = planted["A"].transform
    assert (stack.transform.c - tile_tr.c) % 60 == 0 and (tile_tr.f - stack.transform.f) % 60 == 0
    assert stack.width % 6 == 0 and stack.height % 6 == 0
    _check_values(stack, planted)
    by = {o.id: o.extra for o in stack.observations}
    e = by[planted["E"].item_id]
    assert 0.10 < e["cloud_fraction"] < 0.2 and e["valid_fraction"] < 0.9
    g = by[planted["G"].item_id]
    assert 0.45 < g["nodata_fraction"] < 0.55 and g["cloud_fraction"] == 0.0
    b1 = by[planted["B1"].item_id]
    assert (b1["baseline"], b1["tile"], b1["relative_orbit"]) == ("05.00", "06VXN", 43)
    assert by[planted["A"].item_id]["valid_fraction"] == 1.0
    # the dropped ones, with reasons
    spec = json.loads((out / "stack.json").read_text())
    reasons = {d["id"]: d["reason"] for d in spec["dropped"]}
    assert "cloud fraction 1.00" in reasons[planted["D"].item_id]
    assert "other tile 07VCH" in reasons[planted["H"].item_id]
    assert "reprocessed" in reasons[planted["B0"].item_id]
    assert not list(out.rglob("*.part*"))
    # signing: every COG was read with a token; pages of 3 were followed
    assert server.requests("file", 403) == [] and server.requests("token")
    assert len(server.requests("search")) == 3


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Item ids passed to the fetcher's scene reader, in call order (a spy: calls through).

    The HTTP log cannot show re-reads: GDAL caches what it fetched for the whole process.
    """
    calls: list[str] = []
    real = splatsr.io.stac.read_scene

    def spy(scene, *args, **kwargs):
        calls.append(scene.item_id)
        return real(scene, *args, **kwargs)

    monkeypatch.setattr(splatsr.io.stac, "read_scene", spy)
    return calls


def test_plain_hrefs_get_search_and_resume(planted, pc_env, reads, tmp_path):
    """Unsigned loopback hrefs, a GET-only API; a re-run reads nothing already on disk."""
    srv = pc_env(_serve(planted, blob=False, search_methods=("GET",)))
    try:
        out = tmp_path / "s"
        first = _fetch(srv, out)
        assert {o.id for o in first.observations} == {planted[n].item_id for n in KEPT}
        assert all(r.method in ("GET", "HEAD") for r in srv.log)
        assert srv.requests("token") == []  # nothing to sign
        _check_values(first, planted)
        assert sorted(reads) == sorted(planted[n].item_id for n in KEPT | {"D"})
        reads.clear()
        again = _fetch(srv, out)
        assert reads == []  # neither kept nor dropped scenes are read again
        assert again.observations == first.observations
        loose = _fetch(srv, out, max_cloud=1.0)  # now the cloudy scene is needed: only it
        assert reads == [planted["D"].item_id]
        assert planted["D"].item_id in {o.id for o in loose.observations}
    finally:
        srv.stop()


def test_interrupted_run_resumes(planted, pc_env, reads, tmp_path):
    out = tmp_path / "s"
    broken = pc_env(_serve(planted, blob=False))
    del broken.files[f"{planted['F'].item_id}/B04.tif"]
    with pytest.raises(FetchError, match=planted["F"].item_id):
        _fetch(broken, out, max_workers=1)
    broken.stop()
    assert not (out / "stack.json").exists()
    assert not list(out.rglob("*.part*"))
    for tif in (out / "obs").glob("*.tif"):  # whatever was written is complete
        with rasterio.open(tif) as src:
            assert src.read().shape[0] == 4
    done = {json.loads(p.read_text())["item_id"] for p in (out / "obs").glob("*.scene.json")}
    assert len(done) >= 4 and planted["F"].item_id not in done  # F failed; others kept
    reads.clear()
    fixed = pc_env(_serve(planted, blob=False))  # a new process would see fresh URLs too
    try:
        stack = _fetch(fixed, out)
    finally:
        fixed.stop()
    assert planted["F"].item_id in reads and not done & set(reads)
    assert {o.id for o in stack.observations} == {planted[n].item_id for n in KEPT}
    _check_values(stack, planted)


def test_fetch_cached_reuses(server, planted, tmp_path):
    kw = dict(aoi=AOI, start="2021-06-01", end="2025-09-30", stac_url=server.url,
              cache_dir=tmp_path / "cache", **FAST)
    first = fetch_cached(**kw)
    assert first.root.name == cache_key(aoi=AOI, start="2021-06-01", end="2025-09-30",
                                        stac_url=server.url)
    server.log.clear()
    second = fetch_cached(**kw)
    assert server.log == [] and second == first
    other = cache_key(aoi=AOI, start="2021-06-01", end="2025-09-30", stac_url=server.url,
                      max_cloud=0.5)
    assert other != first.root.name


# --------------------------------------------------------------------------- faults


def test_search_retries_429_retry_after_and_503(server, tmp_path):
    server.fail("search", 429, Retry_After="1")
    server.fail("search", 503)
    t0 = time.monotonic()
    stack = _fetch(server, tmp_path / "s")
    assert time.monotonic() - t0 >= 1.0  # Retry-After honoured
    statuses = [r.status for r in server.requests("search")]
    assert statuses[:3] == [429, 503, 200]
    assert len(stack.observations) == len(KEPT)


def test_token_request_retries_429(server, tmp_path):
    server.fail("token", 429, Retry_After="1")
    t0 = time.monotonic()
    stack = _fetch(server, tmp_path / "s", max_workers=1)
    assert time.monotonic() - t0 >= 1.0  # Retry-After honoured
    assert [r.status for r in server.requests("token")] == [429, 200]
    assert len(stack.observations) == len(KEPT)


def test_cog_reads_retry_503_and_429(server, planted, tmp_path):
    server.fail("file", 503, times=2)
    server.fail("file", 429, Retry_After="0")
    stack = _fetch(server, tmp_path / "s")
    statuses = [r.status for r in server.requests("file")]
    assert statuses.count(503) == 2 and statuses.count(429) == 1
    _check_values(stack, planted)


def test_expired_token_is_renewed(server, planted, tmp_path):
    # a token is cached by planetary-computer, then expires server-side before the reads
    planetary_computer.sign(server.blob_href("warm-up"))
    server.revoke_tokens()
    stack = _fetch(server, tmp_path / "s")
    assert server.requests("file", 403), "the stale token was never used"
    assert len(server.requests("token", 200)) >= 2  # signed again with a fresh token
    _check_values(stack, planted)


def test_persistent_errors_fail_cleanly(server, tmp_path):
    server.fail("file", 503, times=1000)
    with pytest.raises(FetchError, match="503"):
        _fetch(server, tmp_path / "s", http_retries=1)
    assert not (tmp_path / "s" / "stack.json").exists()
    server.fail("search", 503, times=1000)
    with pytest.raises(FetchError, match="search failed"):
        _fetch(server, tmp_path / "t", http_retries=1)
    assert not (tmp_path / "t").exists()


# --------------------------------------------------------------------------- offline


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "dns"])
def test_unreachable_stac_fails_fast_in_one_line(kind, tmp_path, capsys):
    """Offline: no retries of a refused connection or a failed DNS lookup (with the default
    5 retries and 1 s backoff they took ~31 s), a status line first, one line naming the host."""
    host = f"127.0.0.1:{_closed_port()}" if kind == "refused" else "nonexistent.invalid"
    t0 = time.perf_counter()
    with pytest.raises(FetchError) as info:
        fetch_stack(aoi=AOI, start="2021-06-01", end="2021-07-01", out_dir=tmp_path / "s",
                    stac_url=f"http://{host}/api/stac/v1", progress=True)
    seconds = time.perf_counter() - t0
    msg = str(info.value)
    assert seconds < 5, f"took {seconds:.1f} s"
    assert host in msg and "no network?" in msg and "\n" not in msg and "..." not in msg
    assert ("resolve" in msg) == (kind == "dns")
    assert f"searching {host} for sentinel-2-l2a" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_retry_policy_gives_up_only_on_connection_failures():
    """Timeouts are retried (the server may answer next time); refused / unresolvable not."""
    from urllib3.exceptions import (
        ConnectTimeoutError,
        MaxRetryError,
        NameResolutionError,
        NewConnectionError,
        ReadTimeoutError,
    )

    retry = splatsr.io.stac.FailFastRetry(total=5, status_forcelist=(503,),
                                          allowed_methods=None)
    for err in (ReadTimeoutError(None, "/", "read timed out"), ConnectTimeoutError("slow")):
        assert retry.increment("POST", "/search", error=err).total == 4
    for err in (NewConnectionError(None, "refused"),
                NameResolutionError("nonexistent.invalid", None, OSError("no name"))):
        with pytest.raises(MaxRetryError):
            retry.increment("POST", "/search", error=err)


def test_cli_offline_exits_nonzero_with_the_host(tmp_path):
    res = CliRunner().invoke(main, ["fetch", "--aoi", AOI_TEXT, "--start", "2021-06-01",
                                    "--end", "2021-07-01", "--out", str(tmp_path / "s"),
                                    "--stac-url", f"http://127.0.0.1:{_closed_port()}/"])
    assert res.exit_code != 0 and "no network?" in res.output and "127.0.0.1" in res.output


# --------------------------------------------------------------------------- bad input


def _cli(*args: str):
    return CliRunner().invoke(main, ["fetch", *args, "--no-progress"])


@pytest.mark.parametrize("aoi", ["1,2,3", "a,b,c,d", "10,50,9,51", "10,95,11,96",
                                 "missing.geojson"])
def test_cli_invalid_aoi_is_usage_error(aoi, tmp_path):
    res = _cli("--aoi", aoi, "--start", "2021-06-01", "--end", "2021-07-01",
               "--out", str(tmp_path / "s"))
    assert res.exit_code == 2 and "--aoi" in res.output
    assert not (tmp_path / "s").exists()


def test_cli_bad_inputs(server, tmp_path):
    base = ["--start", "2021-06-01", "--end", "2025-09-30", "--stac-url", server.url]
    out = tmp_path / "s"
    results = []
    res = _cli("--aoi", AOI_TEXT, *base, "--bands", "B02,B99", "--out", str(out))
    assert res.exit_code == 1 and "unknown band 'B99'" in res.output
    results.append(res)
    res = _cli("--aoi", AOI_TEXT, "--start", "2019-01-01", "--end", "2019-12-31",
               "--stac-url", server.url, "--out", str(out))
    assert res.exit_code == 1 and "no scenes found" in res.output and "2019-01-01" in res.output
    results.append(res)
    big = "-144.1,61.45,-143.9,61.55"
    res = _cli("--aoi", big, *base, "--out", str(out))
    assert res.exit_code == 1 and "not inside one tile" in res.output
    results.append(res)
    res = _cli("--aoi", AOI_TEXT, *base, "--max-cloud", "1.5", "--out", str(out))
    assert res.exit_code == 2 and "--max-cloud" in res.output
    res = _cli("--aoi", AOI_TEXT, "--start", "2025-01-01", "--end", "2021-01-01",
               "--stac-url", server.url, "--out", str(out))
    assert res.exit_code == 1 and "after" in res.output
    results.append(res)
    res = _cli("--aoi", AOI_TEXT, *base[:4], "--stac-url", server.url + "/nothing-here",
               "--out", str(out))
    assert res.exit_code == 1 and "cannot open the STAC API" in res.output
    results.append(res)
    assert server.requests("file") == []  # nothing read for any of these
    res = _cli("--aoi", AOI_TEXT, "--start", "2023-07-01", "--end", "2023-07-31",
               "--stac-url", server.url, "--out", str(out))
    assert res.exit_code == 1 and "1 too cloudy" in res.output and "1.00" in res.output
    results.append(res)
    for r in results:
        assert len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def test_all_prefiltered_reports_cloud_cover(server, tmp_path):
    with pytest.raises(FetchError, match=r"tile cloud cover 80 % > 50 %"):
        _fetch(server, tmp_path / "s", start="2023-07-01", end="2023-07-31",
               max_tile_cloud_pct=50)
    assert not (tmp_path / "s").exists()


def test_parse_aoi_geojson(tmp_path):
    ring = [[5.1, 52.05], [5.14, 52.05], [5.14, 52.08], [5.1, 52.08], [5.1, 52.05]]
    geom = {"type": "Polygon", "coordinates": [ring]}
    docs = {"geom.geojson": geom,
            "feat.geojson": {"type": "Feature", "geometry": geom, "properties": {}},
            "fc.json": {"type": "FeatureCollection",
                        "features": [{"type": "Feature", "geometry": geom, "properties": {}}]}}
    for name, doc in docs.items():
        (tmp_path / name).write_text(json.dumps(doc))
        assert parse_aoi(tmp_path / name) == (5.1, 52.05, 5.14, 52.08)
    assert parse_aoi(" 5.1, 52.05,5.14,52.08") == (5.1, 52.05, 5.14, 52.08)
    (tmp_path / "bad.geojson").write_text("{not json")
    for bad in (tmp_path / "bad.geojson", "5,52,5,53", "200,1,201,2"):
        with pytest.raises(ConfigError):
            parse_aoi(bad)


def test_s2_helpers():
    import splatsr.io.sentinel2 as s2

    assert s2.offset_dn("02.12") == 0 and s2.offset_dn("03.01") == 0
    assert s2.offset_dn("04.00") == -1000 and s2.offset_dn("05.11") == -1000
    assert s2.parse_baseline("10.00") > s2.parse_baseline("09.99")
    assert s2.item_baseline({"s2:product_uri": "S2B_MSIL2A_20190629T212529_N0500_R043_"
                             "T06VVN_20230101T000000.SAFE"}) == "05.00"
    dn = np.array([[0, 500, 1000, 12000]], np.uint16)
    np.testing.assert_array_equal(s2.harmonise(dn, "05.00"),
                                  np.array([[np.nan, -0.05, 0.0, 1.1]], np.float32))
    np.testing.assert_array_equal(s2.harmonise(dn, "03.00"),
                                  np.array([[np.nan, 0.05, 0.1, 1.2]], np.float32))
    assert s2.item_crs({"proj:code": "EPSG:32633"}, {}) == "EPSG:32633"
    assert s2.item_crs({"proj:epsg": 32633}, {"proj:code": "EPSG:32632"}) == "EPSG:32632"
    origin = (499980.0, 9200020.0)
    assert s2.snap_bounds((500001.0, 9199001.0, 500119.0, 9199999.0), origin) == (
        499980.0, 9199000.0, 500160.0, 9200020.0)
    with pytest.raises(FetchError, match="lattice"):
        s2.pixel_window((500000.0, 9199000.0, 500060.0, 9199060.0),
                        Affine(20.0, 0, 499990.0, 0, -20.0, 9200020.0))
    scl = np.arange(4, dtype=np.uint8).reshape(2, 2)
    assert s2.upsample_repeat(scl, 2).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1],
                                                   [2, 2, 3, 3], [2, 2, 3, 3]]


def test_fit_aoi_fetches_into_cache_then_reuses_it(server, tmp_path):
    """``splatsr fit --aoi``: fetch into the cache keyed by the query, fit, write the COG;
    a second run with the same query fits the cached stack without touching the network."""
    args = ["fit", "--aoi", AOI_TEXT, "--start", "2021-06-01", "--end", "2025-09-30",
            "--stac-url", server.url, "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--coarse-levels", "0", "--adam-steps", "10", "--lbfgs-iters", "5",
            "--resolution", "5"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a.tif")])
    assert res.exit_code == 0, res.output
    key = cache_key(aoi=AOI, start="2021-06-01", end="2025-09-30", stac_url=server.url)
    stack = read_stack(tmp_path / "cache" / key)
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert ds.crs.to_string() == stack.crs and ds.res == (5.0, 5.0)
        assert tuple(ds.bounds) == pytest.approx(tuple(stack.bounds))
    assert (tmp_path / "a.shifts.csv").is_file()
    server.log.clear()
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b.tif")])
    assert res.exit_code == 0, res.output
    assert server.log == [] and (tmp_path / "b.tif").is_file()


def test_fit_aoi_needs_dates_and_one_source(tmp_path):
    res = CliRunner().invoke(main, ["fit", "--aoi", AOI_TEXT, "--out", str(tmp_path / "x.tif")])
    assert res.exit_code == 2 and "--aoi needs --start and --end" in res.output
    res = CliRunner().invoke(main, ["fit", "--sample", "--aoi", AOI_TEXT, "--start",
                                    "2021-06-01", "--end", "2025-09-30",
                                    "--out", str(tmp_path / "x.tif")])
    assert res.exit_code == 2 and "exactly one of" in res.output
    assert not list(tmp_path.iterdir())
