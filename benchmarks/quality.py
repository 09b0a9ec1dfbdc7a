"""Quality benchmark: default ``splatsr`` fit against classical multi-frame baselines.

One command (from the repository root)::

    python benchmarks/quality.py --out benchmarks/results/quality [--quick]

Writes ``quality.csv`` (one row per case x method), ``quality.md`` (tables, machine, date,
commit), ``psf_curve.csv`` and ``quality.png`` (PSNR gain over the best baseline per case).

Cases
-----
Semi-synthetic (known truth): the AROSICS Sentinel-2 green band (real 10 m texture; copied
from ``../shared/data``, Copernicus Sentinel data, Apache-2.0 test data of GFZ/arosics) read
as a 2.5 m truth and observed by a simulated 10 m sensor with the S2 geometry ratios (PSF
sigma 4 m, shift jitter 1.5 m) -- N = 4, 8, 16, two noise levels; and "dirty" variants with
planted haze frames, per-date gain/offset drift and partial (unmasked) clouds and shadows.

Real stacks without truth: the eo-learn test patch (3 clear dates, B02 B03 B04 B08) and its
NDVI series (8 dates with < 1 % cloud, the cloud mask as NaN), scored by leave-one-date-out
prediction (the held-out date predicted through the forward model, its shift searched and a
per-band gain/offset fitted; robust RMSE = 1.4826 x median absolute error) and by consistency
(the fit's own re-degradation against its inputs). And a stand-in for the must-show
(``real_proxy.py``): real dates of those stacks, clouds unmasked, observed by a simulated
sensor, scored by cPSNR against a *held-out* real date at the output resolution.

Metrics: PSNR and SSIM at 5 m (2x) and 2.5 m (4x) against the truth after a per-band
least-squares gain/offset (the PROBA-V / must-show protocol), 20 m border cropped; shift MAE
where known; hallucination: the 5 m output's spatial standard deviation on a flat and on a
pure-noise stack, relative to that of bicubic-of-mean. With ``--opensr`` (needs
``pip install -e ".[eval]"``), every semi-synthetic output also gets opensr-test's metrics
(``field_metrics.py``) at 2.5 m against the truth, the first date as its low-resolution input
and a 20 m border: consistency, synthesis, improvement / omission / hallucination.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_proxy  # noqa: E402
from _common import AROSICS, EOLEARN, RESULTS, machine  # noqa: E402
from baselines import BASELINES, block_mean, phasecorr  # noqa: E402

import splatsr  # noqa: E402
from splatsr.core.psf import heldout_error, select_psf_sigma  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402

FACTOR = 4  # 10 m -> 2.5 m
CROP_M = 20.0  # border left out of the scores
# the solver before the robust defaults: least squares, no radiometry, hand-set TV
PLAIN = dict(loss="l2", radiometry=False, reweight=False, noise_from_residuals=False,
             tv_weight=0.05)


def load_texture(size: int, where: tuple[int, int]) -> np.ndarray:
    """(1, size, size) reflectance crop of the AROSICS green band (DN / 10000)."""
    import rasterio

    with rasterio.open(AROSICS) as src:
        r, c = where
        g = src.read(1, window=((r, r + size), (c, c + size))).astype(np.float32)
    if (g == 0).any():
        raise SystemExit(f"crop {where} of {AROSICS.name} has no-data pixels")
    return g[None] / 10000.0


def _blob(rng: np.random.Generator, H: int, W: int, frac: float, soft_px: float
          ) -> np.ndarray:
    """A smooth random blob mask in [0, 1] covering about ``frac`` of the image."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=(H, W)), H / 6, mode="wrap")
    thr = np.quantile(f, 1 - frac)
    return 1 / (1 + np.exp(-(f - thr) / (soft_px * f.std() / (H / 6))))


