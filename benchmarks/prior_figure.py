"""What the prior does where the data leave detail undetermined: a forest, a field, a village.

One command (from the repository root)::

    python benchmarks/prior_figure.py [--out docs/prior_figure.png]

Truth: three 128 px crops of a real Sentinel-2A 10 m green band (GFZ/arosics test data,
``../shared/data/arosics_s2_coreg``, Copernicus Sentinel data), read as a 2.5 m scene and
observed by the simulated 10 m sensor (shifts N(0, 1.5 m), PSF 4 m, noise 0.002) in 3, 8 and
16 dates. Shown: the truth, bicubic of the median of the 16 dates, and the fit at 2.5 m with
each prior of :data:`splatsr.core.prior.PRIORS` that applies to one band, with the PSNR at
5 m against the truth in each title.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AROSICS, ROOT, machine  # noqa: E402
from baselines import bicubic_median, block_mean  # noqa: E402

import splatsr  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402

CROPS = {"forest": (1300, 1280), "field": (560, 1560), "village": (1790, 1660)}  # (row, col)
NS = (3, 8, 16)
SIZE = 128


def priors() -> list[str]:
    """The one-band priors available (vectorial TV equals TV on one band)."""
    try:
        from splatsr.core.prior import PRIORS
    except ImportError:
        return ["tv"]
    return [p for p in PRIORS if p != "vtv"]


def crop(row: int, col: int) -> np.ndarray:
    import rasterio

    with rasterio.open(AROSICS) as src:
        g = src.read(1, window=((row, row + SIZE), (col, col + SIZE)))
    return g.astype(np.float64)[None] * 1e-4


def psnr_5m(img: np.ndarray, truth: np.ndarray) -> float:
    a, b = block_mean(img, 2)[:, 4:-4, 4:-4], block_mean(truth, 2)[:, 4:-4, 4:-4]
    return float(10 * np.log10(np.ptp(b) ** 2 / np.mean((a - b) ** 2)))


def panels() -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per crop: (title, image at 2.5 m) for truth, bicubic and every (prior, N) fit."""
    out = {}
    for name, (r, c) in CROPS.items():
        truth = crop(r, c)
        obs, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=max(NS), noise_sigma=0.002,
                                  seed=7)
        bic = bicubic_median(obs, factor=4)
        row = [("truth (real 10 m read as 2.5 m)", truth),
               (f"bicubic, 16 dates {psnr_5m(bic, truth):.1f} dB", bic)]
        for prior in priors():
            for n in NS:
                res = fit_arrays(obs[:n], pixel_m=10.0, config=FitConfig(prior=prior)
                                 if prior != "tv" else FitConfig())
                img = res.render(2.5)
                row.append((f"{prior}, {n} dates {psnr_5m(img, truth):.1f} dB", img))
            print(name, prior, flush=True)
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "prior_figure.png"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    got = panels()
    ncol = len(next(iter(got.values())))
    fig, axs = plt.subplots(len(got), ncol, figsize=(2.1 * ncol, 2.3 * len(got)))
    for axr, (name, row) in zip(axs, got.items()):
        lo, hi = np.percentile(row[0][1], [1, 99])
        for ax, (title, img) in zip(axr, row):
            ax.imshow(img[0], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"{name}: {title}" if ax is axr[0] else title, fontsize=6)
            ax.axis("off")
    info = machine()
    fig.suptitle(f"Simulated 10 m sensor on real texture, output 2.5 m; PSNR at 5 m. "
                 f"{info['date']}, commit {info['commit'][:10]}", fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
