"""Fit figures: no global matplotlib state, a convergence plot that shows L-BFGS."""

import subprocess
import sys

from splatsr.evaluate.report import plot_convergence


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