def corrupt(data: np.ndarray, *, seed: int, n_haze: int, n_cloud: int,
            drift: bool) -> tuple[np.ndarray, list[str]]:
    """Plant haze frames, partial clouds / shadows and per-date gain/offset drift.

    Haze: ``y (1 - a) + a * 0.15`` with a smooth ``a`` of 0.3-0.6 over the frame. Cloud: a
    soft blob over ~20 % of the frame brightened towards 0.4 (thick) and one darkened to 40 %
    (its shadow). Drift: gain N(1, 0.06) and offset N(0, 0.01) per date and band. Nothing is
    masked: the solver is told nothing.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = data.astype(np.float64).copy()
    T, B, H, W = out.shape
    notes = ["clean"] * T
    order = rng.permutation(np.arange(1, T))  # date 0 stays clear (bicubic_one's date)
    for t in order[:n_haze]:
        a = 0.3 + 0.3 * (gaussian_filter(rng.random((H, W)), H / 4, mode="wrap") - 0.5) * 4
        a = np.clip(a, 0.2, 0.7)
        out[t] = out[t] * (1 - a) + a * 0.15
        notes[t] = "haze"
    for t in order[n_haze:n_haze + n_cloud]:
        cloud = _blob(rng, H, W, 0.2, 1.0)
        shadow = np.roll(_blob(rng, H, W, 0.12, 1.0), (H // 5, W // 5), (0, 1))
        out[t] = out[t] * (1 - 0.6 * shadow) * (1 - cloud) + 0.4 * cloud
        notes[t] = "cloud+shadow"
    if drift:
        g = rng.normal(1, 0.06, (T, B))
        o = rng.normal(0, 0.01, (T, B))
        out = out * g[:, :, None, None] + o[:, :, None, None]
    return out.astype(np.float32), notes


def scores(img: np.ndarray, truth: np.ndarray, res_m: float) -> tuple[float, float]:
    """(PSNR dB, SSIM) of ``img`` against ``truth`` after a per-band gain/offset fit."""
    from skimage.metrics import structural_similarity

    c = int(round(CROP_M / res_m))
    a, b = img[:, c:-c, c:-c].astype(np.float64), truth[:, c:-c, c:-c].astype(np.float64)
    psnr, ssim = [], []
    for ab, bb in zip(a, b):
        A = np.stack([ab.ravel(), np.ones(ab.size)], 1)
        coef, *_ = np.linalg.lstsq(A, bb.ravel(), rcond=None)
        fit = (A @ coef).reshape(ab.shape)
        rng = float(np.ptp(bb))
        psnr.append(10 * np.log10(rng ** 2 / np.mean((fit - bb) ** 2)))
        ssim.append(structural_similarity(fit, bb, data_range=rng))
    return float(np.mean(psnr)), float(np.mean(ssim))


def run_methods(data: np.ndarray, *, pixel_m: float = 10.0, true_shifts: np.ndarray | None,
                config: FitConfig | None = None, plain: bool = True) -> dict[str, dict]:
    """Every baseline and the default splatsr fit on one stack: outputs at 2.5 m and extras."""
    out: dict[str, dict] = {}
    t0 = time.perf_counter()
    pc = phasecorr(data, pixel_m=pixel_m)
    pc_s = time.perf_counter() - t0
    for name, fn in BASELINES.items():
        t = time.perf_counter()
        img = fn(data, factor=FACTOR, pixel_m=pixel_m, shifts_m=pc)
        extra = pc_s if name in ("shift_and_add", "ibp", "map_tv") else 0.0
        out[name] = dict(img=img, seconds=time.perf_counter() - t + extra,
                         shift_mae_m=_mae(pc, true_shifts)
                         if name in ("shift_and_add", "ibp", "map_tv") else np.nan)
    t = time.perf_counter()
    res = fit_arrays(data, pixel_m=pixel_m, config=config or FitConfig())
    out["splatsr"] = dict(img=res.render(pixel_m / FACTOR), seconds=time.perf_counter() - t,
                          shift_mae_m=_mae(res.shifts_m, true_shifts), result=res)
    if plain:  # the pre-robust solver (least squares, no radiometry), for reference
        t = time.perf_counter()
        res = fit_arrays(data, pixel_m=pixel_m, config=FitConfig(**PLAIN))
        out["splatsr_plain"] = dict(img=res.render(pixel_m / FACTOR),
                                    seconds=time.perf_counter() - t,
                                    shift_mae_m=_mae(res.shifts_m, true_shifts))
    return out


def _mae(est: np.ndarray, true: np.ndarray | None) -> float:
    if true is None:
        return float("nan")
    return float(np.abs((est - est.mean(0)) - (true - true.mean(0))).mean())


def semi_synthetic_cases(quick: bool) -> list[dict]:
    """The case list: (name, crop, N, noise, corruption)."""
    crops = [(1200, 800), (2800, 400)] if not quick else [(1200, 800)]
    cases = []
    for k, crop in enumerate(crops):
        full = not quick and k == 0  # the second crop: N = 8 and the dirty cases only
        for n in ((4, 8, 16) if full else (8,)):
            cases.append(dict(name=f"clean_c{k}_N{n}", crop=crop, n=n, noise=0.002,
                              dirty=None, seed=10 * k + n))
        if full:
            cases.append(dict(name=f"clean_c{k}_N8_noise5", crop=crop, n=8, noise=0.005,
                              dirty=None, seed=10 * k + 3))
        for n, nh, nc in (((8, 1, 2), (16, 2, 3), (5, 1, 1)) if not quick else ((8, 1, 2),)):
            cases.append(dict(name=f"dirty_c{k}_N{n}_haze{nh}_cloud{nc}", crop=crop, n=n,
                              noise=0.002, dirty=(nh, nc), seed=10 * k + n + 1))
    return cases


def opensr_scores(img: np.ndarray, lr: np.ndarray, truth: np.ndarray) -> dict:
    """opensr-test's metrics of a 2.5 m output (first date as input, 20 m border)."""
    import field_metrics

    return field_metrics.opensr_metrics(lr, img, truth, scale=FACTOR,
                                        border_px=int(CROP_M / 2.5))


