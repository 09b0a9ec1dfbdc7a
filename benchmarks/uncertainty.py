"""Uncertainty (trust map) benchmark: is ``OUT.sigma.tif`` a 1-sigma, on data it was not tuned on?

One command (from the repository root)::

    python benchmarks/uncertainty.py [--only cases|crops|real] [--out DIR]

* ``cases``: real 10 m Sentinel-2 green-band texture (``tests/data/s2_green_crops.npy``,
  crops 0 and 1) read as a 2.5 m truth, observed by the simulated sensor (PSF 4 m, shifts
  N(0, 1.5 m), noise 0.003), 16 clean dates or 10 dates of which 7 are clouded over 60 % of
  the scene, each fitted with ``splatsr fit STACK --out sr.tif --resolution 2.5
  --uncertainty``; coverage (share of pixels with |error| <= sigma), Spearman of block sigma
  with block RMS error over 8 x 8 px blocks, the fast mode, monotonicity (fewer dates, more
  noise), cost, and real held-out dates (:func:`heldout_real`).
* ``crops``: the same two cases in process on the AROSICS crops :data:`CROPS` (``tune``: the
  choices of :mod:`splatsr.core.products.error_spectrum` were made on them; ``report``: run
  after, with two corners of the test crops), each also sharpened; shares within 0.5, 1, 2
  sigma (:func:`crop_rows`).
* ``real``: the observed-date product on the real-series windows of ``date_products.py``,
  against the real date (:func:`real_rows`).

``crops`` and ``real`` also draw the reliability figure ``docs/uncertainty_reliability.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from _common import AROSICS, ROOT, SHARED, TEXTURE_CROPS, machine
from affine import Affine
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

from splatsr.core.products.uncertainty import coefficients, fit_uncertainty, sigma_map
from splatsr.core.solver import FitConfig, fit_arrays
from splatsr.evaluate.simulate import simulate
from splatsr.io.export import sigma_path
from splatsr.io.stack import write_stack

TRUTH_M, PIXEL_M, BORDER_PX, BLOCK_PX = 2.5, 10.0, 8, 8
# 128 px crops (row, col) of the AROSICS reference image with no no-data pixels: the choices of
# splatsr.core.products.error_spectrum were made on "tune", "report" was looked at after
CROPS = {"tune": [(800, 1850), (1850, 800), (450, 1150), (2200, 450)],
         "report": [(2900, 450), (1500, 1500)]}
FIGURE = ROOT / "docs" / "uncertainty_reliability.png"
CASES = {"clean16": dict(n_obs=16, n_cloudy=0), "cloudy10": dict(n_obs=10, n_cloudy=7)}


def cloud_masks(shape: tuple[int, int], *, n_obs: int, n_cloudy: int, cover: float = 0.6,
                seed: int = 0) -> np.ndarray:
    """(T, H, W) bool: True under cloud; the last ``n_cloudy`` dates ``cover`` clouded."""
    rng = np.random.default_rng(seed + 1000)
    masks = np.zeros((n_obs, *shape), bool)
    for t in range(n_obs - n_cloudy, n_obs):
        field = gaussian_filter(rng.normal(size=shape), max(shape) / 6, mode="wrap")
        masks[t] = field < np.quantile(field, cover)
    return masks


def case_data(truth: np.ndarray, *, n_obs: int, n_cloudy: int, noise: float = 0.003,
              seed: int = 0) -> np.ndarray:
    """(T, 1, H, W) simulated observations, NaN under the clouds."""
    data, _ = simulate(truth, truth_pixel_m=TRUTH_M, pixel_m=PIXEL_M, n_obs=n_obs,
                       noise_sigma=noise, seed=seed)
    clouds = cloud_masks(data.shape[2:], n_obs=n_obs, n_cloudy=n_cloudy, seed=seed)
    data[np.broadcast_to(clouds[:, None], data.shape)] = np.nan
    return data


def scores(sr: np.ndarray, sigma: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Coverage, block Spearman and sizes of one band, the border left out."""
    b = BORDER_PX
    err = np.abs(sr - truth)[b:-b, b:-b]
    sig = sigma[b:-b, b:-b]
    h, w = (s // BLOCK_PX * BLOCK_PX for s in err.shape)

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].reshape(h // BLOCK_PX, BLOCK_PX, w // BLOCK_PX, BLOCK_PX)

    block_rmse = np.sqrt((blocks(err) ** 2).mean((1, 3))).ravel()
    block_sigma = np.sqrt((blocks(sig) ** 2).mean((1, 3))).ravel()
    return dict(coverage=float((err <= sig).mean()),
                spearman=float(spearmanr(block_sigma, block_rmse).statistic),
                rmse=float(np.sqrt((err ** 2).mean())), median_sigma=float(np.median(sig)),
                median_abs_error=float(np.median(err)))


def reliability(err: np.ndarray, sig: np.ndarray) -> dict[str, float]:
    """Shares of |error| within 0.5, 1 and 2 sigma (Gaussian ideal 0.383, 0.683, 0.954)."""
    ok = np.isfinite(err) & np.isfinite(sig)
    e, s = np.abs(err[ok]), sig[ok]
    return {f"within_{k:g}": float((e <= k * s).mean()) for k in (0.5, 1.0, 2.0)}


def sharpened(truth: np.ndarray) -> np.ndarray:
    """The truth with its one-pixel detail doubled (unsharp mask): a stand-in for imagery
    with more fine detail than Sentinel-2 texture read at 2.5 m."""
    return truth + (truth - gaussian_filter(truth, 1.0))


def crop_rows(which: str) -> list[dict]:
    """Known truth, in process: each crop of :data:`CROPS` ``which`` (plain and sharpened),
    both cases, default fit and full sigma at 2.5 m; coverage, 8 x 8 block Spearman and the
    reliability shares, per case."""
    with rasterio.open(AROSICS) as src:
        image = src.read(1).astype(np.float64) / 1e4
    crops = [image[r:r + 128, c:c + 128] for r, c in CROPS[which]]
    if which == "report":  # and the command benchmark's two scenes (192 px corners)
        crops += [c[:192, :192] for c in np.load(TEXTURE_CROPS).astype(np.float64)[:2] / 1e4]
    rows = []
    for i, base in enumerate(crops):
        for kind, truth in (("plain", base), ("sharp", sharpened(base))):
            for name, case in CASES.items():
                data = case_data(truth, seed=i, **case)
                res = fit_arrays(data, pixel_m=PIXEL_M, config=FitConfig())
                t0 = time.perf_counter()
                sigma = fit_uncertainty(res, data, resolution_m=TRUTH_M).sigma()[0]
                sec = time.perf_counter() - t0
                sr, b = res.render(TRUTH_M)[0], BORDER_PX
                rows.append(dict(kind="crop", set=which, crop=i, truth=kind, case=name,
                                 sigma_over_fit_time=sec / res.seconds,
                                 **scores(sr, sigma, truth),
                                 **reliability((sr - truth)[b:-b, b:-b], sigma[b:-b, b:-b])))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def real_rows(which: str) -> list[dict]:
    """Real series (``benchmarks/date_products.py`` windows, Wald's protocol at 5 m): the
    observed-date product ``fit(target_date=D)`` with D in the stack and its full sigma,
    against the real date D; coverage, 4 x 4 block Spearman, reliability shares."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from date_products import REPORT, TUNE, fit, window_with
    from real_series import SCENE_M, load_series, observe

    rows, series = [], {}
    for name, season, asked, n in TUNE if which == "tune" else REPORT:
        s = series.setdefault(name, load_series(name))
        idx = window_with(s, asked, n)
        h = s.dates.index(asked)
        obs = observe(s.data[idx], s.clear[idx], seed=100 * n + h)
        res, fit_s = fit(obs, [s.dates[k] for k in idx], s.bands, target_date=asked)
        t0 = time.perf_counter()
        sigma = sigma_map(res, obs, resolution_m=SCENE_M)  # in the product's frame
        sec = time.perf_counter() - t0
        b = 4  # 20 m border left out
        err, sig = (res.render(SCENE_M) - s.data[h])[:, b:-b, b:-b], sigma[:, b:-b, b:-b]
        shares = reliability(err, sig)
        rows.append(dict(kind="real", set=which, series=name, season=season, asked=asked,
                         n_dates=n, sigma_over_fit_time=sec / fit_s,
                         coverage=shares["within_1"],
                         spearman_4px_blocks=_block_spearman(err, sig), **shares))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def figure(rows: list[dict], path: Path) -> None:
    """Reliability: share of errors within 0.5, 1, 2 sigma per case against the ideal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [0.5, 1.0, 2.0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, kind in zip(axes, ("crop", "real")):
        for r in (r for r in rows if r["kind"] == kind):
            ndvi = r.get("series") == "eolearn_ndvi"
            ax.plot(ks, [r[f"within_{k:g}"] for k in ks], ":" if ndvi else "-", marker="o",
                    ms=3, alpha=0.6, color="tab:blue" if r["set"] == "tune" else "tab:orange")
        ax.plot(ks, [0.383, 0.683, 0.954], "k--", lw=2, label="Gaussian ideal")
        ax.set_xlabel("k (share of pixels with |error| <= k sigma)")
        ax.set_title({"crop": "known truth, 2.5 m (plain and sharpened texture)",
                      "real": "real series, observed-date product, 5 m\n"
                              "(dotted: eo-learn NDVI)"}[kind], fontsize=9)
        ax.set_xticks(ks)
    axes[0].set_ylabel("share of pixels (blue: tuning, orange: report)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_case(folder: Path, truth: np.ndarray, *, seed: int, noise: float = 0.003,
               **case: int) -> Path:
    """A stack directory of one case (NaN under the clouds)."""
    data = case_data(truth, seed=seed, noise=noise, **case)
    t = len(data)
    write_stack(folder, data, crs="EPSG:32633", transform=Affine(PIXEL_M, 0, 500000.0, 0,
                                                                 -PIXEL_M, 5000000.0),
                bands=["B03"], ids=[f"d{i:02d}" for i in range(t)],
                datetimes=[f"2025-05-{i + 1:02d}T10:30:00Z" for i in range(t)])
    return folder


def run_cli(stack: Path, out: Path, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    """``splatsr fit STACK --out OUT --resolution 2.5 --uncertainty``: (sr, sigma) band 0."""
    cmd = [sys.executable, "-m", "splatsr", "fit", str(stack), "--out", str(out),
           "--resolution", str(TRUTH_M), "--uncertainty", *extra]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    with rasterio.open(out) as a, rasterio.open(sigma_path(out)) as s:
        assert a.transform == s.transform and a.crs == s.crs and a.shape == s.shape
        return a.read(1), s.read(1)


def benchmark_cases(out: Path) -> list[dict]:
    """The two scenes x two cases through the command; one row each.

    Stacks and outputs go to a temporary folder; the report figures of scene 0 clouded (with
    the sigma panel) to ``out/report``.
    """
    crops = np.load(TEXTURE_CROPS).astype(np.float64) / 1e4
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in (0, 1):
            for name, case in CASES.items():
                folder = Path(tmp) / f"scene{i}_{name}"
                stack = write_case(folder / "stack", crops[i], seed=10 + i, **case)
                extra = ("--report", str(out / "report")) if (i, name) == (0, "cloudy10") \
                    else ()
                t0 = time.perf_counter()
                sr, sigma = run_cli(stack, folder / "sr.tif", *extra)
                rows.append(dict(kind="case", scene=i, case=name,
                                 cli_seconds=time.perf_counter() - t0,
                                 **scores(sr, sigma, crops[i])))
    return rows


def sigma_of(data: np.ndarray) -> np.ndarray:
    """The full 1-sigma map (band 0) of a default fit of ``data``, border left out."""
    res = fit_arrays(data, pixel_m=PIXEL_M, config=FitConfig())
    b = BORDER_PX
    return fit_uncertainty(res, data, resolution_m=TRUTH_M).sigma()[0][b:-b, b:-b]


def monotonicity() -> list[dict]:
    """Same scene: 16 vs its first 8 dates, noise 0.003 vs 0.006 (same shifts)."""
    crops = np.load(TEXTURE_CROPS).astype(np.float64) / 1e4
    rows = []
    for i in (0, 1):
        base = case_data(crops[i], n_obs=16, n_cloudy=0, seed=10 + i)
        noisy = case_data(crops[i], n_obs=16, n_cloudy=0, seed=10 + i, noise=0.006)
        s16, s8, s_noisy = sigma_of(base), sigma_of(base[:8]), sigma_of(noisy)
        for what, more, less in (("16 vs 8 dates", s16, s8),
                                 ("noise 0.003 vs 0.006", s16, s_noisy)):
            rows.append(dict(kind="monotonicity", scene=i, compare=what,
                             median_better=float(np.median(more)),
                             median_worse=float(np.median(less)),
                             mean_better=float(more.mean()), mean_worse=float(less.mean()),
                             pixels_not_increased=float((more <= less).mean())))
    return rows


def fast_mode() -> list[dict]:
    """The benchmark cases in process, scored with ``mode="fast"`` (same fits as the command)."""
    crops = np.load(TEXTURE_CROPS).astype(np.float64) / 1e4
    rows = []
    for i in (0, 1):
        for name, case in CASES.items():
            data = case_data(crops[i], seed=10 + i, **case)
            res = fit_arrays(data, pixel_m=PIXEL_M, config=FitConfig())
            parts = fit_uncertainty(res, data, resolution_m=TRUTH_M, mode="fast")
            sigma = parts.sigma(coefficients("fast"))
            rows.append(dict(kind="fast", scene=i, case=name,
                             **scores(res.render(TRUTH_M)[0], sigma[0], crops[i])))
    return rows


def cost() -> list[dict]:
    """Seconds of the default fit and of the uncertainty (full, fast), in-process, per case."""
    crops = np.load(TEXTURE_CROPS).astype(np.float64) / 1e4
    rows = []
    for name, case in CASES.items():
        data = case_data(crops[0], seed=10, **case)
        res = fit_arrays(data, pixel_m=PIXEL_M, config=FitConfig())
        row = dict(kind="cost", case=name, fit_seconds=res.seconds)
        for mode in ("full", "fast"):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fit_uncertainty(res, data, resolution_m=TRUTH_M, mode=mode)
                times.append(time.perf_counter() - t0)
            row[f"{mode}_seconds"] = float(np.median(times))
        rows.append(row)
    return rows


WORLDCEREAL = SHARED / "worldcereal_31UES" / "stack.npz"
# (fitted dates, held-out date) by index into the stack: spring and summer 2019, dates with
# >= 60 % clear pixels (SCL 4, 5, 6), the held-out one in the middle and ~100 % clear
HELDOUT_WINDOWS = [((35, 36, 37, 39, 41, 42, 43), 38), ((46, 48, 49, 51, 53), 52)]


def heldout_real() -> list[dict]:
    """Real dates: does the sigma of the scene, seen at 10 m, cover a date the fit never saw?

    The fit's scene is rendered through the sensor at the held-out date's shift with a fitted
    gain/offset per band (:func:`splatsr.core.psf.heldout_error` finds the shift); its 10 m
    1-sigma is taken as the 4 x 4 block mean of the 2.5 m sigma (errors fully correlated
    within a pixel: an upper bound) combined with the fit's noise level. Real dates also
    differ by change on the ground, which no sigma of the scene includes.
    """
    from splatsr.core.model import render_observations
    from splatsr.core.psf import heldout_error

    z = np.load(WORLDCEREAL)
    data = z["data"].astype(np.float64) * float(z["scale"])
    data[np.broadcast_to(~np.isin(z["scl_10m_nearest"], [4, 5, 6])[:, None], data.shape)] = \
        np.nan
    rows = []
    for fitted, held in HELDOUT_WINDOWS:
        stack = data[list(fitted)]
        res = fit_arrays(stack, pixel_m=PIXEL_M, config=FitConfig())
        sigma = fit_uncertainty(res, stack, resolution_m=TRUTH_M).sigma()  # (B, 4H, 4W)
        _, shift = heldout_error(res, data[held])
        pred = render_observations(torch.from_numpy(res.weights.astype(np.float64)),
                                   torch.from_numpy(shift[None]), grid=res.grid,
                                   psf_sigma_m=res.config.psf_sigma_m).numpy()[0]
        obs = data[held]
        for b in range(obs.shape[0]):
            ok = np.isfinite(obs[b])
            gain, off = np.polyfit(pred[b][ok], obs[b][ok], 1)
            pred[b] = gain * pred[b] + off
        s10 = sigma.reshape(sigma.shape[0], obs.shape[1], 4, obs.shape[2], 4).mean((2, 4))
        s_pred = np.sqrt(s10 ** 2 + np.asarray(res.noise_level)[:, None, None] ** 2)
        err = np.abs(obs - pred)
        ok = np.isfinite(err)
        rows.append(dict(kind="heldout_real", held=str(z["dates"][held])[:10],
                         fitted=[str(z["dates"][i])[:10] for i in fitted],
                         coverage=float((err[ok] <= s_pred[ok]).mean()),
                         coverage_noise_only=float(
                             (err[ok] <= np.broadcast_to(np.asarray(res.noise_level)[:, None, None],
                                                         err.shape)[ok]).mean()),
                         spearman_4px_blocks=_block_spearman(err, s_pred),
                         median_abs_error=float(np.median(err[ok])),
                         median_sigma=float(np.median(s_pred[ok]))))
    return rows


def _block_spearman(err: np.ndarray, sig: np.ndarray, block: int = 4) -> float:
    """Mean over bands of the Spearman correlation of block sigma with block RMS error."""
    out = []
    for e, s in zip(err, sig):
        h, w = (n // block * block for n in e.shape)
        eb = e[:h, :w].reshape(h // block, block, w // block, block)
        sb = s[:h, :w].reshape(h // block, block, w // block, block)
        with np.errstate(invalid="ignore"):
            rmse = np.sqrt(np.nanmean(eb ** 2, (1, 3))).ravel()
        keep = np.isfinite(rmse)
        out.append(spearmanr(np.sqrt((sb ** 2).mean((1, 3))).ravel()[keep],
                             rmse[keep]).statistic)
    return float(np.mean(out))


def main() -> None:
    """Run the benchmark parts asked for (default: all) and write their results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/uncertainty")
    ap.add_argument("--only", choices=["cases", "crops", "real"], default=None,
                    help="one part: the command cases (and fast mode, monotonicity, cost, "
                         "held-out real dates), the known-truth crops, or the real series")
    args = ap.parse_args()
    torch.set_num_threads(1)
    record = dict(machine=machine())  # before the run rewrites the tracked result files
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"cases": lambda: benchmark_cases(args.out) + fast_mode() + monotonicity() + cost()
             + heldout_real(),
             "crops": lambda: crop_rows("tune") + crop_rows("report"),
             "real": lambda: real_rows("tune") + real_rows("report")}
    for part, run in parts.items():
        if args.only in (None, part):  # each part to its own file: cases to uncertainty.json
            record["rows"] = run()
            name = "uncertainty.json" if part == "cases" else f"uncertainty_{part}.json"
            (args.out / name).write_text(json.dumps(record, indent=1))
    files = [args.out / f"uncertainty_{k}.json" for k in ("crops", "real")]
    if args.only != "cases" and all(f.exists() for f in files):
        figure([r for f in files for r in json.loads(f.read_text())["rows"]], FIGURE)


if __name__ == "__main__":
    main()
