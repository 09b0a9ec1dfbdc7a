"""opensr-test's metrics on one real-series window: the asked date in the stack.

One command (from the repository root; needs the ``[eval]`` extra)::

    python benchmarks/field_demo.py [--window worldcereal:2019-07-05 ...] [--n 7]

Wald's protocol of ``real_series.py`` (its :func:`load_series`, :func:`window`,
:func:`observe`): the ``n`` dates nearest to the asked date D *and D itself* are observed
by the simulated 10 m sensor (D's own real cloud mask), splatsr is fitted with
``target_date = D`` and rendered at 5 m; bicubic of D's own simulated 10 m observation is
the baseline. Both are scored against the real date D at 5 m with opensr-test
(:func:`field_metrics.score_against`, ``lr`` = D's observation, 2 px border) and with
cPSNR. Writes ``demo.json`` and ``demo.md`` under ``--out`` and the bar figure
``docs/field_metrics.png`` (``--figure``). The default windows: the worldcereal summer window
of ``real_series.py`` (B02 B03 B04 B08) and its eo-learn NDVI summer window (one band).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_series as rs  # noqa: E402
from _common import RESULTS, ROOT, machine  # noqa: E402
from baselines import bicubic_median  # noqa: E402
from field_metrics import bar_figure, score_against  # noqa: E402

from splatsr.core.solver import FitConfig  # noqa: E402
from splatsr.evaluate.metrics import cpsnr  # noqa: E402

WINDOWS = ["worldcereal:2019-07-05", "eolearn_ndvi:2017-07-20"]
COLUMNS = ["improvement", "omission", "hallucination", "synthesis", "consistency_reflectance",
           "consistency_spectral", "consistency_spatial", "cpsnr"]


def run(series: str, held: str, n: int) -> dict:
    """Fit and score one window; returns the rows and what was run."""
    s = rs.load_series(series)
    h = s.dates.index(held)
    idx = sorted(rs.window(s, held, n) + [h])  # the asked date in the stack
    dates = [s.dates[k] for k in idx]
    obs = rs.observe(s.data[idx], s.clear[idx], seed=100 * n + h)  # (T, B, h, w)
    lr = obs[idx.index(h)]  # D's own simulated 10 m observation, NaN where not clear
    ref = s.data[h]  # the real date D read as the 5 m scene
    fit, seconds = rs.fit_render(obs, FitConfig(target_date=held), dates, s.bands)
    outs = {"bicubic_of_D": bicubic_median(lr[None], factor=rs.FACTOR), "splatsr": fit}
    index = s.bands == ["NDVI"]
    rows = []
    for name, img in outs.items():
        m = score_against(ref, img, lr, scale=rs.FACTOR, bands=s.bands, index=index)
        rows.append(dict(method=name, cpsnr=cpsnr(img, ref), **m))
    return dict(series=series, held_out=held, n_dates=len(idx), dates=dates,
                lr_masked_frac=float(np.isnan(lr).mean()), fit_seconds=seconds, rows=rows)


def markdown(res: dict) -> list[str]:
    md = ["", f"{res['series']}, D = {res['held_out']}, {res['n_dates']} dates "
          f"({res['dates'][0]} … {res['dates'][-1]}, D included), D's 10 m observation "
          f"{res['lr_masked_frac']:.0%} masked; 5 m, 2 px border", "",
          "| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    md += [f"| {r['method']} | " + " | ".join(f"{r[c]:.3f}" if c != "cpsnr" else
                                               f"{r[c]:.2f}" for c in COLUMNS) + " |"
           for r in res["rows"]]
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", action="append", help="SERIES:DATE (worldcereal or "
                    "eolearn_ndvi, the asked date D); repeatable; default: " + " ".join(WINDOWS))
    ap.add_argument("--n", type=int, default=7, help="dates besides D")
    ap.add_argument("--out", default=str(RESULTS / "field_metrics"))
    ap.add_argument("--figure", default=str(ROOT / "docs" / "field_metrics.png"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    runs = [run(*w.split(":"), a.n) for w in (a.window or WINDOWS)]
    info = machine()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(dict(runs=runs, machine=info), indent=1) + "\n")
    md = [line for res in runs for line in markdown(res)]
    md += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())]
    (out / "demo.md").write_text("\n".join(md) + "\n")
    bar_figure({f"{r['series']}, D = {r['held_out']} ({r['n_dates']} dates, D included)":
                r["rows"] for r in runs}, a.figure, note="5 m, Wald's protocol, 2 px border")
    print("\n".join(md))


if __name__ == "__main__":
    main()
