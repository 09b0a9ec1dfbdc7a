"""Tiled vs untiled fit of a simulated stack: quality, seams, reuse of finished tiles.

    python benchmarks/tiling_seams.py [--out benchmarks/results/tiling]

Simulates a 64 x 64 px (10 m), 16-observation, 2-band stack from the real S2 texture in
tests/data (one global shift per date, PSF 4 m, noise 0.003), then runs the real command line
three times with the default solver settings:

1. ``splatsr fit STACK --out untiled.tif``
2. ``splatsr fit STACK --out tiled.tif --tile-size 32 --overlap 8`` (default LocalCluster)
3. the same tiled command again (must reuse every finished tile)

and writes ``seams.md``, ``seams.csv`` and ``error_maps.png`` into the output folder:
PSNR of each against the truth (2.5 m), the seam statistic (:func:`splatsr.tiles.plan.seam_step`
of the tiled error, relative to the untiled fit's on the same lines) and the rerun's output.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from _common import RESULTS, ROOT, TEXTURE_CROPS, machine

import splatsr
from splatsr.tiles.plan import plan_tiles, seam_step

TILE, OVERLAP = 32, 8


def psnr(img: np.ndarray, truth: np.ndarray, crop: int = 8) -> float:
    """PSNR (dB) over the image less ``crop`` output pixels at each border; peak = truth range."""
    a, b = img[:, crop:-crop, crop:-crop], truth[:, crop:-crop, crop:-crop]
    return float(10 * np.log10((b.max() - b.min()) ** 2 / np.mean((a - b) ** 2)))


def cli(*args: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                       text=True, check=False)
    if r.returncode:
        sys.exit(f"command failed: splatsr {' '.join(args)}\n{r.stdout}{r.stderr}")
    return r.stdout.strip(), time.perf_counter() - t0


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        img = src.read()
        order = [src.descriptions.index(b) for b in ("B03", "B04")]
    return img[order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "tiling"))
    ap.add_argument("--work", default=None,
                    help="Folder for the stack and the fits [default: a temporary folder]")
    args = ap.parse_args()
    out = Path(args.out)
    work = Path(args.work or tempfile.mkdtemp(prefix="splatsr-tiling-"))
    tex = np.load(TEXTURE_CROPS).astype(np.float32) / 1e4
    stack = splatsr.simulate_stack(work / "stack", tex[:2], truth_pixel_m=2.5,
                                   bands=["B03", "B04"], n_obs=16, shift_std_m=1.5,
                                   psf_sigma_m=4.0, noise_sigma=0.003, seed=7)
    for p in work.glob("tiled*"):  # a fresh start: the first tiled run fits every tile
        if p.is_dir():
            for q in p.iterdir():
                q.unlink()
            p.rmdir()
        else:
            p.unlink()
    truth = read(stack.root / "truth.tif")

    msg_u, t_u = cli("fit", str(stack.root), "--out", str(work / "untiled.tif"),
                     "--no-progress")
    tiled_args = ("fit", str(stack.root), "--out", str(work / "tiled.tif"), "--tile-size",
                  str(TILE), "--overlap", str(OVERLAP), "--no-progress")
    msg_t1, t_t1 = cli(*tiled_args)
    msg_t2, t_t2 = cli(*tiled_args)
    untiled, tiled = read(work / "untiled.tif"), read(work / "tiled.tif")
    tiles = plan_tiles(height=stack.height, width=stack.width, tile_size=TILE,
                       overlap=OVERLAP)
    p_u, p_t = psnr(untiled, truth), psnr(tiled, truth)
    s_u = seam_step(untiled - truth, tiles, factor=4)
    s_t = seam_step(tiled - truth, tiles, factor=4)
    reused_ok = f"0 fitted, {len(tiles)} reused" in msg_t2
    rows = [("untiled PSNR (dB)", f"{p_u:.2f}"), ("tiled PSNR (dB)", f"{p_t:.2f}"),
            ("tiled - untiled (dB)", f"{p_t - p_u:+.2f}"),
            ("within 0.3 dB", str(p_t > p_u - 0.3)),
            ("seam step, untiled (same lines)", f"{s_u:.3f}"),
            ("seam step, tiled", f"{s_t:.3f}"), ("seam step ratio tiled/untiled",
                                                  f"{s_t / s_u:.3f}"),
            ("untiled run (s)", f"{t_u:.1f}"), ("tiled run 1 (s)", f"{t_t1:.1f}"),
            ("tiled run 2 (s)", f"{t_t2:.1f}"), ("second run reused every tile", str(reused_ok))]
    info = machine()
    env = (f"- date: {info['date']}\n"
           f"- machine: `{info['uname']}`, {info['nproc']} CPUs "
           f"(CPU only, shared with other jobs: times are indicative)\n"
           f"- commit: {info['commit']} (uncommitted changes: {info['dirty']})\n")
    md = ["# Tiled vs untiled fit", "", env,
          f"Stack: 64 x 64 px at 10 m, 16 observations, bands B03/B04, PSF 4 m, noise 0.003, "
          f"one global shift per date (std 1.5 m). Default solver settings. Tiles "
          f"{TILE} px, overlap >= {OVERLAP} px: {len(tiles)} tiles. PSNR over the 2.5 m "
          "output less 8 output px at the border; peak = truth range.", "",
          "| quantity | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
          "Command output:", "", "```", msg_u, msg_t1, msg_t2, "```", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "seams.md").write_text("\n".join(md))
    (out / "seams.csv").write_text("quantity,value\n" +
                                   "".join(f"{k},{v}\n" for k, v in rows))
    _figure(out / "error_maps.png", truth, untiled, tiled, tiles)
    print("\n".join(md))
    print(f"(stack and fits in {work})")


def _figure(path: Path, truth, untiled, tiled, tiles) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(13, 4.3))
    e_u, e_t = np.abs(untiled - truth).mean(0), np.abs(tiled - truth).mean(0)
    vmax = float(np.percentile(e_u, 99))
    for ax, im, title in ((axs[0], e_u, "|error| untiled"), (axs[1], e_t, "|error| tiled"),
                          (axs[2], e_t - e_u, "tiled - untiled")):
        kw = dict(vmin=0, vmax=vmax, cmap="magma") if ax is not axs[2] else \
            dict(vmin=-vmax / 2, vmax=vmax / 2, cmap="RdBu_r")
        h = ax.imshow(im, **kw)
        ax.set_title(title)
        fig.colorbar(h, ax=ax, shrink=0.8)
        for t in tiles:
            ax.add_patch(plt.Rectangle((t.col0 * 4 - 0.5, t.row0 * 4 - 0.5), t.cols * 4,
                                       t.rows * 4, fill=False, ec="cyan", lw=0.6))
    fig.suptitle("Error of tiled vs untiled fit; cyan: tile windows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
