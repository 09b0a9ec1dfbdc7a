"""Shift validation by phase correlation: convention, accuracy on planted shifts, NaN, the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import run_cli as run

import splatsr
from splatsr.errors import StackError
from splatsr.evaluate.registration import (
    compare_shifts,
    format_table,
    phasecorr_seed,
    phasecorr_shifts,
    shift_from_seed_m,
    validate_shifts,
    write_validation,
)
from splatsr.io.export import write_shifts_csv

# A fit short enough for a test. On 48 x 48 px, 16-observation stacks of the three texture
# crops its shifts agreed with phase correlation to r >= 0.9957 per axis (measured).
FAST = ["--adam-steps", "60", "--lbfgs-iters", "40", "--coarse-levels", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted_stacks(texture):
    """Per texture crop: (64 x 64 px, 16 obs) data and the planted shifts (std 1.5 m)."""
    return [splatsr.simulate(texture[k], truth_pixel_m=2.5, n_obs=16, shift_std_m=1.5,
                             psf_sigma_m=4.0, noise_sigma=0.003, seed=k) for k in range(3)]


def test_convention_matches_the_shifts_csv(texture):
    """Whole-pixel rolls: content moved east is +dx, content moved north (up) is +dy."""
    base = texture[0, ::4, ::4][None]  # (1, 64, 64): any texture; rolls are exact
    data = np.stack([base, np.roll(base, 1, axis=2), np.roll(base, -1, axis=1)])
    est = phasecorr_shifts(data, pixel_m=10.0, refine_iters=0)
    expect = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # 0.3 m: the window taper and the wrapped edge of a roll bias the peak slightly
    np.testing.assert_allclose(est, expect - expect.mean(0), atol=0.3)


def test_phasecorr_recovers_planted_shifts(planted_stacks):
    # measured on these three crops: r >= 0.997, MAD <= 0.11 m
    for data, planted in planted_stacks:
        agree = compare_shifts(phasecorr_shifts(data, pixel_m=10.0), planted)
        assert agree["n"] == 16
        assert min(agree["pearson_r"].values()) >= 0.99, agree
        assert max(agree["mad_m"].values()) <= 0.25, agree


def test_nan_pixels_are_masked(planted_stacks):
    data, planted = planted_stacks[1]
    data = data.copy()
    data[3, :, :20, :] = np.nan  # a third of one observation is cloud
    data[5, :, 10:30, 30:50] = np.nan
    data[7] = np.nan  # one observation sees nothing
    est = phasecorr_shifts(data, pixel_m=10.0)
    assert np.isnan(est[7]).all() and np.isfinite(np.delete(est, 7, axis=0)).all()
    agree = compare_shifts(est, planted)
    assert agree["n"] == 15 and min(agree["pearson_r"].values()) >= 0.98, agree
    seed = phasecorr_seed(data, pixel_m=10.0)
    assert np.isfinite(seed).all() and np.allclose(seed.mean(0), 0.0, atol=1e-9)


def test_compare_and_seed_distance():
    a = np.array([[1.0, 2.0], [-1.0, 0.0], [0.0, -2.0]])
    agree = compare_shifts(a + 5.0, a)  # a constant offset is a gauge, not a disagreement
    assert agree["pearson_r"] == {"dx": pytest.approx(1.0), "dy": pytest.approx(1.0)}
    assert agree["mad_m"] == {"dx": pytest.approx(0.0), "dy": pytest.approx(0.0)}
    b = a.copy()
    b[:, 0] += np.array([0.3, -0.3, 0.0])
    assert shift_from_seed_m(b, a) == pytest.approx(0.2)


def test_validate_report_json(small_stack, tmp_path):
    planted = np.array(small_stack.meta["simulation"]["shifts_m"])
    csv_path = write_shifts_csv(tmp_path / "s.csv", ids=[o.id for o in small_stack.observations],
                                datetimes=[o.datetime for o in small_stack.observations],
                                shifts_m=planted)
    report = validate_shifts(small_stack.root, csv_path)
    path = write_validation(report, tmp_path / "r.json")
    back = json.loads(path.read_text())
    assert set(back["pearson_r"]) == set(back["mad_m"]) == {"dx", "dy"}
    assert [o["id"] for o in back["observations"]] == [o.id for o in small_stack.observations]
    assert {"id", "dx_m", "dy_m", "pc_dx_m", "pc_dy_m"} <= set(back["observations"][0])
    # the CSV holds the planted shifts, so "fit vs phase corr." is phase corr. vs planted;
    # 8 observations of 32 x 32 px: measured r >= 0.99
    assert min(back["pearson_r"].values()) >= 0.95
    assert back["planted"]["phasecorr"]["pearson_r"] == pytest.approx(back["pearson_r"], abs=1e-5)
    assert "Pearson r" in format_table(back)


def test_validate_rejects_mismatched_csv(small_stack, tmp_path):
    bad = tmp_path / "bad.csv"
    write_shifts_csv(bad, ids=["x", "y"], datetimes=["", ""], shifts_m=np.zeros((2, 2)))
    with pytest.raises(StackError, match="ids do not match"):
        validate_shifts(small_stack.root, bad)
    with pytest.raises(StackError, match="no such shifts CSV"):
        validate_shifts(small_stack.root, tmp_path / "missing.csv")
    r = run("validate", small_stack.root, bad)
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Error:" in r.output


def test_fit_then_validate_planted_shifts(texture, tmp_path):
    """Planted shifts (std 1.5 m), a fit that starts at zero: its shifts against the *planted*
    ones (not against phase correlation, which would only check that the fit kept its seed).

    Tolerance: the planted shifts are 0.15 px (std); a registration error of 0.05 px (0.5 m,
    a third of the planted spread) per axis would still give r = 1.5 / sqrt(1.5^2 + 0.5^2) =
    0.95, so r >= 0.975 asks for an error below ~0.34 m, and the mean error below 0.3 m
    (a quarter of the 1.2 m mean |planted| shift)."""
    stack = splatsr.simulate_stack(tmp_path / "stack", texture[0, :192, :192],
                                   truth_pixel_m=2.5, n_obs=16, shift_std_m=1.5,
                                   psf_sigma_m=4.0, noise_sigma=0.003, seed=0)
    out = tmp_path / "fit" / "sr.tif"
    r = run("fit", stack.root, "--out", out, "--mkdir", *FAST)
    assert r.exit_code == 0, r.output
    r = run("validate", stack.root, tmp_path / "fit" / "sr.shifts.csv",
            "--out", tmp_path / "report.json")
    assert r.exit_code == 0, r.output
    assert "Pearson r, fit vs phase corr." in r.output
    rep = json.loads((tmp_path / "report.json").read_text())
    pc = np.array([[o["pc_dx_m"], o["pc_dy_m"]] for o in rep["observations"]])
    planted = np.array([[o["planted_dx_m"], o["planted_dy_m"]] for o in rep["observations"]])
    planted = planted - planted.mean(0)  # the fit's gauge: mean zero over the dates
    with open(tmp_path / "fit" / "sr.shifts.csv") as f:
        fitted = np.array([[float(row["dx_m"]), float(row["dy_m"])] for row in csv.DictReader(f)])
    agree = compare_shifts(fitted, planted)
    assert min(agree["pearson_r"].values()) >= 0.975, agree
    assert np.abs(fitted - planted).mean() < 0.3, np.abs(fitted - planted).mean(0)
    assert min(compare_shifts(pc, planted)["pearson_r"].values()) >= 0.95
    assert compare_shifts(fitted, pc)["pearson_r"] == pytest.approx(rep["pearson_r"], abs=1e-5)


def test_validate_summarises_the_sigma_beside_the_shifts(small_stack, tmp_path):
    from splatsr.io.export import write_sigma_cog

    ids = [o.id for o in small_stack.observations]
    csv_path = write_shifts_csv(tmp_path / "sr.shifts.csv", ids=ids,
                                datetimes=[o.datetime for o in small_stack.observations],
                                shifts_m=np.zeros((len(ids), 2)))
    assert validate_shifts(small_stack.root, csv_path, pc_shifts_m=np.zeros((len(ids), 2)))[
        "sigma"] is None
    sigma = np.full((2, 4, 4), 0.01, np.float32)
    sigma[1] = 0.02
    write_sigma_cog(tmp_path / "sr.sigma.tif", sigma, crs=small_stack.crs,
                    transform=small_stack.transform, band_names=["B03", "B04"])
    report = validate_shifts(small_stack.root, csv_path, pc_shifts_m=np.zeros((len(ids), 2)))
    assert report["sigma"]["median"] == pytest.approx({"B04 sigma": 0.02, "B03 sigma": 0.01})
    assert "median 1-sigma uncertainty (sr.sigma.tif): B04 sigma 0.0200" in format_table(report)