def run_semi_synthetic(case: dict, size: int, *, opensr: bool = False) -> list[dict]:
    truth = load_texture(size, case["crop"])
    data, shifts = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=case["n"],
                                    noise_sigma=case["noise"], seed=case["seed"])
    notes = ["clean"] * case["n"]
    if case["dirty"]:
        data, notes = corrupt(data, seed=case["seed"], n_haze=case["dirty"][0],
                              n_cloud=case["dirty"][1], drift=True)
    outs = run_methods(data, true_shifts=shifts)
    rows = []
    for name, o in outs.items():
        p4, s4 = scores(o["img"], truth, 2.5)
        p2, s2 = scores(block_mean(o["img"], 2), block_mean(truth, 2), 5.0)
        row = dict(case=case["name"], kind="semi-synthetic", method=name, n_obs=case["n"],
                   noise=case["noise"], psnr_5m=p2, ssim_5m=s2, psnr_2p5m=p4, ssim_2p5m=s4,
                   shift_mae_m=o["shift_mae_m"], seconds=o["seconds"])
        if opensr:
            row.update(opensr_scores(o["img"], data[0], truth))
        if name == "splatsr":
            r = o["result"]
            bad = [t for t, s in enumerate(notes) if s != "clean"]
            row["weights_of_corrupted"] = ";".join(f"{r.obs_weights[t]:.2f}" for t in bad)
        rows.append(row)
    return rows


