"""Reproduce the source's evidence on stacks simulated from real Sentinel-2 texture.

One command (from the repository root)::

    python benchmarks/evidence.py --out benchmarks/results/evidence [--quick]

Truth: the three 256 x 256 crops of a real Sentinel-2A green band in
``tests/data/s2_green_crops.npy`` (Copernicus Sentinel data via GFZ/arosics test data,
Apache-2.0; see ``tests/data/README.md``), read as a 2.5 m scene and observed by a simulated
10 m sensor (64 x 64 px): Gaussian PSF sigma 4 m, planted shifts drawn with std 1.5 m (the
source's 1.4 / 1.8 m), noise 0.003 reflectance.

A. Shift agreement (GUIDE section 1: r 0.975 / 0.975, MAD 0.5 / 0.5 m): per crop, 32
   observations; the default fit starting from zero shifts (as the source did) against
   phase correlation (:func:`splatsr.evaluate.registration.phasecorr_shifts`) and both against the
   planted shifts.
B. PSF sweep (crop 0, 16 of the observations, one held out): fit PSF 0 ... 6 m against a
   true 4 m. Artifacts: PSNR / SSIM against the truth, the fine-scale error relative to
   the truth's fine detail (:func:`splatsr.evaluate.sweep.truth_scores`), the gradient RMS
   of the 5 m reconstruction relative to the truth's (> 1: detail that is not there), the
   held-out prediction error and the shifts' departure from the phase-correlation seed.
C. N sweep (crop 0, PSF 4 m): N = 2 ... 31 observations; PSNR / SSIM / sharpness against N,
   and bicubic of the median composite of the same N as a baseline.

Writes ``evidence.md`` (tables, machine, date, commit), ``shifts.csv``, ``shifts.png``,
``psf/`` and ``nobs/`` (each ``sweep.csv``, ``sweep.md`` and figures from
:func:`splatsr.evaluate.sweep.run_sweep`) and ``evidence.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS, TEXTURE_CROPS, machine

import splatsr
from splatsr.evaluate.registration import compare_shifts, phasecorr_shifts, shift_stats
from splatsr.evaluate.report import plot_shifts
from splatsr.evaluate.sweep import (
    COMPARE_M,
    bicubic_baseline,
    grad_rms,
    run_sweep,
    subset_indices,
    truth_at,
    truth_scores,
)

TEXTURE = TEXTURE_CROPS
PSF_TRUE_M, SHIFT_STD_M, NOISE = 4.0, 1.5, 0.003


def simulate_crop(root: Path, texture: np.ndarray, k: int, n_obs: int) -> splatsr.Stack:
    return splatsr.simulate_stack(root / f"crop{k}", texture[k], truth_pixel_m=2.5,
                                  bands=["B03"], n_obs=n_obs, shift_std_m=SHIFT_STD_M,
                                  psf_sigma_m=PSF_TRUE_M, noise_sigma=NOISE, seed=100 + k)


def part_a(stacks: list[splatsr.Stack], cfg: splatsr.FitConfig, out: Path) -> dict:
    rows, fits, pcs, planted_all = [], [], [], []
    for k, st in enumerate(stacks):
        data = st.load()
        planted = np.asarray(st.meta["simulation"]["shifts_m"])
        pc = phasecorr_shifts(data, pixel_m=st.pixel_m)
        t0 = time.perf_counter()
        res = splatsr.fit(st, config=cfg)
        secs = time.perf_counter() - t0
        for name, (a, b) in {"phasecorr_vs_planted": (pc, planted),
                             "fit_vs_phasecorr": (res.shifts_m, pc),
                             "fit_vs_planted": (res.shifts_m, planted)}.items():
            c = compare_shifts(a, b)
            rows.append(dict(crop=k, comparison=name, n=c["n"],
                             r_dx=c["pearson_r"]["dx"], r_dy=c["pearson_r"]["dy"],
                             mad_dx_m=c["mad_m"]["dx"], mad_dy_m=c["mad_m"]["dy"],
                             fit_seconds=secs))
        fits.append(res.shifts_m)
        pcs.append(pc)
        planted_all.append(planted)
        print(f"A crop {k}: fit {secs:.1f} s; " + "; ".join(
            f"{r['comparison']} r {r['r_dx']:.3f}/{r['r_dy']:.3f} MAD "
            f"{r['mad_dx_m']:.2f}/{r['mad_dy_m']:.2f}" for r in rows[-3:]), flush=True)
    with open(out / "shifts.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    # pooled over crops, each crop's shifts mean-zero (they are): the source-style table
    fit_p, pc_p, pl_p = (np.concatenate(x) for x in (fits, pcs, planted_all))
    plot_shifts(fit_p, pc_p, out / "shifts.png", planted_m=pl_p)
    return dict(rows=rows, pooled=dict(
        stats={"planted": shift_stats(pl_p), "phasecorr": shift_stats(pc_p),
               "fit": shift_stats(fit_p)},
        phasecorr_vs_planted=compare_shifts(pc_p, pl_p),
        fit_vs_phasecorr=compare_shifts(fit_p, pc_p),
        fit_vs_planted=compare_shifts(fit_p, pl_p)))


def part_b(stack: splatsr.Stack, cfg: splatsr.FitConfig, out: Path, psfs: list[float],
           n: int) -> list[dict]:
    rows = run_sweep(stack, psf_sigmas=psfs, n_obs=[n], out_dir=out / "psf", config=cfg)
    g_truth = grad_rms(truth_at(stack, None), COMPARE_M)
    for r in rows:
        r["grad_ratio"] = r["grad_rms"] / g_truth
        print(f"B psf {r['psf_sigma_m']:g}: PSNR {r['psnr_db']:.2f} SSIM {r['ssim']:.3f} "
              f"fine error {r['fine_error']:.3f} grad ratio {r['grad_ratio']:.2f} "
              f"held-out {r['heldout_error']:.5f} "
              f"shift from seed {r['shift_from_seed_m']:.2f} m", flush=True)
    return rows


def part_c(stack: splatsr.Stack, cfg: splatsr.FitConfig, out: Path, ns: list[int]
           ) -> list[dict]:
    rows = run_sweep(stack, psf_sigmas=[PSF_TRUE_M], n_obs=ns, out_dir=out / "nobs",
                     config=cfg)
    data, truth = stack.load(), truth_at(stack, None)
    held = len(stack.observations) // 2
    pool = np.array([t for t in range(len(stack.observations)) if t != held])
    for r in rows:
        idx = pool[subset_indices(len(pool), r["n_obs"])]
        bic = truth_scores(bicubic_baseline(data, idx, stack.pixel_m), truth)
        r.update({f"bicubic_{k}": v for k, v in bic.items()})
        print(f"C N {r['n_obs']}: PSNR {r['psnr_db']:.2f} (bicubic {r['bicubic_psnr_db']:.2f}) "
              f"SSIM {r['ssim']:.3f} fine error {r['fine_error']:.3f} "
              f"(bicubic {r['bicubic_fine_error']:.3f}) grad {r['grad_rms']:.2e}", flush=True)
    return rows


def _f(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def write_md(out: Path, info: dict, a: dict, b: list[dict], c: list[dict], args) -> None:
    p = a["pooled"]
    L = ["# splatsr evidence: the source's claims on simulated stacks from real S2 texture", "",
         f"- date {info['date']}, commit `{info['commit']}` (uncommitted changes: "
         f"{info['dirty']}), torch {info['torch']}, {info['threads']} torch thread(s)",
         f"- machine: `{info['uname']}`, {info['nproc']} CPUs (shared with other jobs: "
         "timings are indicative only)",
         f"- command: `python benchmarks/evidence.py {' '.join(sys.argv[1:])}`",
         f"- truth: 3 crops of a real S2 green band read at 2.5 m; observations 64 x 64 px at "
         f"10 m, PSF {PSF_TRUE_M:g} m, planted shift std {SHIFT_STD_M:g} m, noise {NOISE}; "
         f"fits: {args.fit_desc}", "",
         "## A. Shifts: phase correlation, the fit and the planted truth", "",
         f"Pooled over {p['fit_vs_planted']['n']} observations of 3 stacks (source: 32 real "
         "scenes, fit vs phase correlation).", "",
         "| | dx | dy | source dx | source dy |", "|---|---|---|---|---|"]
    src = {"std": ("1.4", "1.8"), "max": ("6.6", "7.0"), "r": ("0.975", "0.975"),
           "mad": ("0.5", "0.5")}
    for label, d, key in (("shift std, planted (m)", p["stats"]["planted"]["std_m"], None),
                          ("shift std, fit (m)", p["stats"]["fit"]["std_m"], "std"),
                          ("max abs shift, fit (m)", p["stats"]["fit"]["max_abs_m"], "max"),
                          ("Pearson r, phase corr. vs planted",
                           p["phasecorr_vs_planted"]["pearson_r"], None),
                          ("Pearson r, fit vs phase corr.", p["fit_vs_phasecorr"]["pearson_r"],
                           "r"),
                          ("Pearson r, fit vs planted", p["fit_vs_planted"]["pearson_r"], None),
                          ("MAD phase corr. vs planted (m)", p["phasecorr_vs_planted"]["mad_m"],
                           None),
                          ("MAD fit vs phase corr. (m)", p["fit_vs_phasecorr"]["mad_m"], "mad"),
                          ("MAD fit vs planted (m)", p["fit_vs_planted"]["mad_m"], None)):
        s = src.get(key, ("", ""))
        L.append(f"| {label} | {_f(d['dx'])} | {_f(d['dy'])} | {s[0]} | {s[1]} |")
    L += ["", "Per crop:", "", "| crop | comparison | r dx | r dy | MAD dx (m) | MAD dy (m) | "
          "fit time (s) |", "|---|---|---|---|---|---|---|"]
    for r in a["rows"]:
        L.append(f"| {r['crop']} | {r['comparison']} | {_f(r['r_dx'])} | {_f(r['r_dy'])} | "
                 f"{_f(r['mad_dx_m'], 2)} | {_f(r['mad_dy_m'], 2)} | {r['fit_seconds']:.1f} |")
    L += ["", "![shifts](shifts.png)", "",
          f"## B. PSF sweep (true PSF {PSF_TRUE_M:g} m, crop 0, N = {args.psf_n})", "",
          "| fit PSF σ (m) | σ_eff (m) | PSNR (dB) | SSIM | fine error | grad RMS / truth's "
          "| held-out error | shift from seed (m) | time (s) |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in b:
        s_eff = float(np.hypot(0.8 * r["splat_spacing_m"], r["psf_sigma_m"]))
        L.append(f"| {r['psf_sigma_m']:g} | {s_eff:.1f} | {_f(r['psnr_db'], 2)} | "
                 f"{_f(r['ssim'])} | {_f(r['fine_error'])} | {_f(r['grad_ratio'], 2)} | "
                 f"{r['heldout_error']:.5f} | "
                 f"{_f(r['shift_from_seed_m'], 2)} | {r['seconds']:.1f} |")
    L += ["", "![psf reconstructions](psf/sweep_recon.png)", "",
          "![psf metrics](psf/sweep_psf_sigma_m.png)", "",
          f"## C. Number of observations (PSF {PSF_TRUE_M:g} m, crop 0)", "",
          "| N | PSNR (dB) | SSIM | fine error | bicubic PSNR (dB) | bicubic SSIM | "
          "bicubic fine error | grad RMS (1/m) | held-out error | time (s) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in c:
        L.append(f"| {r['n_obs']} | {_f(r['psnr_db'], 2)} | {_f(r['ssim'])} | "
                 f"{_f(r['fine_error'])} | {_f(r['bicubic_psnr_db'], 2)} | "
                 f"{_f(r['bicubic_ssim'])} | {_f(r['bicubic_fine_error'])} | "
                 f"{r['grad_rms']:.2e} | {r['heldout_error']:.5f} | {r['seconds']:.1f} |")
    L += ["", "![N metrics](nobs/sweep_n_obs.png)", "",
          "PSNR/SSIM at 5 m against the block-averaged truth, after registering the "
          "reconstruction to it by phase correlation (a subset's shifts are mean-zero over "
          "that subset, which moves the frame); 20 m border left out. Fine error: RMS of the "
          "error's fine-scale part (the image minus a 10 m Gaussian low-pass) over that of "
          "the truth: 1 for an image with no fine detail, lower is better; a rise means wrong "
          "fine-scale content (artifacts).", ""]
    (out / "evidence.md").write_text("\n".join(L) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(RESULTS / "evidence"))
    ap.add_argument("--quick", action="store_true",
                    help="16 observations and short fits (a smoke run, minutes less)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texture = np.load(TEXTURE).astype(np.float32) / 10000.0
    if args.quick:
        cfg = splatsr.FitConfig(adam_steps=60, lbfgs_iters=40, coarse_levels=0)
        n_total, psfs, ns, args.psf_n = 16, [1.0, 2.0, 4.0, 6.0], [2, 4, 8, 15], 8
        args.fit_desc = "quick (Adam 60, L-BFGS 40, no coarse level)"
    else:
        cfg = splatsr.FitConfig()
        n_total, psfs, args.psf_n = 32, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 16
        ns = [2, 4, 8, 16, 31]
        args.fit_desc = "library defaults (FitConfig())"
    info = machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stacks = [simulate_crop(Path(tmp), texture, k, n_total) for k in range(3)]
        a = part_a(stacks, cfg, out)
        b = part_b(stacks[0], cfg, out, psfs, args.psf_n)
        c = part_c(stacks[0], cfg, out, ns)
    info["total_seconds"] = f"{time.perf_counter() - t0:.0f}"
    write_md(out, info, a, b, c, args)
    (out / "evidence.json").write_text(json.dumps(
        dict(machine=info, shifts=a, psf=b, nobs=c), indent=2, default=float) + "\n")
    print(f"wrote {out / 'evidence.md'} in {info['total_seconds']} s")


if __name__ == "__main__":
    main()
