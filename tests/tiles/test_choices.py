"""One model per stack across tiles: the automatic choices are made on the whole stack, and
the tiled mosaic's tags are a whole-stack run's."""

from __future__ import annotations

import json

import numpy as np
import rasterio
from helpers import run_cli as run

from splatsr.core.solver import FitConfig
from splatsr.tiles.inputs import stack_choices
from splatsr.tiles.sources import LocalSource

FAST = ["--adam-steps", "20", "--lbfgs-iters", "10", "--coarse-levels", "0"]


def test_choices_are_the_whole_stack_fit_s(small_stack):
    data = small_stack.load()
    cfg = FitConfig(target_date="2025-04-05")
    ch = stack_choices(LocalSource(small_stack), cfg)
    whole = cfg.with_change_cell(data, pixel_m=10.0).with_time_window(
        data, dates=[o.datetime for o in small_stack.observations])
    assert ch.config == whole and ch.config.time_window_days is not None
    assert ch.band_offsets_m is not None and ch.band_offsets_m.shape == (2, 2)
    assert not ch.inputs.degenerate


def test_tiled_mosaic_tags_equal_a_whole_stack_run_s(small_stack, tmp_path):
    tags = {}
    for name, extra in (("whole", []), ("tiled", ["--tile-size", "20", "--overlap", "8"])):
        out = tmp_path / f"{name}.tif"
        r = run("fit", small_stack.root, "--out", out, "--target-date", "2025-04-05",
                *FAST, *extra)
        assert r.exit_code == 0, r.output
        with rasterio.open(out) as src:
            tags[name] = src.tags()
    tiled, whole = tags["tiled"], tags["whole"]
    assert json.loads(tiled.pop("tiling"))["tiles"] == 4
    for key in ("product", "target_date", "time_window_days", "change_cell_m", "config",
                "psf_sigma_m", "splat_spacing_m", "splat_sigma_m", "observations"):
        assert tiled.get(key) == whole[key], key
    assert set(tiled) == set(whole), set(tiled) ^ set(whole)
    assert whole["product"] == "observed date scene"  # 2025-04-05 is an acquisition
    assert np.isfinite(float(whole["time_window_days"]))


def test_shift_at_the_search_limit_in_a_tile_is_said():
    import warnings

    from splatsr.tiles.inputs import warn_shift_limit

    shifts = np.full((2, 3, 2), np.nan)  # (tiles, dates, 2); NaN: a date a tile left out
    shifts[0, 0], shifts[1, 0], shifts[0, 1] = [1, 2], [29.8, 0], [0.1, 0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_shift_limit(shifts, ("a", "b", "c"))
    assert [str(w.message)[:44] for w in caught] == [
        "in some tile, the shift of a reached the sea"]