def hallucination(size: int) -> list[dict]:
    """Flat and pure-noise stacks: the output's 5 m std relative to bicubic-of-mean's."""
    rows = []
    rng = np.random.default_rng(7)
    T, H = 8, size // FACTOR
    for name, data in (("flat+noise", 0.1 + rng.normal(0, 0.002, (T, 1, H, H))),
                       ("pure noise", 0.1 + rng.normal(0, 0.02, (T, 1, H, H)))):
        data = data.astype(np.float32)
        base = block_mean(BASELINES["bicubic_mean"](data, factor=FACTOR), 2)
        res = fit_arrays(data, pixel_m=10.0)
        img = block_mean(res.render(2.5), 2)
        c = int(CROP_M / 5)
        ratio = float(img[:, c:-c, c:-c].std() / base[:, c:-c, c:-c].std())
        rows.append(dict(case=name, kind="hallucination", method="splatsr",
                         n_obs=T, std_ratio_vs_bicubic_mean=ratio, seconds=res.seconds))
    return rows


def _loo(data: np.ndarray, case: str, bands: int) -> list[dict]:
    """Leave-one-date-out prediction on a real stack: splatsr vs bicubic-of-median."""
    from splatsr.core.model import SplatGrid

    T = data.shape[0]
    rows = []
    for t in range(T):
        keep = [k for k in range(T) if k != t]
        sub = data[keep]
        res = fit_arrays(sub, pixel_m=10.0)
        e_sr, _ = heldout_error(res, data[t])
        # bicubic-of-median as a scene: its 2.5 m image read as a fine pixel grid, predicted
        # without any PSF (the median of 10 m dates already carries the sensor's blur)
        med = np.nanmedian(sub, axis=0)
        med = np.where(np.isfinite(med), med, np.nanmedian(med))
        grid = SplatGrid.for_raster(height=data.shape[2], width=data.shape[3], pixel_m=10.0,
                                    spacing_m=2.5)
        fake = _scene_as_result(BASELINES["bicubic_median"](med[None], factor=FACTOR), grid,
                                res)
        e_bm, _ = heldout_error(fake, data[t])
        cons = float(np.sqrt(np.nanmean((res.predict() - sub) ** 2)))
        rows += [dict(case=case, kind="real", method="splatsr", n_obs=T - 1, heldout_date=t,
                      heldout_rmse=e_sr, consistency_rmse=cons, seconds=res.seconds),
                 dict(case=case, kind="real", method="bicubic_median", n_obs=T - 1,
                      heldout_date=t, heldout_rmse=e_bm)]
    return rows


def _scene_as_result(img: np.ndarray, grid, like) -> "splatsr.FitResult":
    """Wrap a 2.5 m image as a splat scene (nearly box splats, no PSF) to predict with it."""
    from dataclasses import replace as _r

    B = img.shape[0]
    pad = grid.pad
    w = np.pad(img, ((0, 0), (pad, grid.ny - img.shape[1] - pad),
                     (pad, grid.nx - img.shape[2] - pad)), mode="edge")
    return splatsr.FitResult(weights=w.astype(np.float32), shifts_m=np.zeros((1, 2)),
                             grid=grid, config=_r(like.config, psf_sigma_m=0.0),
                             band_names=tuple(f"b{i}" for i in range(B)),
                             residual_rms=np.zeros(1))


def real_cases(quick: bool) -> list[dict]:
    ref = np.load(EOLEARN / "REFERENCE_SCENES.npy")  # (5, 101, 100, 13)
    clear = np.moveaxis(ref[[2, 3, 4]][..., [1, 2, 3, 7]], -1, 1)[:, :, :100, :100]
    rows = _loo(clear.astype(np.float32), "eolearn_clear3_B02-B08", 4)
    if not quick:
        ndvi = np.load(EOLEARN / "TestEOPatch" / "data" / "NDVI.npy")[..., 0][:, :100, :100]
        clm = np.load(EOLEARN / "TestEOPatch" / "mask" / "CLM.npy")[..., 0][:, :100, :100]
        frac = clm.reshape(len(clm), -1).mean(1)
        idx = np.flatnonzero(frac < 0.01)[:8]
        stack = np.where(clm[idx] > 0, np.nan, ndvi[idx])[:, None].astype(np.float32)
        rows += _loo(stack, "eolearn_ndvi8_clm", 1)
    return rows


