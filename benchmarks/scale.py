"""Scale study for tiled fits: measured per-tile cost and memory on CPU, projected full-MGRS runs.

    python benchmarks/scale.py [--sizes 32,48,64] [--out benchmarks/results/scale]

Measured here (CPU, one torch thread per fit, each fit in a fresh subprocess so that its peak
resident memory is its own): CPU seconds and peak RSS of one default-settings tile fit
(150 Adam + 100 L-BFGS at 2 m splats, PSF 4 m) for square tiles of several sizes, plus one
check of how cost grows with observations x bands, and the throughput of the window-by-window
mosaic writer. Fitted: CPU seconds per (splat x observation x band).

Projected (NOT measured -- no GPU was available to this study): a full MGRS tile
(10980 x 10980 px at 10 m) cut into tiles of ``--tile`` px with ``--overlap`` px, fitted on 1, 8
and 64 GPUs. The GPU throughput is taken from the source (Robinson & Corley 2026, see
docs/tiling.md): the full 987 x 1011 px scene, ~11.1 M splats at 3 m, 32 observations,
4 bands, fits in about 5 minutes on one GPU -- i.e. ~1.4e6 splat x observation x band per
second for a whole fit, assumed to carry over to our settings (same kind of iteration budget).
The GPU price per hour is an assumption (``--gpu-price``), not a quote.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, TEXTURE_CROPS, machine

MGRS_PX = 10980
SOURCE_GPU_RATE = 11.1e6 * 32 * 4 / 300.0  # splat*obs*band per second, one whole fit

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
import splatsr
from splatsr.evaluate.simulate import simulate
from splatsr.core.model import SplatGrid
n, T, B, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tex = np.load(sys.argv[5]).astype(np.float32) / 1e4
reps = -(-4 * n // 256)
truth = np.stack([np.tile(np.concatenate([tex[b % 3], tex[b % 3][::-1]], 0), (reps, 2 * reps))
                  [: 4 * n, : 4 * n] for b in range(B)])
data, _ = simulate(truth, truth_pixel_m=2.5, n_obs=T, seed=n, noise_sigma=0.003)
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
res = splatsr.fit_arrays(data, pixel_m=10.0)
r1 = resource.getrusage(resource.RUSAGE_SELF)
g = res.grid
print(json.dumps(dict(tile_px=n, obs=T, bands=B, wall_s=time.perf_counter() - t0,
                      cpu_s=(r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                      splats=g.ny * g.nx, peak_rss_mb=r1.ru_maxrss / 1024,
                      base_rss_mb=base / 1024)))
"""


def measure(n: int, T: int, B: int) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(T), str(B), "fit",
                        str(TEXTURE_CROPS)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def mosaic_rate(work: Path) -> dict:
    """Output megapixels per second of write_mosaic: 512 x 512 px at 2.5 m (2048^2 output
    px, 4 bands) from a 3 x 3 store of real S2 texture."""
    import time

    from affine import Affine

    from splatsr import FitConfig
    from splatsr.io.stack import write_stack
    from splatsr.tiles.mosaic import write_mosaic
    from splatsr.tiles.plan import plan_tiles
    from splatsr.tiles.sources import LocalSource
    from splatsr.tiles.store import entry_paths, load_entry, tile_key

    H = W = 512
    T, B, f = 2, 4, 4
    st = write_stack(work / "mosaic_stack", np.zeros((T, B, H, W), np.float32),
                     crs="EPSG:32633", transform=Affine(10, 0, 5e5, 0, -10, 5e6),
                     bands=["B02", "B03", "B04", "B08"], ids=["a", "b"],
                     datetimes=["2025-01-01", "2025-01-02"])
    tiles = plan_tiles(height=H, width=W, tile_size=192, overlap=16)
    cfg, store = FitConfig(), work / "store"
    store.mkdir()
    keys, metas = {}, {}
    fp = LocalSource(st).fingerprint()
    tex = np.load(TEXTURE_CROPS).astype(np.float32) / 1e4
    for t in tiles:
        k = keys[t.id] = tile_key(fingerprint=fp, tile=t, config=cfg, resolution_m=2.5)
        meta_p, img_p = entry_paths(store, t, k)
        big = np.tile(tex, (1, 3, 3))  # (3, 768, 768)
        np.save(img_p, np.stack([big[b % 3, : t.rows * f, : t.cols * f] for b in range(B)]))
        meta_p.write_text(json.dumps(dict(status="fitted", shifts_m=[[0, 0]] * T,
                                          residual_rms=[0] * T)))
        metas[t.id] = load_entry(store, t, k)
    t0 = time.perf_counter()
    write_mosaic(st, tiles, keys, metas, out=work / "m.tif", store=store, factor=f,
                 overlap=16, config=cfg)
    s = time.perf_counter() - t0
    return dict(out_mpx=H * W * f * f / 1e6, bands=B, seconds=s,
                mpx_per_s=H * W * f * f / 1e6 / s)


