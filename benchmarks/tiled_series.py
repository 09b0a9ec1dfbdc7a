"""Every date in tiles: ``--every-date --tile-size`` against the untiled series, on real series.

One command (from the repository root)::

    python benchmarks/tiled_series.py [--out DIR]

Protocol: the worldcereal report windows of :mod:`date_products` (Wald: each real 10 m date
read as the 5 m scene, observed by the simulated 10 m sensor, masked by its real clouds),
written as a stack directory. The series is made twice: untiled (``splatsr.fit_series``)
and in 2 x 2 tiles of 20 px overlapping by 8 px (``splatsr.tiles.series.fit_series_tiled``,
one in-process Dask worker). Every date's scene is scored as in :mod:`date_products`: per
band, the cPSNR gain over bicubic of that date's own observation against the real date at
5 m, over the dates >= 90 % clear that the untiled fit did not judge outliers. Times: the
untiled series (fits and renders) and the tiled run (fits, mosaics, COGs, items.json) over
one default fit of the same stack.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402
from date_products import CLEAR, REPORT, band_gains, window_with  # noqa: E402
from real_series import PIXEL_M, SCENE_M, load_series, observe  # noqa: E402

import splatsr  # noqa: E402
from splatsr.io.stack import write_stack  # noqa: E402
from splatsr.pipeline import OUTLIER_WEIGHT  # noqa: E402
from splatsr.tiles.series import fit_series_tiled  # noqa: E402

TILE, OVERLAP = 20, 6  # 32 px windows: 2 x 2 tiles overlapping by 8 px


def run_window(season: str, asked: str, n: int, client, work: Path) -> dict:
    s = load_series("worldcereal")
    idx = window_with(s, asked, n)
    h, dates = s.dates.index(asked), [s.dates[k] for k in idx]
    obs = observe(s.data[idx], s.clear[idx], seed=100 * n + h)
    stack = write_stack(work / season, obs, crs="EPSG:32631",
                        transform=Affine(PIXEL_M, 0, 500000.0, 0, -PIXEL_M, 5000000.0),
                        bands=s.bands, ids=[f"d{k:02d}" for k in range(len(idx))],
                        datetimes=[f"{d}T10:30:00Z" for d in dates])
    t0 = time.perf_counter()
    splatsr.fit(stack).render(SCENE_M)
    default_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    series = splatsr.fit_series(stack)
    untiled = [series.render_date(k, SCENE_M) for k in range(len(idx))]
    untiled_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = fit_series_tiled(stack, out_dir=work / f"{season}_series", tile_size=TILE,
                           overlap=OVERLAP, resolution_m=SCENE_M, client=client)
    tiled_s = time.perf_counter() - t0
    rows = []
    for k, o in enumerate(stack.observations):
        with rasterio.open(res.path.parent / f"{o.id}.tif") as src:
            order = [src.descriptions.index(b) for b in s.bands]
            tiled = src.read()[order]
        seg = series.segment_of(k)
        clear = float(np.isfinite(obs[k]).mean())
        weight = float(seg.fit.obs_weights[seg.index_of(k)])
        rows.append(dict(date=dates[k], clear=clear, weight=weight,
                         scored=bool(clear >= CLEAR and weight >= OUTLIER_WEIGHT),
                         untiled=band_gains(untiled[k], s.data[idx[k]], obs[k]),
                         tiled=band_gains(tiled, s.data[idx[k]], obs[k])))
    return dict(season=season, asked=asked, n_dates=n, tiles=len(res.tiles),
                segments=len(series.segments), dates=rows, default_s=default_s,
                untiled_s=untiled_s, tiled_s=tiled_s)


def summary(rows: list[dict]) -> list[str]:
    lines = ["| window | dates scored | untiled: mean (worst date) | tiled: mean (worst date) | "
             "untiled / tiled time over a default fit |", "|---|---|---|---|---|"]
    every = {"untiled": [], "tiled": []}
    for r in rows:
        cells = []
        for name in ("untiled", "tiled"):
            per = [float(np.mean(d[name])) for d in r["dates"] if d["scored"]]
            every[name] += per
            cells.append(f"{np.mean(per):+.2f} ({min(per):+.2f})")
        lines.append(f"| {r['season']} {r['asked']} | {sum(d['scored'] for d in r['dates'])} | "
                     f"{cells[0]} | {cells[1]} | {r['untiled_s'] / r['default_s']:.2f} / "
                     f"{r['tiled_s'] / r['default_s']:.2f} |")
    lines.append(f"| all | {len(every['tiled'])} | {np.mean(every['untiled']):+.2f} "
                 f"({min(every['untiled']):+.2f}) | {np.mean(every['tiled']):+.2f} "
                 f"({min(every['tiled']):+.2f}) | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "date_products")
    args = ap.parse_args()
    import distributed

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                     dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        for series, season, asked, n in REPORT:
            if series == "worldcereal":
                rows.append(run_window(season, asked, n, client, Path(tmp)))
                print(summary(rows)[-2], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    (args.out / "tiled_series.json").write_text(json.dumps(dict(machine=info, rows=rows),
                                                           indent=1))
    md = ["# Every date in tiles against the untiled series", "",
          f"{info['date']}, {info['uname']}, {info['nproc']} CPUs, torch {info['torch']}, "
          f"commit {info['commit']} (dirty: {info['dirty']})", "",
          "Mean cPSNR gain over bicubic of each date's own observation (dB).", "",
          *summary(rows)]
    (args.out / "tiled_series.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
