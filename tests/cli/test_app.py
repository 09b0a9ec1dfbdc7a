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
import torch
from click.testing import CliRunner
from helpers import run_cli as run

from splatsr.cli import main

FAST = ["--adam-steps", "30", "--lbfgs-iters", "15", "--coarse-levels", "0"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device")


def test_fit_writes_cog_and_shifts(small_stack, tmp_path):
    out = tmp_path / "res" / "sr.tif"
    r = run("fit", small_stack.root, "--out", out, "--mkdir", "--resolution", 2.5,
            "--psf-sigma", 4, *FAST)
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
        assert tags["product"] == "consensus, median-anchored"
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


def test_fit_band_psf_widths_reach_the_csv_and_tags(small_stack, tmp_path):
    out = tmp_path / "sr.tif"
    r = run("fit", small_stack.root, "--out", out, "--band-psf-sigma", "3.5,4.5", *FAST)
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as src:
        assert json.loads(src.tags()["band_psf_sigma_m"]) == {"B03": 3.5, "B04": 4.5}
    with open(tmp_path / "sr.shifts.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(float(x["psf_sigma_m_B03"]), float(x["psf_sigma_m_B04"])) for x in rows} == \
        {(3.5, 4.5)}


def test_fit_uncertainty_writes_sigma_beside_the_cog(small_stack, tmp_path):
    out = tmp_path / "sr.tif"
    r = run("fit", small_stack.root, "--out", out, "--resolution", 5, "--uncertainty",
            "--uncertainty-mode", "fast", *FAST)
    assert r.exit_code == 0, r.output
    assert "sr.sigma.tif" in r.output
    with rasterio.open(out) as a, rasterio.open(tmp_path / "sr.sigma.tif") as s:
        assert (a.crs, a.transform, a.shape) == (s.crs, s.transform, s.shape)
        assert s.tags()["uncertainty_mode"] == "fast"
        assert np.isfinite(s.read()).all()


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


def test_fit_summary_says_how_many_dates_carried_the_result(small_stack, tmp_path):
    """The summary line's effective dates are (sum w)^2 / sum w^2 of the CSV's weights x time
    weights x each date's valid fraction: fewer than all 8 dates with a target date."""
    import re

    out = tmp_path / "sr.tif"
    day = small_stack.observations[0].datetime[:10]
    r = run("fit", small_stack.root, "--out", out, "--target-date", day,
            "--time-window", 2, *FAST)  # daily dates: 2 days drop the last ones
    assert r.exit_code == 0, r.output
    n_eff, n = re.search(r"effective dates: ([\d.]+) of (\d+)", r.output).groups()
    with open(tmp_path / "sr.shifts.csv") as f:
        rows = list(csv.DictReader(f))
    valid = np.isfinite(small_stack.load()).reshape(len(rows), -1).mean(axis=1)
    w = np.array([float(x["weight"]) * float(x["time_weight"]) for x in rows]) * valid
    assert int(n) == len(rows) == 8
    assert float(n_eff) == pytest.approx(w.sum() ** 2 / (w * w).sum(), abs=0.051)
    assert 1.0 <= float(n_eff) < 6.0


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


# (arguments, exit status, message, found by the library: one line "Error: ..." then)
@pytest.mark.parametrize("args,code,message,one_line", [
    (["fit", "/no/such/stack", "--out", "{tmp}/o.tif"], 1, "no such stack directory", True),
    (["fit", "--out", "{tmp}/o.tif"], 2, "exactly one of STACK_DIR, --sample or --aoi", False),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--psf-sigma", "-1"], 2, "--psf-sigma", False),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--device", "tpu"], 2, "--device", False),
    # bad option values found only after reading the stack are usage errors too (exit 2)
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--resolution", "3"], 2, "does not divide",
     True),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--splat-spacing", "3.1416"], 2,
     "simple ratio", True),
    (["fit", "{stack}", "--out", "{tmp}/new/o.tif"], 2,
     "does not exist; create it or pass --mkdir", True),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--tile-size", "16", "--psf-sigma", "auto"],
     2, "not available with --tile-size", True),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--tile-size", "16", "--prior", "auto"], 2,
     "--prior auto is not available with tiles", True),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--band-psf-sigma", "4,wide"], 2,
     "one number >= 0 per band", False),
    (["fit", "{stack}", "--out", "{tmp}/o.tif", "--band-psf-sigma", "4"], 2,
     "gives 1 PSF width(s) for a stack of 2 bands", True),
    # a CPU-only torch: checked before the memory plan asks CUDA for its free memory
    pytest.param(["fit", "{stack}", "--out", "{tmp}/new/o.tif", "--mkdir", "--device", "cuda"],
                 2, "torch sees no CUDA device", True, marks=NO_CUDA),
    pytest.param(["fit", "--sample", "--out", "{tmp}/o.tif", "--device", "cuda",
                  "--tile-size", "32"], 2, "torch sees no CUDA device", True, marks=NO_CUDA),
])
def test_bad_input_one_line_error_and_no_output(small_stack, tmp_path, args, code, message,
                                                one_line):
    args = [a.format(tmp=tmp_path, stack=small_stack.root) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    if one_line:
        assert r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_mkdir_and_non_tif_name_warns(small_stack, tmp_path):
    out = tmp_path / "a" / "b" / "sr.png"
    r = run("fit", small_stack.root, "--out", out, "--mkdir", *FAST)
    assert r.exit_code == 0, r.output
    assert "Warning: sr.png does not end in .tif or .tiff" in r.output
    with rasterio.open(out) as src:
        assert src.driver == "GTiff"


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
    assert all(float(x["heldout_rmse_B03"]) > 0 and float(x["heldout_rmse_B04"]) > 0
               for x in rows)  # each band's own held-out error
    with open(tmp_path / "sr.shifts.csv") as f:
        cols = next(csv.reader(f))
    assert {"weight", "outlier_fraction", "gain_B03", "offset_B04"} <= set(cols)
    bad = CliRunner().invoke(main, ["fit", str(small_stack.root), "--out",
                                    str(tmp_path / "x.tif"), "--psf-sigma", "wide"])
    assert bad.exit_code == 2 and "number >= 0 or 'auto'" in bad.output


def _capture(monkeypatch, target: str) -> dict:
    """Replace the library call ``target`` by one that records its arguments."""
    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(kwargs, args=args)
        return [] if target.endswith("run_sweep") else None
    monkeypatch.setattr(target, record)
    return seen


def test_solver_flags_reach_the_config(monkeypatch, small_stack, tmp_path):
    """The flags come from one table keyed by FitConfig field; values land in the config."""
    import splatsr

    seen = _capture(monkeypatch, "splatsr.pipeline.run_fit")
    r = run("fit", small_stack.root, "--out", tmp_path / "x.tif", "--tv", 0.2, "--seed", 3,
            "--splat-sigma", 1.5, "--adam-steps", 7, "--plain", "--no-progress")
    assert r.exit_code == 0, r.output
    cfg = seen["config"]
    assert (cfg.tv_weight, cfg.seed, cfg.splat_sigma_m, cfg.adam_steps) == (0.2, 3, 1.5, 7)
    assert (cfg.loss, cfg.radiometry, cfg.progress) == ("l2", False, False)
    assert cfg.lbfgs_iters == splatsr.FitConfig().lbfgs_iters  # default from FitConfig
    assert seen["resolution_m"] == 2.5 and seen["mkdir"] is False and seen["tiles"] is None
    run("fit", small_stack.root, "--out", tmp_path / "x.tif", "--psf-sigma", "auto")
    assert seen["psf_sigma_m"] == "auto" and seen["config"].psf_sigma_m == 4.0
    assert seen["config"].progress is False  # stderr is no terminal under CliRunner

    seen = _capture(monkeypatch, "splatsr.evaluate.sweep.run_sweep")
    r = run("sweep", small_stack.root, "--out", tmp_path / "sw", "--tv", 0.3,
            "--splat-spacing", "2,2.5")
    assert r.exit_code == 0, r.output
    assert seen["config"].tv_weight == 0.3 and seen["splat_spacings"] == [2.0, 2.5]


def test_target_date_flags(monkeypatch, small_stack, tmp_path):
    """--target-date reaches the config as YYYY-MM-DD text; a bad date is a usage error."""
    seen = _capture(monkeypatch, "splatsr.pipeline.run_fit")
    r = run("fit", small_stack.root, "--out", tmp_path / "x.tif", "--target-date",
            "2019-06-01", "--time-window", 12)
    assert r.exit_code == 0, r.output
    assert (seen["config"].target_date, seen["config"].time_window_days) == ("2019-06-01", 12)
    r = run("fit", small_stack.root, "--out", tmp_path / "x.tif", "--no-median-anchor")
    assert r.exit_code == 0 and seen["config"].median_anchor is False, r.output
    for bad in (["--target-date", "2019-02-30"], ["--time-window", "0"]):
        r = run("fit", small_stack.root, "--out", tmp_path / "x.tif", *bad)
        assert r.exit_code == 2, r.output


def test_new_config_fields_get_their_flag():
    from dataclasses import fields

    import splatsr
    from splatsr.cli.options import CONFIG_OPTIONS

    names = {f.name for f in fields(splatsr.FitConfig)}
    assert {row.field for row in CONFIG_OPTIONS} <= names
    text = run("fit", "--help").output
    assert ("--target-date" in text) == ("target_date" in names)
    assert ("--time-window" in text) == ("time_window_days" in names)


def test_every_option_has_help():
    import click

    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"splatsr {name} {param.opts[0]} has no help"


def test_fetch_progress_defaults_like_fit(monkeypatch, tmp_path):
    seen = _capture(monkeypatch, "splatsr.io.fetch.fetch_stack")
    CliRunner().invoke(main, ["fetch", "--aoi", "5.10,52.05,5.14,52.08", "--start",
                              "2025-04-01", "--end", "2025-10-31", "--out", str(tmp_path)])
    assert seen["progress"] is False  # stderr is no terminal under CliRunner


def test_ctrl_c_exits_130_with_one_line(monkeypatch, small_stack, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("splatsr.pipeline.run_fit", interrupted)
    r = CliRunner().invoke(main, ["fit", str(small_stack.root), "--out", str(tmp_path / "x")])
    assert r.exit_code == 130 and r.output == "interrupted\n"


def test_ctrl_c_while_importing_exits_130(monkeypatch, capsys):
    """The entry point catches a Ctrl-C that lands while splatsr (torch, ...) loads."""
    import importlib.util
    from pathlib import Path

    class Interrupt:
        def find_spec(self, name, path=None, target=None):
            if name == "splatsr.cli":
                raise KeyboardInterrupt

    spec = importlib.util.spec_from_file_location(
        "entry", Path(__file__).parents[2] / "cli.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    monkeypatch.delitem(sys.modules, "splatsr.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupt(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_:
        entry.main()
    assert exit_.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def _interrupt_when_fitting(cmd: list, group: bool = False) -> tuple[int, str]:
    """Run ``cmd``, send SIGINT once its progress bar shows; (exit status, stderr).

    ``group``: to the whole process group, as a terminal's Ctrl-C does (Dask workers too).
    """
    import os
    import signal

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([str(c) for c in cmd], stderr=subprocess.PIPE, env=env,
                            start_new_session=group)
    try:
        seen = b""
        while b"|" not in seen and proc.poll() is None:  # the progress bar: the fit runs
            seen += os.read(proc.stderr.fileno(), 4096)
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        err = (seen + proc.stderr.read()).decode()
        return proc.wait(timeout=60), err
    finally:
        proc.kill()


def test_sigint_during_a_fit_exits_130(tmp_path):
    """A real Ctrl-C (SIGINT) while ``python -m splatsr fit`` is fitting."""
    code, err = _interrupt_when_fitting(
        [sys.executable, "-m", "splatsr", "fit", "--sample", "--out", tmp_path / "x.tif",
         "--adam-steps", "100000", "--coarse-levels", "0", "--progress"])
    assert code == 130, err
    assert err.rstrip().endswith("interrupted") and "Traceback" not in err
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.slow
def test_ctrl_c_during_a_tiled_fit_is_quiet(tmp_path):
    """Ctrl-C to the process group of ``splatsr fit --tile-size`` (a LocalCluster): 130,
    one line, no Dask warnings or worker tracebacks."""
    from pathlib import Path

    entry = Path(__file__).parents[2] / "cli.py"  # what the installed command runs
    code, err = _interrupt_when_fitting(
        [sys.executable, entry, "fit", "--sample", "--out", tmp_path / "t.tif", "--tile-size",
         40, "--adam-steps", 100000, "--coarse-levels", 0, "--progress"], group=True)
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err and "distributed" not in err, err
    assert not (tmp_path / "t.tif").exists()


def test_spawned_workers_leave_ctrl_c_to_the_command(monkeypatch):
    """A process spawned from the command (a Dask worker) re-imports the entry point as
    ``__mp_main__`` and ignores SIGINT: no traceback from workers still importing."""
    import importlib.util
    import signal
    import types
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("entry", Path(__file__).parents[2] / "cli.py")
    before = signal.getsignal(signal.SIGINT)
    try:
        # the command itself: multiprocessing aliases __mp_main__ to __main__ on import
        monkeypatch.setitem(sys.modules, "__mp_main__", sys.modules["__main__"])
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert signal.getsignal(signal.SIGINT) is before
        # a spawned child re-running the script under a temporary __mp_main__ module
        monkeypatch.setitem(sys.modules, "__mp_main__", types.ModuleType("__mp_main__"))
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
