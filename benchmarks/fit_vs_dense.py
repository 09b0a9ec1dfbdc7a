"""Speed and quality of the end-to-end CLI fit against a plain dense-erf Adam -> L-BFGS fit.

One command, CPU::

    python benchmarks/fit_vs_dense.py            # writes benchmarks/results/fit_vs_dense.*

What it does, in one run on one machine:

1. simulates a 96 x 96 px, 16-date, 4-band stack at 10 m from real Sentinel-2 texture read as a
   2.5 m truth (``benchmarks/data/s2_green_384.npz``; PSF sigma 4 m, shifts N(0, 1.5 m),
   noise 0.003);
2. times ``splatsr fit STACK --out sr.tif --psf-sigma 4 --resolution 2.5`` as a subprocess
   (wall clock: interpreter start, imports, reading, fit, writing the COG -- everything);
3. times a *plain* fit of the same stack: the source's set-up, 3 m splats (sigma 3 m), dense
   erf matrices (:func:`splatsr.core.render.render_dense`, materialised every evaluation), Adam 200
   steps (learning rate 0.05) then 100 L-BFGS iterations in one call (strong Wolfe, torch's
   default budget of 1.25 evaluations per iteration), least squares with the solver's
   normalisation, a median-composite initialisation and a smoothed TV prior (written out
   here, like the solver's); wall clock of the fit alone (no process start,
   no I/O -- in its favour). The CLI side runs the robust default (Cauchy loss, per-date
   gain/offset, date weights), which costs more per evaluation than least squares;
4. scores both 2.5 m images against the truth (PSNR over the interior, 4 px at 10 m of border
   dropped; peak = the truth's range per band, averaged over bands).

Pass: ``t_cli <= 0.5 * t_dense`` and ``psnr_cli >= psnr_dense``. The order of the two runs
alternates over ``--repeats`` to spread the effect of other load on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# as the CLI does (cli.py): idle OpenMP threads sleep, for both sides of every comparison
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import rasterio
import torch

from _common import RESULTS, ROOT, TEXTURE_384, machine  # noqa: E402

sys.path.insert(0, str(ROOT))  # the library of this checkout, installed or not

import splatsr  # noqa: E402
from splatsr.core.model import SplatGrid, render_latent, render_observations  # noqa: E402
from splatsr.core.solver import noise_sigma  # noqa: E402

BORDER_PX = 4  # 10 m pixels dropped on every side before scoring


def make_truth() -> np.ndarray:
    """(4, 384, 384) reflectance, read as a 2.5 m truth."""
    return np.load(TEXTURE_384)["crops"].astype(np.float32) / 1e4


def psnr(img: np.ndarray, truth: np.ndarray, *, resolution_m: float = 2.5) -> float:
    """Mean over bands of 10 log10(range^2 / MSE), interior only."""
    b = int(round(BORDER_PX * 10.0 / resolution_m))
    img, truth = img[:, b:-b, b:-b], truth[:, b:-b, b:-b]
    out = []
    for x, t in zip(img, truth):
        mse = float(np.mean((x.astype(np.float64) - t) ** 2))
        out.append(10 * math.log10(float(t.max() - t.min()) ** 2 / mse))
    return float(np.mean(out))


def median_init(y: np.ndarray, valid: np.ndarray, grid: SplatGrid) -> np.ndarray:
    """(B, Ky, Kx) start: each splat takes the median composite at the pixel under its centre."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: 0
        comp = np.nan_to_num(np.nanmedian(np.where(valid, y, np.nan), axis=0))
    at = [np.clip((grid.centres_m(k).numpy() // grid.pixel_m).astype(int), 0, n - 1)
          for k, n in ((grid.ny, grid.height), (grid.nx, grid.width))]
    return comp[:, at[0][:, None], at[1][None, :]]


def smoothed_tv(w: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """Isotropic total variation of (B, Ky, Kx), smoothed by ``eps`` (noise units)."""
    dx, dy = torch.diff(w, dim=2)[:, :-1], torch.diff(w, dim=1)[:, :, :-1]
    return torch.sqrt(dx * dx + dy * dy + eps * eps).sum()


def dense_fit(data: np.ndarray, *, pixel_m: float, spacing_m: float = 3.0,
              splat_sigma_m: float = 3.0, psf_sigma_m: float = 4.0, adam_steps: int = 200,
              lbfgs_iters: int = 100, lr: float = 0.05, tv_weight: float = 0.05,
              seed: int = 0) -> tuple[np.ndarray, float, int]:
    """The plain baseline: returns (2.5 m image (B, H', W'), seconds, loss evaluations)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    T, B, H, W = data.shape
    valid = np.isfinite(data)
    mean = np.array([data[:, b][valid[:, b]].mean() for b in range(B)])
    scale = np.array([noise_sigma(data[:, b]) for b in range(B)])
    y_np = np.where(valid, (data - mean[None, :, None, None]) / scale[None, :, None, None], 0)
    y = torch.from_numpy(y_np.astype(np.float32))
    mask = torch.from_numpy(valid.astype(np.float32))
    n_valid = float(valid.sum())
    grid = SplatGrid.for_raster(height=H, width=W, pixel_m=pixel_m, spacing_m=spacing_m,
                                sigma_m=splat_sigma_m, psf_sigma_m=psf_sigma_m)
    w = torch.from_numpy(median_init(y_np, valid, grid)).float().requires_grad_(True)
    theta = torch.zeros(T, 2, requires_grad=True)
    evals = 0

    def loss_fn() -> torch.Tensor:
        nonlocal evals
        evals += 1
        pred = render_observations(w, theta - theta.mean(0), grid=grid,
                                   psf_sigma_m=psf_sigma_m, dense=True)
        r = (pred - y) * mask
        return (0.5 * (r * r).sum() + tv_weight * smoothed_tv(w)) / n_valid

    def backward(loss: torch.Tensor) -> None:
        loss.backward()
        w.grad = w.grad.contiguous()  # einsum's backward may leave it strided; L-BFGS views it

    opt = torch.optim.Adam([w, theta], lr=lr)
    for _ in range(adam_steps):
        opt.zero_grad(set_to_none=True)
        backward(loss_fn())
        opt.step()
    # L-BFGS as a plain user calls it: one call of ``lbfgs_iters`` iterations with torch's
    # default evaluation budget (1.25 per iteration); tolerances 0 so that it runs them all
    lbfgs = torch.optim.LBFGS([w, theta], lr=1.0, max_iter=lbfgs_iters, history_size=20,
                              tolerance_grad=0.0, tolerance_change=0.0,
                              line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        lbfgs.zero_grad(set_to_none=True)
        loss = loss_fn()
        backward(loss)
        return loss

    lbfgs.step(closure)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        img = render_latent(w.detach().double(), grid=grid, resolution_m=2.5).numpy()
    img = img * scale[:, None, None] + mean[:, None, None]
    return img.astype(np.float32), seconds, evals


def cli_fit(stack_dir: Path, out: Path, extra: list[str] | None = None) -> float:
    """Wall-clock seconds of the end-to-end CLI fit (``extra``: more CLI arguments)."""
    cmd = [sys.executable, "-m", "splatsr_cli.cli", "fit", str(stack_dir), "--out", str(out),
           "--psf-sigma", "4", "--resolution", "2.5", "--no-progress", *(extra or [])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--stack", type=Path, default=None,
                   help="keep the simulated stack here and reuse it on later runs "
                        "(simulating takes minutes on 2 cores)")
    p.add_argument("--cli-arg", action="append", default=[],
                   help="an extra argument of the CLI fit, e.g. --cli-arg=--no-band-offsets")
    args = p.parse_args()
    truth = make_truth()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stack_dir = args.stack or tmp / "stack"
        if (stack_dir / "stack.json").exists():
            stack = splatsr.read_stack(stack_dir)
        else:
            stack = splatsr.simulate_stack(stack_dir, truth, truth_pixel_m=2.5,
                                           bands=["g1", "g2", "g3", "g4"], n_obs=16, seed=0)
        data = stack.load()
        for rep in range(args.repeats):
            order = ["cli", "dense"] if rep % 2 == 0 else ["dense", "cli"]
            for which in order:
                if which == "cli":
                    t = cli_fit(stack_dir, tmp / "sr.tif", args.cli_arg)
                    with rasterio.open(tmp / "sr.tif") as src:
                        img = src.read()
                    rows.append(dict(run="cli", repeat=rep, seconds=t, psnr_db=psnr(img, truth)))
                else:
                    img, t, evals = dense_fit(data, pixel_m=stack.pixel_m)
                    rows.append(dict(run="dense", repeat=rep, seconds=t, evals=evals,
                                     psnr_db=psnr(img, truth)))
                print(json.dumps(rows[-1]), flush=True)
    t_cli = float(np.median([r["seconds"] for r in rows if r["run"] == "cli"]))
    t_dense = float(np.median([r["seconds"] for r in rows if r["run"] == "dense"]))
    p_cli = rows[[r["run"] for r in rows].index("cli")]["psnr_db"]
    p_dense = rows[[r["run"] for r in rows].index("dense")]["psnr_db"]
    summary = dict(machine(), t_cli_s=t_cli, t_dense_s=t_dense, ratio=t_cli / t_dense,
                   psnr_cli_db=p_cli, psnr_dense_db=p_dense,
                   passed=bool(t_cli <= 0.5 * t_dense and p_cli >= p_dense), runs=rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit_vs_dense.json").write_text(json.dumps(summary, indent=1))
    md = [f"# CLI fit vs a plain dense fit ({summary['date']})", "",
          f"machine: `{summary['uname']}`, {summary['nproc']} CPUs, torch {summary['torch']} "
          f"({summary['threads']} threads); commit `{summary['commit']}` (uncommitted changes: "
          f"{summary['dirty']})", "",
          "| fit | seconds (median) | PSNR vs truth (dB) |", "|---|---|---|",
          f"| `splatsr fit STACK --out sr.tif --psf-sigma 4 --resolution 2.5` (end to end) "
          f"| {t_cli:.1f} | {p_cli:.2f} |",
          f"| plain dense erf, 3 m splats, Adam 200 + L-BFGS 100 (fit only) "
          f"| {t_dense:.1f} | {p_dense:.2f} |", "",
          f"time ratio {t_cli / t_dense:.3f} (target <= 0.5); PSNR difference "
          f"{p_cli - p_dense:+.2f} dB (target >= 0): **{'PASS' if summary['passed'] else 'FAIL'}**"]
    (args.out / "fit_vs_dense.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
