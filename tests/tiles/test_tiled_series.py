"""``--every-date`` with ``--tile-size``: one mosaic per date from tiled series fits (Dask,
in-process cluster, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import splatsr
from splatsr.cli import main
from splatsr.io.series import read_series
from splatsr.tiles.series import fit_series_tiled

pytestmark = pytest.mark.usefixtures("one_thread")  # a shared, busy 2-core machine

FAST = dict(adam_steps=30, lbfgs_iters=15, coarse_levels=0)
TILE, OVERLAP = 20, 6  # 32 x 32 px stack -> 2 x 2 tiles of 20 px overlapping by 8 px


@pytest.fixture(scope="module")
def tiled(small_stack, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiled_series") / "series"
    return fit_series_tiled(small_stack, out_dir=out, tile_size=TILE, overlap=OVERLAP,
                            config=splatsr.FitConfig(**FAST), resolution_m=5.0,
                            client=client)


def psnr(img: np.ndarray, truth: np.ndarray, crop: int = 4) -> float:
    a, b = img[:, crop:-crop, crop:-crop], truth[:, crop:-crop, crop:-crop]
    return float(10 * np.log10((b.max() - b.min()) ** 2 / np.mean((a - b) ** 2)))


def test_tiled_series_writes_the_series_folder(small_stack, tiled):
    obs = small_stack.observations
    out = tiled.path.parent
    assert tiled.path.name == "items.json" and len(tiled.fitted) == 4
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{o.id}.tif" for o in obs] + ["items.json", "shifts.csv", "tile_shifts.csv",
                                        "shifts.tif"])
    items = read_series(out)
    assert [i.id for i in items] == [o.id for o in obs]
    assert items[2].assets["data"].href == str(out / f"{obs[2].id}.tif")
    with rasterio.open(out / f"{obs[5].id}.tif") as src:
        tags = src.tags()
        assert tags["product"] == "observed date scene" and tags["observation"] == obs[5].id
        # 8 clear dates: two segments of four; date 5 is rendered from the second
        assert json.loads(tags["observations"]) == [o.id for o in obs[4:]]
        assert src.res == (5.0, 5.0) and src.descriptions == ("B04", "B03")
        assert tuple(src.bounds) == pytest.approx(small_stack.bounds, abs=1e-6)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert np.isfinite(src.read()).all()
    assert tiled.shifts_m.shape == (4, 8, 2) and np.isfinite(tiled.shifts_m).all()


def test_tiled_series_is_as_good_as_untiled(small_stack, tiled):
    """Each date's mosaic against the (static) truth, beside the untiled series' scene of
    the same date (measured: the tiles lose -0.02 to -0.005 dB, i.e. gain a little; the
    tolerance, 0.3 dB, is the tiled consensus's of test_run.py), and each mosaic is closest
    to the untiled scene of its own date (each date's scene follows its own noise)."""
    with rasterio.open(small_stack.root / "truth.tif") as src:
        truth = src.read()  # (2, 128, 128) at 2.5 m: B03, B04
    truth5 = truth.reshape(2, 64, 2, 64, 2).mean(axis=(2, 4))
    series = splatsr.fit_series(small_stack, **FAST)
    untiled = [series.render_date(t, 5.0) for t in range(8)]
    gaps, nearest = [], []
    for t, o in enumerate(small_stack.observations):
        with rasterio.open(tiled.path.parent / f"{o.id}.tif") as src:
            img = src.read()[::-1]  # B03, B04
        gaps.append(psnr(untiled[t], truth5) - psnr(img, truth5))
        nearest.append(int(np.argmin([np.mean((img - u)[:, 4:-4, 4:-4] ** 2)
                                      for u in untiled])))
    assert np.mean(gaps) < 0.3, gaps
    assert nearest == list(range(8))


def test_cli_every_date_in_tiles_reuses_tiles_and_writes_sigma(small_stack, client, tmp_path):
    out = tmp_path / "series"
    args = [str(a) for a in ["fit", small_stack.root, "--out", out, "--every-date",
                             "--tile-size", TILE, "--overlap", OVERLAP, "--resolution", 5,
                             "--dask", client.scheduler.address, "--adam-steps", 30,
                             "--lbfgs-iters", 15, "--coarse-levels", 0, "--no-progress"]]
    first = CliRunner().invoke(main, args + ["--uncertainty"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "wrote 8 mosaic COGs" in first.output and "4 tiles (4 fitted, 0 reused" in first.output
    obs = small_stack.observations
    items = read_series(out)
    assert items[3].assets["sigma"].href == str(out / f"{obs[3].id}.sigma.tif")
    with rasterio.open(out / f"{obs[3].id}.tif") as a, \
            rasterio.open(out / f"{obs[3].id}.sigma.tif") as s:
        assert (a.crs, a.transform, a.shape) == (s.crs, s.transform, s.shape)
        assert s.descriptions == ("B04 sigma", "B03 sigma")
        sig = s.read()
    assert np.isfinite(sig).all() and (sig > 0).all()
    again = CliRunner().invoke(main, args + ["--uncertainty"], catch_exceptions=False)
    assert "4 tiles (0 fitted, 4 reused" in again.output, again.output
    # the consensus mosaic of the same tiling is another product: its own tile keys
    whole = CliRunner().invoke(main, args[:3] + [str(tmp_path / "c.tif")] + args[5:] + [
        "--tile-cache", str(tmp_path / "series.tiles")], catch_exceptions=False)
    assert "4 tiles (4 fitted, 0 reused" in whole.output, whole.output


def test_every_date_in_tiles_needs_a_stack_on_disk(tmp_path):
    r = CliRunner().invoke(main, ["fit", "--aoi", "0,0,0.01,0.01", "--start", "2020-01-01",
                                  "--end", "2020-02-01", "--out", str(tmp_path / "s"),
                                  "--every-date", "--tile-size", "64"])
    assert r.exit_code == 2 and "needs a stack on disk" in r.output, r.output
