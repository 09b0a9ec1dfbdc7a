"""Few dates on known truth: PSNR gain over bicubic and the flat-plateau excess (issue 30).

One command (from the repository root)::

    python benchmarks/few_dates.py [--size 128] [--configs default,huber]

Known truth: real Sentinel-2 green-band texture read as a 2.5 m scene (DN / 10000), the
central ``size`` px of a crop: two tuning crops (``tests/data/s2_green_crops.npy`` 0 and 1)
and one held-out crop (``benchmarks/data/s2_green_384.npz`` crop 2, another part of the
tile). Observed by :func:`splatsr.simulate` (PSF 4 m, shifts N(0, 1.5 m), noise 0.003,
10 m pixels) at 3, 5 and 16 dates (seed 300 + 10 x crop + dates).

Scores:

* 3 and 5 dates: PSNR at 2.5 m against the truth of the fit (``render(2.5)``) minus that of
  bicubic of the per-pixel median of the dates (both registered to the truth by sub-pixel
  phase correlation, a 20 m border left out, data range the truth's).
* 16 dates: PSNR at 5 m (:func:`splatsr.evaluate.sweep.truth_scores`) of the fit minus the
  best of bicubic of the first date, the mean and the median (``clean_regression.py``).
* Flat-plateau excess (3 and 5 dates): the share of 2.5 m output pixels whose gradient
  magnitude (forward differences, ``hypot(gx, gy)`` per 2.5 m step) is below
  :data:`FLAT_FRACTION` x the observation noise (0.1 x 0.003 = 0.0003 reflectance per
  2.5 m), minus the same share of the truth, on the same interior. A fit that paints
  plateaus (TV's piecewise-constant answer) raises it; a smooth answer does not.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import torch
from scipy import ndimage
from skimage.registration import phase_cross_correlation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AROSICS, TEXTURE_384, TEXTURE_CROPS, machine  # noqa: E402
from baselines import bicubic_mean, bicubic_median, bicubic_one, block_mean  # noqa: E402

import splatsr  # noqa: E402
from splatsr.core.prior_choice import few_dates_config  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402
from splatsr.evaluate.sweep import truth_scores  # noqa: E402

NOISE = 0.003  # observation noise (reflectance)
FLAT_FRACTION = 0.1  # "near-zero gradient": below this fraction of the noise per 2.5 m step
BORDER_M = 20.0  # left out of every score on each side
TRUTH_M = 2.5
FIRST_CROPS = ("tune0", "tune1", "heldout")  # their seeds: 300 + 10 x index + dates


def crops(size: int, names: list[str]) -> dict[str, np.ndarray]:
    """Known truths (size, size) in reflectance: ``tune0``, ``tune1``, ``heldout``, and the
    AROSICS crops of ``benchmarks/uncertainty.py`` (``arosics-<row>-<col>``, needs
    ``../shared``), each also as ``<name>-sharp`` (its one-pixel detail doubled)."""
    def centre(a: np.ndarray) -> np.ndarray:
        y0, x0 = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
        return a[y0:y0 + size, x0:x0 + size].astype(np.float64) / 10000.0

    tex = np.load(TEXTURE_CROPS)
    big = np.load(TEXTURE_384)["crops"]
    out = {"tune0": centre(tex[0]), "tune1": centre(tex[1]), "heldout": centre(big[2])}
    if any(n.startswith("arosics") for n in names):
        from uncertainty import CROPS
        with rasterio.open(AROSICS) as src:
            image = src.read(1)
        for r, c in CROPS["tune"] + CROPS["report"]:
            out[f"arosics-{r}-{c}"] = image[r:r + size, c:c + size].astype(np.float64) / 1e4
    for name in list(out):
        out[f"{name}-sharp"] = out[name] + (out[name] - ndimage.gaussian_filter(out[name], 1.0))
    return {n: out[n] for n in names}


def register(img: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(B, H, W) ``img`` moved onto ``truth`` by sub-pixel phase correlation."""
    shift, _, _ = phase_cross_correlation(truth.mean(0), img.mean(0), upsample_factor=100,
                                          normalization=None)
    return np.stack([ndimage.shift(b, shift, order=3, mode="nearest") for b in img])


def psnr_25(img: np.ndarray, truth: np.ndarray) -> float:
    """PSNR [dB] at 2.5 m of (B, H, W) ``img`` against ``truth``, registered, border out."""
    b = int(round(BORDER_M / TRUTH_M))
    m = register(img, truth)[:, b:-b, b:-b]
    t = truth[:, b:-b, b:-b]
    rng = float(t.max() - t.min())
    return float(10 * np.log10(rng ** 2 / np.mean((m - t) ** 2)))