def psf_curve(size: int) -> list[dict]:
    """``--psf-sigma auto`` on a simulated stack whose true PSF sigma is 4 m."""
    truth = load_texture(size, (2800, 400))
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=8, noise_sigma=0.002, seed=5)
    sel = select_psf_sigma(data, pixel_m=10.0, candidates_m=(2, 3, 4, 5, 6))
    return [dict(r, true_psf_sigma_m=4.0, chosen=sel.psf_sigma_m) for r in sel.curve]


def write_outputs(rows: list[dict], psf: list[dict], out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("case", "method"), k))
    with open(out / "quality.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(out / "psf_curve.csv", "w", newline="") as f:
        if psf:
            w = csv.DictWriter(f, fieldnames=list(psf[0]))
            w.writeheader()
            w.writerows(psf)
    md = ["# splatsr quality benchmark\n", "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in info.items()]
    semi = [r for r in rows if r["kind"] == "semi-synthetic"]
    cases = list(dict.fromkeys(r["case"] for r in semi))
    methods = list(dict.fromkeys(r["method"] for r in semi))
    md += ["", "## Semi-synthetic: PSNR at 5 m (2x) [dB], after per-band gain/offset", "",
           "| case | " + " | ".join(methods) + " | splatsr - best baseline |",
           "|---" * (len(methods) + 2) + "|"]
    gains = []
    for c in cases:
        by = {r["method"]: r for r in semi if r["case"] == c}
        best = max(v["psnr_5m"] for k, v in by.items() if not k.startswith("splatsr"))
        gains.append((c, by["splatsr"]["psnr_5m"] - best))
        md.append(f"| {c} | " + " | ".join(f"{by[m]['psnr_5m']:.2f}" for m in methods) +
                  f" | {gains[-1][1]:+.2f} |")
    md += ["", "## Semi-synthetic: SSIM at 5 m, PSNR/SSIM at 2.5 m, shift MAE, time", "",
           "| case | method | SSIM 5 m | PSNR 2.5 m | SSIM 2.5 m | shift MAE m | s |",
           "|---|---|---|---|---|---|---|"]
    for r in semi:
        md.append(f"| {r['case']} | {r['method']} | {r['ssim_5m']:.3f} | {r['psnr_2p5m']:.2f}"
                  f" | {r['ssim_2p5m']:.3f} | {r['shift_mae_m']:.3f} | {r['seconds']:.1f} |")
    real = [r for r in rows if r["kind"] == "real"]
    if real:
        md += ["", "## Real stacks: leave-one-date-out prediction (robust RMSE, reflectance)",
               "", "| case | held-out date | splatsr | bicubic-of-median | consistency RMSE |",
               "|---|---|---|---|---|"]
        for c in dict.fromkeys(r["case"] for r in real):
            for t in sorted({r["heldout_date"] for r in real if r["case"] == c}):
                by = {r["method"]: r for r in real if r["case"] == c and r["heldout_date"] == t}
                md.append(f"| {c} | {t} | {by['splatsr']['heldout_rmse']:.5f} | "
                          f"{by['bicubic_median']['heldout_rmse']:.5f} | "
                          f"{by['splatsr']['consistency_rmse']:.5f} |")
    md += opensr_markdown(semi)
    md += real_proxy.markdown(rows)
    hall = [r for r in rows if r["kind"] == "hallucination"]
    if hall:
        md += ["", "## Hallucination: 5 m output std / bicubic-of-mean std", "",
               "| input | ratio |", "|---|---|"]
        md += [f"| {r['case']} | {r['std_ratio_vs_bicubic_mean']:.3f} |" for r in hall]
    if psf:
        md += ["", f"## PSF selection (true sigma 4 m): chose {psf[0]['chosen']} m", "",
               "| psf sigma m | held-out robust RMSE |", "|---|---|"]
        md += [f"| {r['psf_sigma_m']} | {r['heldout_rmse']:.6f} |" for r in psf]
    (out / "quality.md").write_text("\n".join(md) + "\n")
    _figure(gains, psf, out / "quality.png")


def opensr_markdown(semi: list[dict]) -> list[str]:
    """The opensr-test table of the semi-synthetic rows (none without ``--opensr``)."""
    rows = [r for r in semi if "improvement" in r]
    if not rows:
        return []
    cols = ["improvement", "omission", "hallucination", "synthesis",
            "consistency_reflectance", "consistency_spectral", "consistency_spatial"]
    md = ["", "## Semi-synthetic: opensr-test at 2.5 m (first date as input, 20 m border)", "",
          "| case | method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    md += [f"| {r['case']} | {r['method']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |"
           for r in rows]
    return md


def _figure(gains: list[tuple[str, float]], psf: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw=dict(width_ratios=[2, 1]))
    names = [g[0] for g in gains]
    vals = [g[1] for g in gains]
    axs[0].barh(names, vals, color=["tab:green" if v >= 1 else "tab:orange" if v > 0
                                    else "tab:red" for v in vals])
    axs[0].axvline(1.0, ls="--", c="k", lw=0.8)
    axs[0].set_xlabel("splatsr PSNR at 5 m minus best baseline [dB] (target >= 1)")
    axs[0].invert_yaxis()
    if psf:
        axs[1].plot([r["psf_sigma_m"] for r in psf], [r["heldout_rmse"] for r in psf], "o-")
        axs[1].axvline(4.0, ls="--", c="k", lw=0.8)
        axs[1].set_xlabel("PSF sigma [m] (true: 4)")
        axs[1].set_ylabel("held-out robust RMSE")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _opensr_figure(rows: list[dict], path: Path) -> None:
    """improvement / omission / hallucination of every method, one panel per case."""
    import field_metrics

    semi = [r for r in rows if r["kind"] == "semi-synthetic" and "improvement" in r]
    groups = {c: [r for r in semi if r["case"] == c] for c in dict.fromkeys(r["case"]
                                                                            for r in semi)}
    field_metrics.bar_figure(groups, str(path), note="2.5 m, semi-synthetic")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(RESULTS / "quality"))
    ap.add_argument("--quick", action="store_true", help="one crop, N=8 only (minutes)")
    ap.add_argument("--size", type=int, default=256, help="truth side in 2.5 m pixels")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma list of: semi,real,proxy,hall,psf")
    ap.add_argument("--opensr", action="store_true", help="also opensr-test's metrics of the "
                    "semi-synthetic outputs (needs: pip install -e \".[eval]\")")
    a = ap.parse_args(argv)
    if a.opensr:
        import field_metrics

        try:
            field_metrics.load_opensr_test()
        except ImportError as err:
            raise SystemExit(f"Error: {err}") from None
    torch.set_num_threads(a.threads)
    skip = set(filter(None, a.skip.split(",")))
    rows: list[dict] = []
    if "semi" not in skip:
        for case in semi_synthetic_cases(a.quick):
            rows += run_semi_synthetic(case, a.size, opensr=a.opensr)
            print(f"{case['name']}: " + ", ".join(
                f"{r['method']} {r['psnr_5m']:.2f}" for r in rows if r["case"] == case["name"]),
                flush=True)
    if "hall" not in skip:
        rows += hallucination(a.size)
    if "real" not in skip:
        rows += real_cases(a.quick)
    if "proxy" not in skip:
        rows += real_proxy.run(EOLEARN)
    psf = psf_curve(a.size) if "psf" not in skip else []
    info = machine()
    write_outputs(rows, psf, Path(a.out), info)
    if a.opensr and "semi" not in skip:
        _opensr_figure(rows, Path(a.out) / "opensr.png")
    print(f"wrote {a.out}/quality.md, quality.csv, psf_curve.csv, quality.png", flush=True)


if __name__ == "__main__":
    main()
