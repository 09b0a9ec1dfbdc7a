"""The command line: outputs, the COG contract, bad input (one line, non-zero, no files)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import run_cli as run

from splatsr.cli import main

FAST = ["--adam-steps", "30", "--lbfgs-iters", "15", "--coarse-levels", "0"]


def test_fit_writes_cog_and_shifts(small_stack, tmp_path):
    out = tmp_path / "res" / "sr.tif"
    r = run("fit", small_stack.root, "--out", out, "--resolution", 2.5, "--psf-sigma", 4, *FAST)
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as src:
        assert src.driver == "GTiff" and src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.dtypes == ("float32", "float32") and np.isnan(src.nodata)
        assert src.crs.to_string() == small_stack.crs
        assert src.res == (2.5, 2.5)
        assert tuple(src.bounds) == pytest.approx(small_stack.bounds, abs=1e-6)
        assert src.descriptions == ("B04", "B03")  # red first for natural colour in QGIS
        tags = src.tags()
        assert tags["psf_sigma_m"] == "4.0" and tags["software"].startswith("splatsr")
        assert json.loads(tags["observations"]) == [o.id for o in small_stack.observations]
        img = src.read()
    assert np.isfinite(img).all() and 0.0 < img.mean() < 0.5
    with open(tmp_path / "res" / "sr.shifts.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [o.id for o in small_stack.observations]
    dx = np.array([float(r["dx_m"]) for r in rows])
    assert abs(dx.mean()) < 1e-3  # gauge: mean zero
    # the default fit is robust: per-date weights and gains/offsets are reported
    assert {"weight", "outlier_fraction", "gain_B04", "offset_B03"} <= set(rows[0])
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["sr.shifts.csv", "sr.tif"]


def test_fit_plain_has_no_radiometry(small_stack, tmp_path):
    out = tmp_path / "sr.tif"
    r = run("fit", small_stack.root, "--out", out, "--plain", *FAST)
    assert r.exit_code == 0, r.output
    with open(tmp_path / "sr.shifts.csv") as f:
        header = next(csv.reader(f))
    assert "residual_rms" in header and not any(h.startswith("gain_") for h in header)
    with rasterio.open(out) as src:
        assert '"loss": "l2"' in src.tags()["config"]


def test_fit_sample_offline(tmp_path):
    r = run("fit", "--sample", "--out", tmp_path / "x.tif", *FAST)
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "x.tif") as src:
        assert src.descriptions == ("B04", "B03", "B02", "B08")
        assert (src.width, src.height) == (400, 404)
        assert src.overviews(1) == [2]  # internal overview for the 400 x 404 px output


def test_simulate_command(tmp_path, texture):
    from affine import Affine

    from splatsr.io.stack import write_observation

    truth = tmp_path / "truth.tif"
    write_observation(truth, texture[:1, :64, :64], crs="EPSG:32633",
                      transform=Affine(2.5, 0, 600000, 0, -2.5, 5100000), bands=["B03"])
    r = run("simulate", truth, "--out", tmp_path / "sim", "--n-obs", 4, "--seed", 3)
    assert r.exit_code == 0, r.output
    spec = json.loads((tmp_path / "sim" / "stack.json").read_text())
    assert spec["width"] == 16 and len(spec["observations"]) == 4
    assert np.allclose(np.mean(spec["simulation"]["shifts_m"], axis=0), 0, atol=1e-12)


@pytest.mark.parametrize("args,code,message", [
    (["fit", "/no/such/stack", "--out", "{tmp}/o.tif"], 1, "no such stack directory"),
    (["fit", "--out", "{tmp}/o.tif"], 2, "exactly one of STACK_DIR, --sample or --aoi"),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--psf-sigma", "-1"], 2, "--psf-sigma"),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--device", "tpu"], 2, "--device"),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--resolution", "3"], 1, "does not divide"),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--splat-spacing", "3.1416"], 1,
     "simple ratio"),
])
def test_bad_input_one_line_error_and_no_output(small_stack, tmp_path, args, code, message):
    args = [a.format(tmp=tmp_path, stack=small_stack.root) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    if code == 1:
        assert len(r.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_too_few_observations_and_invalid_json(tmp_path, small_stack):
    bad = tmp_path / "bad"
    shutil.copytree(small_stack.root, bad)
    spec = json.loads((bad / "stack.json").read_text())
    spec["observations"] = spec["observations"][:1]
    (bad / "stack.json").write_text(json.dumps(spec))
    r = CliRunner().invoke(main, ["fit", str(bad), "--out", str(tmp_path / "o.tif")])
    assert r.exit_code == 1 and "at least 2" in r.output
    (bad / "stack.json").write_text("[1, 2")
    r = CliRunner().invoke(main, ["fit", str(bad), "--out", str(tmp_path / "o.tif")])
    assert r.exit_code == 1 and "not valid JSON" in r.output
    assert not (tmp_path / "o.tif").exists()


def test_console_script_is_installed():
    exe = shutil.which("splatsr") or str(
        __import__("pathlib").Path(sys.executable).with_name("splatsr"))
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert "splatsr" in out.stdout
    # the CLI module is packaged under a private name, never as a bare top-level `cli`
    from importlib.util import find_spec
    assert find_spec("splatsr_cli.cli") is not None


def test_cli_psf_auto_and_bad_value(small_stack, tmp_path):
    out = tmp_path / "sr.tif"
    fast = ["--adam-steps", "8", "--lbfgs-iters", "4", "--coarse-levels", "0"]
    r = CliRunner().invoke(main, ["fit", str(small_stack.root), "--out", str(out),
                                  "--psf-sigma", "auto", *fast],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "psf sigma auto" in r.output
    with open(tmp_path / "sr.psf.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(x["psf_sigma_m"]) for x in rows] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert sum(int(x["chosen"]) for x in rows) == 1
    with open(tmp_path / "sr.shifts.csv") as f:
        cols = next(csv.reader(f))
    assert {"weight", "outlier_fraction", "gain_B03", "offset_B04"} <= set(cols)
    bad = CliRunner().invoke(main, ["fit", str(small_stack.root), "--out",
                                    str(tmp_path / "x.tif"), "--psf-sigma", "wide"])
    assert bad.exit_code == 2 and "number >= 0 or 'auto'" in bad.output
