"""Performance benchmark: banded render vs the dense reference, fit scaling, memory, roofline.

One command (CPU always; CUDA too when torch sees a GPU)::

    python benchmarks/perf.py                  # quick set, a few minutes on 2 cores
    python benchmarks/perf.py --full           # the issue's grid: crops 64..1024, 4..32 dates

Writes ``benchmarks/results/perf.csv``, ``perf.md`` and ``perf.png`` (log-log scaling plot).

Measured per case (B = 4 bands, splat spacing ``--spacing``, PSF sigma 4 m, shifts N(0, 1.5 m)):

* ``render``: forward + backward of the loss ``sum((render - y)^2)`` w.r.t. weights and shifts,
  best of ``--repeats``, for the fast path and (where it fits in time and memory) the dense
  reference in the same process; ``ratio = dense / fast``.
* ``roofline``: the compulsory traffic of one forward + backward (read the weights and write
  their gradient, write the images and read their gradient: ``2 * 4 bytes * (B*Ky*Kx +
  T*B*H*W)``) over the machine's copy bandwidth (``clone`` of a 256 MiB tensor, read + write
  bytes), divided by the measured time: 1.0 would be at the memory-bandwidth bound.
* ``fit``: a full default fit (:class:`splatsr.FitConfig`) of a simulated stack, run in a fresh
  subprocess so that its peak RSS (and CUDA max allocated) belongs to that fit alone.

Timings on a shared machine are noisy: compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

# as the CLI does (cli.py): idle OpenMP threads sleep, for both sides of every comparison
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from _common import machine as common_machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

QUICK = dict(render=[(64, 4), (64, 16), (128, 4), (128, 16), (256, 16), (512, 8)],
             dense_max_px=128, fit=[(32, 8), (64, 8), (64, 16), (128, 16)])
FULL = dict(render=[(s, t) for s in (64, 128, 256, 512, 1024) for t in (4, 8, 16, 32)],
            dense_max_px=256, fit=[(s, t) for s in (64, 128, 256) for t in (4, 16, 32)])


def copy_bandwidth(device: torch.device, mib: int = 256) -> float:
    """Bytes per second of a large tensor copy (read + write), best of 5."""
    x = torch.empty(mib << 18, dtype=torch.float32, device=device).uniform_()
    best = math.inf
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        y = x.clone()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        del y
    return 2 * x.numel() * 4 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def render_case(size: int, T: int, *, spacing_m: float, device: torch.device, repeats: int,
                dense: bool) -> dict:
    """Forward + backward times of the fast path (and the dense reference) at one size."""
    from splatsr.core.model import SplatGrid
    from splatsr.core.render import render, render_dense

    B = 4
    g = SplatGrid.for_raster(height=size, width=size, pixel_m=10.0, spacing_m=spacing_m,
                             psf_sigma_m=4.0)
    ay, ax = g.axes(pixel_m=10.0, n_y=size, n_x=size)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(B, g.ny, g.nx, generator=gen).to(device).requires_grad_()
    s = (torch.randn(T, 2, generator=gen) * 1.5).to(device).requires_grad_()
    y = torch.randn(T, B, size, size, generator=gen).to(device)
    sigma = math.hypot(g.sigma_m, 4.0)

    def timed(fn) -> float:
        best = math.inf
        for _ in range(repeats + 1):  # the first call warms up
            _sync(device)
            t0 = time.perf_counter()
            p = fn(w, ax_y=ay, ax_x=ax, sigma_m=sigma, dy_m=-s[:, 1], dx_m=s[:, 0])
            ((p - y) ** 2).sum().backward()
            _sync(device)
            best = min(best, time.perf_counter() - t0)
            w.grad = s.grad = None
        return best

    row = dict(kind="render", device=device.type, size=size, T=T, B=B, spacing_m=spacing_m,
               splats=B * g.ny * g.nx, fast_s=timed(render))
    row["dense_s"] = timed(render_dense) if dense else float("nan")
    row["ratio"] = row["dense_s"] / row["fast_s"]
    row["bytes"] = 2 * 4 * (B * g.ny * g.nx + T * B * size * size)
    return row


def _fit_worker(size: int, T: int, spacing_m: float, device: str) -> dict:
    """One full default fit in this (fresh) process: seconds, peak RSS, CUDA peak."""
    torch.set_num_threads(int(os.environ.get("PERF_THREADS", torch.get_num_threads())))
    import splatsr
    from splatsr.core.solver import FitConfig, fit_arrays

    crops = np.load(HERE / "data" / "s2_green_384.npz")["crops"].astype(np.float32) / 1e4
    reps = -(-size * 4 // crops.shape[1])
    truth = np.tile(crops, (1, reps, reps))[:, : size * 4, : size * 4]
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=T, seed=0)
    cfg = FitConfig(splat_spacing_m=spacing_m, device=device)
    del crops, truth
    rss_before = rss_mib("VmRSS")
    reset_peak_rss()  # so that the peak is the fit's, not the simulation's
    t0 = time.perf_counter()
    res = fit_arrays(data, pixel_m=10.0, config=cfg)
    seconds = time.perf_counter() - t0
    peak_cuda = torch.cuda.max_memory_allocated() if device == "cuda" else float("nan")
    return dict(kind="fit", device=device, size=size, T=T, B=4, spacing_m=spacing_m,
                fit_s=seconds, steps=len(res.history), rss_before_fit_mib=rss_before,
                peak_rss_mib=rss_mib("VmHWM"), cuda_max_alloc_mib=peak_cuda / 2**20)


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) in MiB; Linux only, else the
    process's lifetime peak from ``getrusage``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_case(size: int, T: int, *, spacing_m: float, device: torch.device) -> dict:
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        return ex.submit(_fit_worker, size, T, spacing_m, device.type).result()


def machine() -> dict:
    """:func:`_common.machine` plus the load average at the start (the machine is shared)."""
    info: dict = dict(common_machine())
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for dev in sorted({r["device"] for r in rows}):
        rr = [r for r in rows if r["kind"] == "render" and r["device"] == dev]
        x = np.array([r["size"] ** 2 * r["T"] for r in rr], float)
        axes[0].loglog(x, [r["fast_s"] for r in rr], "o", label=f"banded ({dev})")
        d = [(xi, r["dense_s"]) for xi, r in zip(x, rr) if math.isfinite(r["dense_s"])]
        if d:
            axes[0].loglog(*zip(*d), "s", label=f"dense ({dev})")
        fr = [r for r in rows if r["kind"] == "fit" and r["device"] == dev]
        if fr:
            xf = np.array([r["size"] ** 2 * r["T"] for r in fr], float)
            yf = np.array([r["fit_s"] for r in fr])
            axes[1].loglog(xf, yf, "o", label=f"full fit ({dev})")
            ref = yf[-1] * xf / xf[-1]
            axes[1].loglog(np.sort(xf), np.sort(ref), "k--", lw=0.8, label="linear")
    for ax, title in zip(axes, ["render forward + backward (B = 4)",
                                "default fit (B = 4)"]):
        ax.set_xlabel("pixels x observations")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


OPS_RENDER_SIZES = (64, 128, 256, 512, 1024)
OPS_STEP_SIZES = (64, 128, 256)


def ops_main(args: argparse.Namespace) -> int:
    """aten calls per render (fwd + bwd) and per Adam step, beside render times (T = 8)."""
    from opcount import adam_step_ops, render_ops

    torch.set_num_threads(args.threads or 1)
    info, rows = machine(), []
    for size in OPS_RENDER_SIZES:
        r = render_ops(size)
        r["render_s"] = render_case(size, 8, spacing_m=args.spacing, device=torch.device("cpu"),
                                    repeats=1 if size >= 512 else args.repeats,
                                    dense=False)["fast_s"]
        if size in OPS_STEP_SIZES:
            a = adam_step_ops(size)
            r.update(step_all=a["all"], step_top=a["top"], step_by_name=a["by_name"])
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "step_by_name"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "opcount.json").write_text(json.dumps(dict(machine=info, rows=rows), indent=1))
    md = [f"# aten operator calls ({info['date']})", "",
          f"`{info['uname']}`, torch {info['torch']} (1 thread), commit `{info['commit']}`; "
          "T = 8 dates, B = 4 bands, default settings", "",
          "| size px | render fwd+bwd calls (all / top-level) | render fwd+bwd s | "
          "Adam step calls (all / top-level) |", "|---|---|---|---|"]
    md += [f"| {r['size']} | {r['all']} / {r['top']} | {r['render_s']:.3f} | "
           + (f"{r['step_all']} / {r['step_top']}" if "step_all" in r else "-") + " |"
           for r in rows]
    (args.out / "opcount.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the issue's full grid (long)")
    p.add_argument("--spacing", type=float, default=2.0, help="splat spacing in metres")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-fit", action="store_true", help="skip the full-fit cases")
    p.add_argument("--no-render", action="store_true", help="skip the render cases")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--ops", action="store_true",
                   help="only the aten operator counts per render and Adam step, with times")
    args = p.parse_args()
    if args.ops:
        return ops_main(args)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["PERF_THREADS"] = str(args.threads)
    plan = FULL if args.full else QUICK
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    info = machine()
    rows: list[dict] = []
    for dev in devices:
        bw = copy_bandwidth(dev)
        info[f"copy_bandwidth_{dev.type}_GBps"] = bw / 1e9
        for size, T in [] if args.no_render else plan["render"]:
            r = render_case(size, T, spacing_m=args.spacing, device=dev, repeats=args.repeats,
                            dense=size <= plan["dense_max_px"])
            r["roofline"] = r["bytes"] / bw / r["fast_s"]
            rows.append(r)
            print(json.dumps(r), flush=True)
        if not args.no_fit:
            for size, T in plan["fit"]:
                rows.append(fit_case(size, T, spacing_m=args.spacing, device=dev))
                print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("kind", "device"), k))
    with open(args.out / "perf.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    (args.out / "perf.json").write_text(json.dumps(dict(machine=info, rows=rows), indent=1))
    plot(rows, args.out / "perf.png")
    md = [f"# perf ({info['date']})", "", f"`{info['uname']}`, {info['nproc']} CPUs, torch "
          f"{info['torch']} ({info['threads']} threads), commit `{info['commit']}`", "",
          "| device | size | T | fast fwd+bwd s | dense s | dense/fast | roofline |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['device']} | {r['size']} | {r['T']} | {r['fast_s']:.4f} | "
           f"{r['dense_s']:.4f} | {r['ratio']:.1f} | {r['roofline']:.3f} |"
           for r in rows if r["kind"] == "render"]
    md += ["", "| device | size | T | fit s | steps | RSS before fit MiB | peak RSS during fit "
           "MiB | CUDA max alloc MiB |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['device']} | {r['size']} | {r['T']} | {r['fit_s']:.1f} | {r['steps']} | "
           f"{r['rss_before_fit_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
           f"{r['cuda_max_alloc_mib']:.0f} |"
           for r in rows if r["kind"] == "fit"]
    (args.out / "perf.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