def flat_share(img: np.ndarray, noise: float = NOISE) -> float:
    """Share of the interior pixels of (B, H, W) whose gradient magnitude per 2.5 m step is
    below ``FLAT_FRACTION * noise``."""
    b = int(round(BORDER_M / TRUTH_M))
    gx = np.diff(img, axis=2)[:, :-1, :]
    gy = np.diff(img, axis=1)[:, :, :-1]
    mag = np.hypot(gx, gy)[:, b:-b, b:-b]
    return float(np.mean(mag < FLAT_FRACTION * noise))


def stack(truth: np.ndarray, n_obs: int, seed: int) -> np.ndarray:
    """(T, 1, H/4, W/4) simulated 10 m stack of a (H, W) truth at 2.5 m."""
    data, _ = splatsr.simulate(truth, truth_pixel_m=TRUTH_M, n_obs=n_obs, shift_std_m=1.5,
                               psf_sigma_m=4.0, noise_sigma=NOISE, seed=seed)
    return data


def score_case(truth: np.ndarray, n_obs: int, seed: int,
               configs: dict[str, FitConfig | Callable[[np.ndarray], FitConfig]]
               ) -> dict[str, dict[str, float]]:
    """Per config (or rule: stack -> config): ``gain_db`` (see the module docstring),
    ``flat_excess``, ``seconds`` (the rule's choice included) and ``tv_weight`` used."""
    data = stack(truth, n_obs, seed)
    t3 = truth[None]  # (1, H, W)
    out = {}
    if n_obs >= 16:
        t5 = block_mean(t3.astype(np.float32), 2)
        base = max(truth_scores(f(data, factor=2), t5)["psnr_db"]
                   for f in (bicubic_one, bicubic_mean, bicubic_median))
    else:
        base = psnr_25(bicubic_median(data, factor=4), t3)
    truth_flat = flat_share(t3)
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        if callable(cfg):  # a rule that reads the stack
            cfg = cfg(data)
        res = fit_arrays(data, pixel_m=10.0, config=cfg)
        img25 = res.render(TRUTH_M)
        gain = (truth_scores(res.render(5.0), t5)["psnr_db"] if n_obs >= 16
                else psnr_25(img25, t3)) - base
        out[name] = dict(gain_db=gain, flat_excess=flat_share(img25) - truth_flat,
                         seconds=time.perf_counter() - t0, tv_weight=cfg.tv_weight,
                         prior=cfg.prior)
    return out


CONFIGS = {
    "default": FitConfig(),
    "huber": FitConfig(prior="huber"),
    # Huber, weight from leave-one-date-out prediction (splatsr.core.prior_choice)
    "huber-loo": lambda data: few_dates_config(data, pixel_m=10.0),
}


def run(size: int, names: list[str], dates: tuple[int, ...], which: list[str]
        ) -> list[dict]:
    """Rows (crop, dates, config, gain_db, flat_excess, seconds), printed as they come."""
    rows = []
    truths = crops(size, which)
    configs = {n: CONFIGS[n] for n in names}
    for cname in truths:
        ci = FIRST_CROPS.index(cname) if cname in FIRST_CROPS else zlib.crc32(cname.encode())
        for n in dates:
            got = score_case(truths[cname], n, (300 + 10 * ci + n) % 2**32, configs)
            for name, r in got.items():
                rows.append(dict(crop=cname, dates=n, config=name, **r))
                print(f"{cname} {n:2d} dates {name:>12}: {r['gain_db']:+.2f} dB  "
                      f"flat excess {r['flat_excess']:+.3f}  ({r['prior']} "
                      f"{r['tv_weight']:g}, {r['seconds']:.1f} s)",
                      flush=True)
    return rows


def summary(rows: list[dict]) -> None:
    """Mean and worst gain and the mean flat excess per config, few dates and 16 dates."""
    for name in dict.fromkeys(r["config"] for r in rows):
        for crop_set in ("tune", "heldout", "arosics"):
            few = [r for r in rows if r["config"] == name and r["dates"] < 16
                   and r["crop"].startswith(crop_set)]
            many = [r for r in rows if r["config"] == name and r["dates"] >= 16
                    and r["crop"].startswith(crop_set)]
            if not few and not many:
                continue
            line = f"| {name} | {crop_set} |"
            if few:
                g = [r["gain_db"] for r in few]
                line += (f" {np.mean(g):+.2f} | {min(g):+.2f} | "
                         f"{np.mean([r['flat_excess'] for r in few]):+.4f} |")
            else:
                line += " - | - | - |"
            line += f" {np.mean([r['gain_db'] for r in many]):+.2f} |" if many else " - |"
            print(line)


