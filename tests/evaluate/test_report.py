"""The figures of ``fit --report`` and of :func:`splatsr.evaluate.report.write_report`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import png_ok
from helpers import run_cli as run

import splatsr
from splatsr.errors import ConfigError
from splatsr.evaluate.report import plot_convergence, write_report

FAST_CFG = splatsr.FitConfig(adam_steps=30, lbfgs_iters=15, coarse_levels=0)
FAST = ["--adam-steps", "30", "--lbfgs-iters", "15", "--coarse-levels", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_report_writes_three_figures(small_stack, tmp_path):
    rep = tmp_path / "report"
    r = run("fit", small_stack.root, "--out", tmp_path / "sr.tif", "--report", rep, *FAST)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in rep.iterdir()) == ["convergence.png", "panels.png",
                                                     "shifts.png"]
    for p in rep.iterdir():
        png_ok(p)


def test_report_from_arrays_and_odd_histories(small_stack, tmp_path):
    data = small_stack.load()
    res = splatsr.fit_arrays(data, pixel_m=small_stack.pixel_m, config=FAST_CFG,
                             band_names=small_stack.bands)
    with pytest.raises(ConfigError, match="stack_data"):
        write_report(res, tmp_path)
    paths = write_report(res, tmp_path / "r", stack_data=data)
    assert set(paths) == {"panels", "convergence", "shifts"}
    lbfgs_only = [h for h in res.history if h["stage"] == "lbfgs"]
    for hist in ([], lbfgs_only):
        png_ok(plot_convergence(hist, tmp_path / "c.png"))

def test_import_leaves_the_backend_alone():
    code = ("import sys, matplotlib; matplotlib.use('svg'); import splatsr.evaluate.report; "
            "assert 'matplotlib.pyplot' not in sys.modules; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_convergence_has_one_panel_per_level_with_both_stages(tmp_path):
    history = [dict(level=lev, spacing_m=4.0 / (lev + 1), stage=st, step=i,
                    loss=1.0 / (1 + k) ** 2 + 0.01 * lev, data_loss=0.0, time_s=0.01 * k)
               for lev in (0, 1)
               for k, (st, i) in enumerate([("adam", i) for i in range(20)] +
                                           [("lbfgs", i) for i in range(10)])]
    path = plot_convergence(history, tmp_path / "c.png")
    assert path.stat().st_size > 1000
    svg = plot_convergence(history, tmp_path / "c.svg").read_text()
    assert svg.count("L-BFGS: 10 evals") == 2 and "loss evaluation" in svg
