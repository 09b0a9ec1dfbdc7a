"""``splatsr fit --every-date``: one COG per observation and a STAC ItemCollection; the
observed-date product of ``--target-date`` on an acquisition."""

from __future__ import annotations


import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import run_cli as run

import splatsr
from splatsr.cli import main
from splatsr.io.series import read_series

FAST = ["--adam-steps", "30", "--lbfgs-iters", "15", "--coarse-levels", "0"]


def test_every_date_writes_a_cog_per_date_and_items(small_stack, tmp_path):
    out = tmp_path / "series"
    r = run("fit", small_stack.root, "--out", out, "--every-date", "--resolution", 5, *FAST)
    assert r.exit_code == 0, r.output
    obs = small_stack.observations
    assert f"wrote {len(obs)} COGs" in r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{o.id}.tif" for o in obs] + ["items.json", "shifts.csv"])
    items = read_series(out)
    assert [i.id for i in items] == [o.id for o in obs]
    with rasterio.open(out / f"{obs[3].id}.tif") as src:
        tags = src.tags()
        assert tags["product"] == "observed date scene" and tags["observation"] == obs[3].id
        assert src.res == (5.0, 5.0) and src.descriptions == ("B04", "B03")
        img = src.read()
    assert np.isfinite(img).all() and 0.0 < img.mean() < 0.5
    # the same scene as the Python API renders for that date (bands B03, B04 in stack order)
    series = splatsr.fit_series(small_stack.root, adam_steps=30, lbfgs_iters=15,
                                coarse_levels=0)
    assert len(series.segments) == 2  # 8 clear dates: two segments of 4 consecutive dates
    np.testing.assert_allclose(series.render_date(obs[3].id, 5.0)[::-1], img, atol=1e-6)


def test_every_date_with_uncertainty_writes_each_dates_sigma(small_stack, tmp_path):
    out = tmp_path / "series"
    r = run("fit", small_stack.root, "--out", out, "--every-date", "--resolution", 5,
            "--uncertainty", *FAST)
    assert r.exit_code == 0, r.output
    assert "sigma.tif beside each COG" in r.output
    obs = small_stack.observations
    items = read_series(out)
    for item, o in zip(items, obs):
        assert item.assets["sigma"].href == str(out / f"{o.id}.sigma.tif")
    with rasterio.open(out / f"{obs[3].id}.tif") as a, \
            rasterio.open(out / f"{obs[3].id}.sigma.tif") as s:
        assert a.transform == s.transform and a.shape == s.shape and a.crs == s.crs
        assert s.descriptions == ("B04 sigma", "B03 sigma")
        sig = s.read()
    assert np.isfinite(sig).all() and (sig > 0).all()
    # the Python API gives the same map for that date (bands in stack order)
    series = splatsr.fit_series(small_stack.root, adam_steps=30, lbfgs_iters=15,
                                coarse_levels=0)
    np.testing.assert_allclose(series.sigma_date(obs[3].id, 5.0)[::-1], sig, rtol=1e-5)
    # in the series' frame, as the date's image is: its segment fit's map, moved
    from splatsr.core.products.uncertainty import in_frame, sigma_map
    seg = series.segment_of(3)
    assert np.hypot(*seg.frame_shift_m) > 0.01
    as_fitted = sigma_map(seg.fit, series.data[seg.dates], resolution_m=5.0,
                          own=seg.index_of(3), frame_shift_m=(0.0, 0.0)).astype(np.float64)
    np.testing.assert_allclose(np.sqrt(in_frame(as_fitted ** 2, seg.frame_shift_m,
                                                 resolution_m=5.0))[::-1], sig, rtol=1e-5)


def test_target_date_on_an_acquisition_follows_that_date(small_stack, tmp_path):
    day = small_stack.observations[2].datetime[:10]
    out = tmp_path / "t.tif"
    r = run("fit", small_stack.root, "--out", out, "--target-date", day, *FAST)
    assert r.exit_code == 0, r.output
    assert f"target date {day} is the acquisition {small_stack.observations[2].id}" in r.output
    with rasterio.open(out) as src:
        assert src.tags()["target_date"] == day


def test_target_date_on_an_acquisition_with_uncertainty(small_stack, tmp_path):
    """The observed-date product's sigma: that date's own scene, through the CLI."""
    day = small_stack.observations[2].datetime[:10]
    out = tmp_path / "t.tif"
    r = run("fit", small_stack.root, "--out", out, "--target-date", day, "--resolution", 5,
            "--uncertainty", *FAST)
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as a, rasterio.open(tmp_path / "t.sigma.tif") as s:
        assert a.shape == s.shape and s.tags()["uncertainty_mode"] == "full"
        sig = s.read()
    assert np.isfinite(sig).all() and (sig > 0).all()


@pytest.mark.parametrize("extra,message", [
    (["--target-date", "2019-06-01"], "leave out --target-date"),
    (["--psf-sigma", "auto"], "not available with --every-date"),
    (["--report", "{tmp}/figs"], "not available with --every-date"),
    (["--prior", "auto"], "does not choose the prior"),
])
def test_every_date_bad_combinations(small_stack, tmp_path, extra, message):
    extra = [a.format(tmp=tmp_path) for a in extra]
    r = CliRunner().invoke(main, ["fit", str(small_stack.root), "--out", str(tmp_path / "s"),
                                  "--every-date", *extra])
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.startswith("Error: ")
    assert list(tmp_path.iterdir()) == []


def test_every_date_out_must_not_be_a_file(small_stack, tmp_path):
    (tmp_path / "f.tif").write_text("x")
    r = CliRunner().invoke(main, ["fit", str(small_stack.root), "--out",
                                  str(tmp_path / "f.tif"), "--every-date"])
    assert r.exit_code == 2 and "is a file" in r.output
