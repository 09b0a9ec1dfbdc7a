"""Degenerate stacks through the command: each is reported or right, never silently wrong.

Small stacks simulated from real 2.5 m texture (3 bands, 32 x 32 px at 10 m): a band with no
valid pixel in any date, a date with no valid pixel, a target date far after the data, and
(:mod:`tests.core.test_short_stacks`) two dates of which one is clouded.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import run_cli as run

import splatsr
from splatsr.evaluate.simulate import simulate

FAST = ["--adam-steps", "30", "--lbfgs-iters", "15", "--coarse-levels", "0"]
BANDS = ["B02", "B03", "B04"]
OURS = ("no valid pixel", "extrapolation", "brighter", "search limit")


@pytest.fixture(scope="module")
def observations(texture) -> np.ndarray:
    """(6, 3, 32, 32) simulated 10 m dates of real texture."""
    truth = np.stack([texture[0, :128, :128], texture[1, :128, :128],
                      0.8 * texture[2, :128, :128] + 0.01])
    obs, _ = simulate(truth, truth_pixel_m=2.5, n_obs=6, shift_std_m=1.5, noise_sigma=0.002,
                      seed=3)
    return obs


def write(root, data: np.ndarray) -> splatsr.Stack:
    dts = [f"2019-06-{1 + 3 * t:02d}T10:30:00Z" for t in range(len(data))]
    return splatsr.write_stack(root, data, crs="EPSG:32633",
                               transform=Affine(10, 0, 500000, 0, -10, 5000000), bands=BANDS,
                               ids=[f"d{t}" for t in range(len(data))], datetimes=dts)


def fit(root, out, *extra):
    r = run("fit", root, "--out", out, *FAST, *extra)
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.output.splitlines() if ln.startswith("Warning:")]
    # nothing from numpy or torch ("Mean of empty slice", ...): only the guard's sentences
    assert all(any(k in ln for k in OURS) for ln in said), said
    with rasterio.open(out) as src:
        img = dict(zip(src.descriptions, src.read()))
    with open(out.with_name(out.stem + ".shifts.csv")) as f:
        rows = list(csv.DictReader(f))
    return r.output, img, rows


def test_empty_band_is_nan_and_named(observations, tmp_path):
    data = observations.copy()
    data[:, 1] = np.nan  # B03: no valid pixel in any date
    write(tmp_path / "stack", data)
    text, img, rows = fit(tmp_path / "stack", tmp_path / "sr.tif")
    assert "band(s) B03 have no valid pixel in any date" in text
    assert np.isnan(img["B03"]).all()
    for b in ("B02", "B04"):
        assert np.isfinite(img[b]).all() and 0.05 < img[b].mean() < 0.2


def test_empty_date_left_out_named_and_marked(observations, tmp_path):
    data = observations.copy()
    data[2] = np.nan
    write(tmp_path / "stack", data)
    text, img, rows = fit(tmp_path / "stack", tmp_path / "sr.tif")
    assert "left out of the fit: 2019-06-07" in text
    assert "5 observations fitted" in text
    assert [r["used"] for r in rows] == ["1", "1", "0", "1", "1", "1"]
    assert rows[2]["dx_m"] == "nan" and rows[2]["weight"] == "0"
    # the others keep the gauge of a fit without that date: gains near 1
    gains = np.array([[float(r[f"gain_{b}"]) for b in BANDS] for r in rows])
    assert np.abs(gains - 1).max() < 0.05
    assert all(np.isfinite(v).all() for v in img.values())


def test_far_target_date_says_how_far(observations, tmp_path):
    write(tmp_path / "stack", observations)
    text, img, _ = fit(tmp_path / "stack", tmp_path / "sr.tif", "--target-date", "2020-01-01")
    assert ("target date 2020-01-01 is 199 days after the last observation (2019-06-16): "
            "the result is an extrapolation") in text
    text, _, _ = fit(tmp_path / "stack", tmp_path / "sr2.tif", "--target-date", "2019-06-08")
    assert "extrapolation" not in text  # within the span: no word


def test_tiled_route_reports_the_same(observations, tmp_path):
    data = observations.copy()
    data[:, 1] = np.nan
    data[4] = np.nan
    write(tmp_path / "stack", data)
    text, img, _ = fit(tmp_path / "stack", tmp_path / "sr.tif", "--tile-size", "24",
                       "--overlap", "8")
    assert "band(s) B03 have no valid pixel in any date" in text
    assert "left out of the fit: 2019-06-13" in text
    assert np.isnan(img["B03"]).all() and np.isfinite(img["B02"]).all()


def two_dates(texture, *, cloud: bool) -> tuple[np.ndarray, np.ndarray]:
    """(2, 3, 32, 32) dates of real texture, the second under an unmasked bright layer over
    the right 60 % of the scene (a cloud: opacity 0.8, reflectance ~0.4; else a uniform
    +0.3 brightening that keeps the texture), and the (3,) truth's band means."""
    truth = np.stack([texture[0, :128, :128], texture[1, :128, :128],
                      0.8 * texture[2, :128, :128] + 0.01])
    obs, _ = simulate(truth, truth_pixel_m=2.5, n_obs=2, shift_std_m=1.5, noise_sigma=0.002,
                      seed=5)
    W = obs.shape[-1]
    alpha = np.clip((np.arange(W) - 0.4 * W) / 3.0, 0, 1)[None, None, :]  # 0 -> 1 at 40 %
    if cloud:
        layer = np.array([0.45, 0.42, 0.40])[:, None, None]
        obs[1] = (1 - 0.8 * alpha) * obs[1] + 0.8 * alpha * layer
    else:
        obs[1] = obs[1] + 0.3 * alpha
    return obs, truth.reshape(3, -1).mean(axis=1)


def test_two_dates_one_clouded_the_clear_date_wins(texture, tmp_path):
    obs, truth_mean = two_dates(texture, cloud=True)
    write(tmp_path / "stack", obs)
    text, img, rows = fit(tmp_path / "stack", tmp_path / "sr.tif")
    assert "2019-06-04: brighter and flatter than the other date(s) in every band" in text
    assert [r["weight"] for r in rows] == ["1", "0"]
    for b, m in zip(BANDS, truth_mean):  # without the rule: +0.08 to +0.09 too bright
        assert abs(img[b].mean() - m) < 0.01, (b, img[b].mean(), m)


def test_two_dates_brighter_but_not_flatter_says_it_cannot_tell(texture, tmp_path):
    obs, _ = two_dates(texture, cloud=False)
    write(tmp_path / "stack", obs)
    text, _, rows = fit(tmp_path / "stack", tmp_path / "sr.tif")
    assert ("2019-06-04 is brighter than 2019-06-01 in every band but not flatter: the "
            "evidence cannot tell") in text
    assert float(rows[1]["weight"]) > 0  # nothing left out


def test_psf_auto_on_a_stack_with_an_empty_band_and_date(observations, tmp_path):
    data = observations.copy()
    data[:, 1] = np.nan
    data[2] = np.nan
    write(tmp_path / "stack", data)
    text, img, rows = fit(tmp_path / "stack", tmp_path / "sr.tif", "--psf-sigma", "auto")
    assert text.count("have no valid pixel in any date") == 1  # said once, not per fit
    assert text.count("left out of the fit") == 1 and "psf sigma auto:" in text
    assert np.isnan(img["B03"]).all() and np.isfinite(img["B02"]).all()
    with open(tmp_path / "sr.psf.csv") as f:
        curve = list(csv.DictReader(f))
    assert len(curve) == 5 and {r["heldout_rmse_B03"] for r in curve} == {"nan"}
