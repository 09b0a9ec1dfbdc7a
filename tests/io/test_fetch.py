"""Offline tests of ``splatsr fetch`` against a real HTTP STAC API, token endpoint and COG server
on loopback (tests/stac_server.py), with the real pystac-client, planetary-computer and
rasterio/GDAL.

The planted scenes and the loopback server fixtures are in tests/stac_scenes.py and
tests/conftest.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import planetary_computer
import pytest
import rasterio
from click.testing import CliRunner
from stac_scenes import AOI, AOI_TEXT, KEPT, Planted, serve
from stac_server import LoopbackStac

import splatsr.io.stac
from splatsr.cli import main
from splatsr.errors import ConfigError, FetchError
from splatsr.io.fetch import cache_key, fetch_cached, fetch_stack, parse_aoi
from splatsr.io.stack import read_stack

FAST = dict(http_backoff_s=0.01, progress=False)  # keep retry sleeps short in tests


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


# --------------------------------------------------------------------------- end to end


def test_fetch_cli_end_to_end(server, planted, tmp_path):
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
    srv = pc_env(serve(planted, blob=False, search_methods=("GET",)))
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
    broken = pc_env(serve(planted, blob=False))
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
    fixed = pc_env(serve(planted, blob=False))  # a new process would see fresh URLs too
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
    assert res.exit_code == 2 and "unknown band 'B99'" in res.output  # bad option value
    results.append(res)
    res = _cli("--aoi", AOI_TEXT, "--start", "2019-01-01", "--end", "2019-12-31",
               "--stac-url", server.url, "--out", str(out))
    assert res.exit_code == 1 and "no scenes found" in res.output and "2019-01-01" in res.output
    results.append(res)
    big = "-144.1,61.45,-143.9,61.55"
    res = _cli("--aoi", big, *base, "--out", str(out))
    assert res.exit_code == 2 and "not inside one tile" in res.output
    results.append(res)
    res = _cli("--aoi", AOI_TEXT, *base, "--max-cloud", "1.5", "--out", str(out))
    assert res.exit_code == 2 and "--max-cloud" in res.output
    res = _cli("--aoi", AOI_TEXT, "--start", "2025-01-01", "--end", "2021-01-01",
               "--stac-url", server.url, "--out", str(out))
    assert res.exit_code == 2 and "after" in res.output
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
