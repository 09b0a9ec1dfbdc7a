"""What the change layer costs: time and peak memory of a consensus fit of a changing stack.

A stack simulated from real S2 texture (``data/s2_green_384.npz``, 4 bands) in which every
date carries its own reflectance gradient across the scene (+-0.03, mean zero over the
dates), so the change test turns the consensus's layer on. One default fit per setting, each
in a fresh process (peak RSS reset before the fit, Linux):

* ``off``: ``change_cell_m=0`` (the static model);
* ``40 m``: ``change_cell_m=40`` (the target-date fits' lattice);
* ``auto``: the default, a node per pixel with roughness weight 0.1.

    python benchmarks/change_cost.py [--size 128] [--dates 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import HERE, reset_peak_rss, rss_mib  # noqa: E402

SETTINGS = {"off": dict(change_cell_m=0.0), "40 m": dict(change_cell_m=40.0), "auto": {}}


def changing_stack(size: int, T: int) -> np.ndarray:
    """(T, 4, size, size) 10 m dates of real texture, each with its own gradient."""
    import splatsr

    crops = np.load(HERE / "data" / "s2_green_384.npz")["crops"].astype(np.float32) / 1e4
    reps = -(-size * 4 // crops.shape[1])
    truth = np.tile(crops, (1, reps, reps))[:, : size * 4, : size * 4]
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=T, seed=0)
    x = (np.arange(size) + 0.5) / size - 0.5
    a = np.random.default_rng(0).uniform(-0.03, 0.03, T)
    a -= a.mean()
    return (data + a[:, None, None, None] * (x[None, :] + x[:, None])[None, None]
            ).astype(np.float32)


def worker(name: str, size: int, T: int, threads: int) -> dict:
    """One consensus fit with the setting ``name``: seconds, peak RSS, the layer chosen."""
    torch.set_num_threads(threads)
    from splatsr.core.solver import FitConfig, fit_arrays

    data = changing_stack(size, T)
    reset_peak_rss()
    t0 = time.perf_counter()
    res = fit_arrays(data, pixel_m=10.0, config=FitConfig(**SETTINGS[name]))
    return dict(setting=name, fit_s=time.perf_counter() - t0, peak_rss_mib=rss_mib("VmHWM"),
                evaluations=len(res.history),
                change_cell_m=res.config.change_cell_m, change_weight=res.config.change_weight)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="pixels per side")
    ap.add_argument("--dates", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for name in SETTINGS:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(worker, (name, args.size, args.dates, args.threads)))
    print(f"{args.size} x {args.size} px x {args.dates} dates x 4 bands, "
          f"{args.threads} threads, {platform.platform()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}, commit "
          f"{os.popen('git rev-parse --short HEAD').read().strip()}\n")
    print("| setting | layer (cell m, weight) | fit s | loss evaluations | "
          "peak RSS during the fit MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['change_cell_m']:g}, {r['change_weight']:g} | "
              f"{r['fit_s']:.1f} | {r['evaluations']} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
