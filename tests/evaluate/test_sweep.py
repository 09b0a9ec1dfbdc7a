"""Sweeps of the settings: the table, the figures, the command and impossible settings."""

from __future__ import annotations

import csv
import math

import pytest

from helpers import png_ok
from helpers import run_cli as run

import splatsr
from splatsr.errors import ConfigError
from splatsr.evaluate.sweep import COLUMNS, run_sweep, subset_indices

FAST_CFG = splatsr.FitConfig(adam_steps=30, lbfgs_iters=15, coarse_levels=0)
FAST = ["--adam-steps", "30", "--lbfgs-iters", "15", "--coarse-levels", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_subset_indices():
    assert subset_indices(7, 3).tolist() == [0, 3, 6]
    assert subset_indices(7, 7).tolist() == list(range(7))
    assert subset_indices(7, 2, how="first").tolist() == [0, 1]
    with pytest.raises(ConfigError):
        subset_indices(3, 4)


def test_run_sweep_table_and_figures(small_stack, tmp_path):
    rows = run_sweep(small_stack, psf_sigmas=[3, 4], n_obs=[3, 7, 50], out_dir=tmp_path,
                     config=FAST_CFG)
    # 8 observations, one held out: n_obs 50 is skipped, the rest is the full grid
    assert [(r["psf_sigma_m"], r["n_obs"]) for r in rows] == [(3, 3), (3, 7), (4, 3), (4, 7)]
    with open(tmp_path / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(COLUMNS) and len(table) == 4
    for r in rows:
        # a simulated stack records its truth: every metric is defined
        assert all(math.isfinite(r[c]) for c in COLUMNS), r
        assert 0 < r["ssim"] <= 1 and r["psnr_db"] > 20  # measured: ~30 dB, SSIM ~0.83
        # 0.002 noise: a fit cannot be far below it, a sane one is not far above it
        assert 0.001 < r["misfit_rms"] < 0.006 and 0.001 < r["heldout_error"] < 0.01
    md = (tmp_path / "sweep.md").read_text()
    assert md.count("\n| ") == 5 and "Skipped n_obs 50" in md and "sim004" in md
    for name in ("sweep_recon.png", "sweep_psf_sigma_m.png", "sweep_n_obs.png"):
        png_ok(tmp_path / name)


def test_run_sweep_rejects_impossible_settings(small_stack, tmp_path):
    with pytest.raises(ConfigError, match="no n_obs value"):
        run_sweep(small_stack, psf_sigmas=[4], n_obs=[1, 40], out_dir=tmp_path)
    with pytest.raises(ConfigError):
        run_sweep(small_stack, psf_sigmas=[], n_obs=[4], out_dir=tmp_path)


def test_sweep_command(small_stack, tmp_path):
    out = tmp_path / "sw"
    r = run("sweep", small_stack.root, "--psf-sigma", "3,5", "--n-obs", "4,8", "--out", out,
            *FAST)
    assert r.exit_code == 0, r.output
    # 8 dates, one held out: n_obs 8 cannot be fitted, and the console says so
    assert "skipped --n-obs 8" in r.output
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(float(x["psf_sigma_m"]), int(x["n_obs"])) for x in rows] == [(3, 4), (5, 4)]
    assert float(rows[0]["splat_spacing_m"]) == splatsr.FitConfig().splat_spacing_m
    assert list(out.glob("*.png"))
    r = run("sweep", small_stack.root, "--psf-sigma", "3,x", "--out", out)
    assert r.exit_code == 2 and "--psf-sigma" in r.output
