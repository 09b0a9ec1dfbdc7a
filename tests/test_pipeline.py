"""``splatsr.pipeline.run_fit``: what ``splatsr fit`` does, as a library call."""

from __future__ import annotations

import warnings

import pytest

import splatsr
from splatsr.errors import ConfigError
from splatsr.pipeline import FitRun, TileOptions, check_out, run_fit

FAST = splatsr.FitConfig(adam_steps=30, lbfgs_iters=15, coarse_levels=0)


def test_run_fit_writes_and_reports(small_stack, tmp_path):
    lines: list[str] = []
    run = run_fit(small_stack.root, tmp_path / "sr.tif", config=FAST,
                  init_shifts="phasecorr", log=lines.append)
    assert isinstance(run, FitRun) and run.path == tmp_path / "sr.tif" and run.tiled is None
    assert run.fit.seed_shifts_m is not None and run.stack.root == small_stack.root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.shifts.csv", "sr.tif"]
    assert lines[0].startswith(f"wrote {tmp_path / 'sr.tif'} (128 x 128 px at 2.5 m, 2 bands)")
    assert lines[1].startswith("mean shift of the fit from the phase-correlation seed")


@pytest.mark.parametrize("kwargs,message", [
    ({"resolution_m": 3}, "does not divide"),
    ({"tiles": TileOptions(16), "psf_sigma_m": "auto"}, "not available with --tile-size"),
    ({"tiles": TileOptions(16), "report_dir": "r"}, "not available with --tile-size"),
    ({"init_shifts": "random"}, "init_shifts must be"),
])
def test_run_fit_checks_options_before_fitting(small_stack, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_fit(small_stack.root, tmp_path / "sr.tif", config=FAST, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_run_fit_query_needs_dates(tmp_path):
    with pytest.raises(ConfigError, match="needs start, end"):
        run_fit({"aoi": (5.10, 52.05, 5.14, 52.08)}, tmp_path / "sr.tif")
    with pytest.raises(ConfigError, match="unknown STAC query key"):
        run_fit({"aoi": (5.1, 52.0, 5.2, 52.1), "start": "2025-04-01", "end": "2025-05-01",
                 "clouds": 0.1}, tmp_path / "sr.tif")


def test_check_out(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; create it or pass --mkdir"):
        check_out(tmp_path / "new" / "sr.tif")
    assert check_out(tmp_path / "new" / "sr.tif", mkdir=True) == tmp_path / "new" / "sr.tif"
    assert not (tmp_path / "new").exists()  # created by the writers, after the fit
    with pytest.raises(ConfigError, match="is a folder"):
        check_out(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_out(tmp_path / "sr.TIFF")
        check_out(tmp_path / "sr.png")
    assert [str(w.message)[:33] for w in caught] == ["sr.png does not end in .tif or .t"]


def test_run_fit_uncertainty_writes_sigma_on_the_same_grid(small_stack, tmp_path):
    import numpy as np
    import rasterio

    lines: list[str] = []
    run = run_fit(small_stack.root, tmp_path / "sr.tif", config=FAST, uncertainty=True,
                  report_dir=tmp_path / "rep", log=lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "sr.shifts.csv",
                                                          "sr.sigma.tif", "sr.tif"]
    assert (tmp_path / "rep" / "sigma.png").is_file() and "sigma" in run.report
    assert any(line.startswith("wrote sr.sigma.tif") for line in lines)
    with rasterio.open(tmp_path / "sr.tif") as a, rasterio.open(tmp_path / "sr.sigma.tif") as s:
        assert (a.crs, a.transform, a.shape, a.count) == (s.crs, s.transform, s.shape, s.count)
        assert s.dtypes == ("float32", "float32") and np.isnan(s.nodata)
        assert s.descriptions == tuple(f"{d} sigma" for d in a.descriptions)
        assert s.tags()["units"].startswith("reflectance") and "uncertainty_mode" in s.tags()
        sigma, scene = s.read(), a.read()
    assert np.isfinite(sigma).all() and (sigma > 0).all()
    # 1-sigma of a fit of 8 dates with noise 0.002: well under the scene's spread
    assert np.median(sigma) < 0.5 * np.std(scene)
    # the map on disk is StackFit.sigma in the COG's band order (B04 first)
    order = [list(run.fit.band_names).index(b) for b in ("B04", "B03")]
    np.testing.assert_allclose(sigma, run.fit.sigma(2.5)[order], rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"uncertainty": "slow"}, "uncertainty mode must be one of"),
    ({"tiles": TileOptions(16), "uncertainty": "slow"}, "uncertainty mode must be one of"),
])
def test_run_fit_uncertainty_options(small_stack, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_fit(small_stack.root, tmp_path / "sr.tif", config=FAST, **kwargs)


def _fake_stack(n: int, T: int = 8, B: int = 4):
    from types import SimpleNamespace

    return SimpleNamespace(observations=[None] * T, bands=["b"] * B, pixel_m=10.0,
                           height=n, width=n)


def test_choose_route_tiles_what_does_not_fit():
    """A fake small device budget: the whole 1024 px stack does not fit, 256 px tiles do."""
    from splatsr.core.memory import plan_fit_memory
    from splatsr.pipeline import choose_route

    cfg = splatsr.FitConfig(device="cpu")
    # planned for the consensus's automatic change layer (a node per pixel) at its finest
    geo = dict(n_obs=8, n_bands=4, pixel_m=10.0, spacing_m=2.0, psf_sigma_m=4.0,
               change_cell_m=10.0)
    whole = plan_fit_memory(height=1024, width=1024, **geo).total
    assert choose_route(_fake_stack(1024), cfg, budget_bytes=whole) is None
    lines: list[str] = []
    budget = plan_fit_memory(height=256 + 16, width=256 + 16, **geo).total
    tiles = choose_route(_fake_stack(1024), cfg, budget_bytes=budget, log=lines.append)
    assert tiles == TileOptions(tile_size=256, overlap=8)
    assert "fitting in tiles of 256 px" in lines[0]
    with pytest.raises(ConfigError, match="does not fit"):
        choose_route(_fake_stack(1024), cfg, budget_bytes=1000)


def test_run_fit_refuses_a_stack_too_large_for_any_tile(small_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("SPLATSR_MEMORY_BUDGET_MIB", "0.001")
    with pytest.raises(ConfigError, match="does not fit"):
        run_fit(small_stack.root, tmp_path / "sr.tif", config=FAST)
    assert list(tmp_path.iterdir()) == []


def test_run_fit_too_large_for_the_device_goes_tiled_with_its_sigma(tmp_path, monkeypatch):
    """A budget a third of the whole fit's estimate: the tiled route, sigma map included."""
    from splatsr.core.memory import plan_fit_memory

    st = splatsr.sample_stack()  # 100 x 101 px: room for several tiles
    cfg = splatsr.FitConfig(adam_steps=5, lbfgs_iters=2, coarse_levels=0, device="cpu")
    whole = plan_fit_memory(height=st.height, width=st.width, n_obs=len(st.observations),
                            n_bands=len(st.bands), pixel_m=st.pixel_m,
                            spacing_m=cfg.splat_spacing_m, psf_sigma_m=cfg.psf_sigma_m,
                            change_cell_m=st.pixel_m).total
    monkeypatch.setenv("SPLATSR_MEMORY_BUDGET_MIB", str(whole / 2 ** 20 / 3))
    lines: list[str] = []
    run = run_fit(st, tmp_path / "sr.tif", config=cfg, uncertainty=True, log=lines.append)
    assert "fitting in tiles of" in lines[0] and run.tiled is not None
    assert {"sr.tif", "sr.sigma.tif", "sr.shifts.csv"} <= {p.name for p in tmp_path.iterdir()}