def tiles_for(size: int, overlap: int, n: int = MGRS_PX) -> int:
    per_axis = 1 if n <= size else math.ceil((n - size) / (size - overlap)) + 1
    return per_axis * per_axis


def splats_for(size: int, spacing_m: float = 2.0, pad: int = 22) -> int:
    """Splats of one tile fit with the default lattice (pad: 22 splats for PSF 4 m)."""
    k = math.ceil(size * 10.0 / spacing_m) + 2 * pad
    return k * k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64,96", help="tile sizes to measure (px)")
    ap.add_argument("--obs", type=int, default=16, help="observations of the measured fits")
    ap.add_argument("--bands", type=int, default=4, help="bands of the measured fits")
    ap.add_argument("--tile", type=int, default=512, help="tile size of the projection (px)")
    ap.add_argument("--overlap", type=int, default=16, help="overlap of the projection (px)")
    ap.add_argument("--proj-obs", type=int, default=16, help="observations in the projection")
    ap.add_argument("--proj-bands", type=int, default=4, help="bands in the projection")
    ap.add_argument("--gpu-price", type=float, default=2.5,
                    help="ASSUMED USD per GPU-hour (cloud on-demand order of magnitude)")
    ap.add_argument("--out", default=str(RESULTS / "scale"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = [measure(int(n), a.obs, a.bands) for n in a.sizes.split(",")]
    n0 = int(a.sizes.split(",")[0])
    check = measure(n0, a.obs // 2, a.bands // 2)  # does cost scale with obs x bands?
    with tempfile.TemporaryDirectory() as tmp:
        mos = mosaic_rate(Path(tmp))
    for r in rows + [check]:
        r["work"] = r["splats"] * r["obs"] * r["bands"]
        r["cpu_rate"] = r["work"] / r["cpu_s"]  # splat*obs*band per CPU second
        r["mem_mb"] = r["peak_rss_mb"] - r["base_rss_mb"]
    # the rate grows with tile size (fixed per-step overheads), so the largest measured tile
    # gives the most representative -- and still conservative -- rate for big tiles
    cpu_rate = float(rows[-1]["cpu_rate"])
    ratio_check = rows[0]["cpu_s"] / check["cpu_s"]
    # memory: least squares of (peak - base) on work, to extrapolate to big tiles
    w = np.array([r["work"] for r in rows], float)
    m = np.array([r["mem_mb"] for r in rows], float)
    slope, icpt = np.polyfit(w, m, 1) if len(rows) > 1 else (m[0] / w[0], 0.0)

    n_tiles = tiles_for(a.tile, a.overlap)
    work_tile = splats_for(a.tile) * a.proj_obs * a.proj_bands
    cpu_tile_s = work_tile / cpu_rate
    gpu_tile_s = work_tile / SOURCE_GPU_RATE
    mem_tile_gb = (icpt + slope * work_tile) / 1024
    out_mpx = (MGRS_PX * 4) ** 2 / 1e6 * a.proj_bands / mos["bands"]
    mosaic_s = out_mpx / mos["mpx_per_s"]
    proj = []
    for g in (1, 8, 64):
        rounds = math.ceil(n_tiles / g)
        fit_h = rounds * gpu_tile_s / 3600
        proj.append(dict(gpus=g, tiles=n_tiles, fit_hours=fit_h, mosaic_hours=mosaic_s / 3600,
                         total_hours=fit_h + mosaic_s / 3600,
                         gpu_hours=g * fit_h, cost_usd=g * fit_h * a.gpu_price))

    info = machine()
    md = [
        "# Scale study: tiled fits", "",
        f"- date: {info['date']}",
        f"- machine: `{info['uname']}`, nproc {info['nproc']}; CPU only, "
        "shared with other jobs (CPU seconds are reported because wall time is inflated by "
        "contention)",
        f"- commit: {info['commit']} (uncommitted changes: {info['dirty']})", "",
        "## Measured on CPU (one torch thread, default solver settings)", "",
        "| tile px | obs | bands | splats | CPU s | wall s | peak RSS MB | above idle MB | "
        "work/CPU s |", "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['tile_px']} | {r['obs']} | {r['bands']} | {r['splats']} | {r['cpu_s']:.1f} | "
          f"{r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['mem_mb']:.0f} | "
          f"{r['cpu_rate']:.3g} |" for r in rows + [check]], "",
        f"Work = splats x observations x bands. At {n0} px, {a.obs} observations x "
        f"{a.bands} bands cost {ratio_check:.2f}x the CPU time of {a.obs // 2} x "
        f"{a.bands // 2} (4x the work): small fits are overhead-bound, so the CPU rate of the "
        f"largest tile ({rows[-1]['tile_px']} px) is used below, which overestimates the CPU "
        "time of larger tiles.", "",
        f"Mosaic writer (window by window + COG conversion): {mos['mpx_per_s']:.2f} output "
        f"Mpx/s at {mos['bands']} bands ({mos['out_mpx']:.2f} Mpx in {mos['seconds']:.2f} s).",
        "", "## Projected (no GPU was available: these are projections, not measurements)",
        "",
        f"Full MGRS tile {MGRS_PX} x {MGRS_PX} px, tiles of {a.tile} px with overlap "
        f"{a.overlap} px: {n_tiles} tiles of {splats_for(a.tile):,} splats; "
        f"{a.proj_obs} observations, {a.proj_bands} bands; output at 2.5 m "
        f"({MGRS_PX * 4} px square).", "",
        f"- GPU speed assumed from the source's full-scene timing (11.1 M splats x 32 obs x "
        f"4 bands in ~300 s on one GPU = {SOURCE_GPU_RATE:.3g} work/s per fit): "
        f"{gpu_tile_s:.0f} s per tile. The measured CPU rate here ({cpu_rate:.3g} work/CPU s) "
        f"gives {cpu_tile_s / 3600:.1f} CPU-core hours per tile, so the assumption implies a "
        f"GPU ~{cpu_tile_s / gpu_tile_s:.0f}x one CPU core.",
        f"- Memory per tile, extrapolated linearly from the measured peaks: "
        f"~{mem_tile_gb:.1f} GB (the same tensors live on the GPU).",
        f"- Mosaic: {out_mpx:,.0f} output Mpx (all bands) at the measured rate: "
        f"{mosaic_s / 3600:.2f} h on the client, serial (not divided by GPUs).",
        f"- Cost: GPU-hours x an ASSUMED {a.gpu_price:.2f} USD per GPU-hour.", "",
        "| GPUs | tiles | fit h | mosaic h | total h | GPU-hours | cost USD |",
        "|---|---|---|---|---|---|---|",
        *[f"| {p['gpus']} | {p['tiles']} | {p['fit_hours']:.2f} | {p['mosaic_hours']:.2f} | "
          f"{p['total_hours']:.2f} | {p['gpu_hours']:.1f} | {p['cost_usd']:.0f} |"
          for p in proj], "",
        "A CPU-only run of the same MGRS tile at the measured rate would take "
        f"{n_tiles * cpu_tile_s / 3600:,.0f} CPU-core hours.", ""]
    (out / "scale.md").write_text("\n".join(md))
    (out / "scale.json").write_text(json.dumps(dict(measured=rows, check=check, mosaic=mos,
                                                    projection=proj, cpu_rate=cpu_rate,
                                                    gpu_rate_assumed=SOURCE_GPU_RATE),
                                               indent=1))
    _figure(out / "scale.png", rows, proj)
    print("\n".join(md))


def _figure(path: Path, rows: list[dict], proj: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot([r["splats"] for r in rows], [r["cpu_s"] for r in rows], "o-")
    ax[0].set(xlabel="splats per tile", ylabel="CPU s per tile fit", title="measured (CPU)")
    ax[1].bar([str(p["gpus"]) for p in proj], [p["total_hours"] for p in proj])
    ax[1].set(xlabel="GPUs", ylabel="hours", title="full MGRS tile: PROJECTED")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
