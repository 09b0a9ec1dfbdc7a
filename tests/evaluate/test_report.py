"""The figures of ``fit --report`` and of :func:`splatsr.evaluate.report.write_report`."""

from __future__ import annotations

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