def figure(size: int, path: Path, n_obs: int = 3) -> None:
    """PNG: per crop (rows) the truth, bicubic of the median, the default fit and the
    few-date rule's fit at ``n_obs`` dates, 2.5 m, one grey scale per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truths = crops(size, list(FIRST_CROPS))
    fig, axes = plt.subplots(len(truths), 4, figsize=(10, 2.6 * len(truths)))
    for ci, (cname, truth) in enumerate(truths.items()):
        data = stack(truth, n_obs, 300 + 10 * ci + n_obs)
        imgs = {"truth": truth, "bicubic of median": bicubic_median(data, factor=4)[0]}
        for name in ("default", "huber-loo"):
            cfg = CONFIGS[name]
            cfg = cfg(data) if callable(cfg) else cfg
            imgs[f"{name} ({cfg.prior} {cfg.tv_weight:g})"] = \
                fit_arrays(data, pixel_m=10.0, config=cfg).render(TRUTH_M)[0]
        lo, hi = np.percentile(truth, [1, 99])
        for ax, (title, img) in zip(axes[ci], imgs.items()):
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(f"{cname}: {title}" if title == "truth" else title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{n_obs} dates, 2.5 m (benchmarks/few_dates.py)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)


def sample_figure(path: Path) -> None:
    """PNG of the bundled sample (3 real dates) at 2.5 m: bicubic of the median, the default
    fit and the few-date rule's; prints the rule's choice and a colour-noise statistic (the
    share of pixels whose chromaticity, each visible band over their mean, differs from
    bicubic's by more than 0.1, 16 px border out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from splatsr.evaluate.registration import phasecorr_seed
    from splatsr.io.sample import sample_stack

    st = sample_stack()
    data = st.load()  # (3, 4, 101, 100): B02, B03, B04, B08
    seed = phasecorr_seed(data, pixel_m=st.pixel_m)
    t0 = time.perf_counter()
    rule = few_dates_config(data, pixel_m=st.pixel_m)
    print(f"sample: rule chose {rule.prior} {rule.tv_weight:g} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    bic = bicubic_median(data, factor=4)
    imgs = {"bicubic of median": bic}
    default = FitConfig()
    for title, cfg in ((f"default ({default.prior} {default.tv_weight:g})", default),
                       (f"per-band tv {default.tv_weight:g}", FitConfig(prior="tv")),
                       (f"few-date rule ({rule.prior} {rule.tv_weight:g})", rule)):
        t0 = time.perf_counter()
        imgs[title] = fit_arrays(data, pixel_m=st.pixel_m, config=cfg, init_shifts_m=seed
                                 ).render(TRUTH_M)[:, :bic.shape[1], :bic.shape[2]]
        print(f"sample: {title} fit {time.perf_counter() - t0:.0f} s", flush=True)

    def chroma(x: np.ndarray) -> np.ndarray:
        return x[:3] / np.maximum(x[:3].mean(0, keepdims=True), 1e-4)

    lo = np.percentile(bic[[2, 1, 0]], 2, axis=(1, 2))[:, None, None]
    hi = np.percentile(bic[[2, 1, 0]], 98, axis=(1, 2))[:, None, None]
    fig, axes = plt.subplots(1, len(imgs), figsize=(4 * len(imgs), 4.3))
    for ax, (title, img) in zip(axes, imgs.items()):
        dev = np.abs(chroma(img) - chroma(bic)).max(0)[16:-16, 16:-16]
        print(f"sample: {title}: colour deviation > 0.1 on {np.mean(dev > 0.1):.4f}")
        ax.imshow(np.clip((img[[2, 1, 0]] - lo) / (hi - lo), 0, 1).transpose(1, 2, 0))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("splatsr fit --sample (3 real dates), 2.5 m, B04/B03/B02", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="truth crop size (2.5 m px)")
    p.add_argument("--configs", default="default,huber,huber-loo")
    p.add_argument("--dates", default="3,5,16")
    p.add_argument("--crops", default="tune0,tune1,heldout")
    p.add_argument("--figure", type=Path, help="write the 3-date figure here and stop")
    p.add_argument("--sample-figure", type=Path, help="write the sample's figure and stop")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.figure or a.sample_figure:
        if a.figure:
            figure(a.size, a.figure)
        if a.sample_figure:
            sample_figure(a.sample_figure)
        return
    rows = run(a.size, a.configs.split(","), tuple(int(v) for v in a.dates.split(",")),
               a.crops.split(","))
    print("| config | crops | few-date gain mean | worst | flat excess | 16 dates |")
    summary(rows)
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))


if __name__ == "__main__":
    main()
