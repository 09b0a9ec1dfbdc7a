"""Clean known-truth stacks and the hallucination check: does the dynamic model cost anything?

One command (from the repository root)::

    python benchmarks/clean_regression.py

Known truth (the setting of the reference +2.96 dB in docs/quality.md): the three 256 px crops
of ``tests/data/s2_green_crops.npy`` read as 2.5 m scenes, 16 simulated 10 m dates each
(shifts N(0, 1.5 m), PSF 4 m, noise 0.003, seed 100 + crop, as ``benchmarks/evidence.py``).
Score: PSNR at 5 m against the truth (:func:`splatsr.evaluate.sweep.truth_scores`: sub-pixel
registration, 20 m border) of the fit minus that of the best of bicubic of the first date, of
the mean and of the median. Fits: the defaults before the dynamic model (every dynamic feature
off, :func:`real_series.static_config`) and today's defaults. Then
:func:`quality.hallucination` (flat + noise and pure-noise stacks: the 5 m output's std over
bicubic-of-mean's; < 1 means no invented structure) with today's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TEXTURE_CROPS, machine  # noqa: E402
from baselines import bicubic_mean, bicubic_median, bicubic_one, block_mean  # noqa: E402
from quality import hallucination  # noqa: E402
from real_series import static_config  # noqa: E402

import splatsr  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402
from splatsr.evaluate.sweep import truth_scores  # noqa: E402


def clean_gains(configs: dict[str, FitConfig], n_obs: int = 16) -> dict[str, list[float]]:
    """Per config, per crop: PSNR at 5 m of the fit minus the best bicubic's [dB]."""
    tex = np.load(TEXTURE_CROPS).astype(np.float64) / 10000.0
    out = {k: [] for k in configs}
    for k in range(len(tex)):
        data, _ = splatsr.simulate(tex[k], truth_pixel_m=2.5, n_obs=n_obs, shift_std_m=1.5,
                                   psf_sigma_m=4.0, noise_sigma=0.003, seed=100 + k)
        truth = block_mean(tex[k][None].astype(np.float32), 2)
        best = max(truth_scores(f(data, factor=2), truth)["psnr_db"]
                   for f in (bicubic_one, bicubic_mean, bicubic_median))
        for name, cfg in configs.items():
            img = fit_arrays(data, pixel_m=10.0, config=cfg).render(5.0)
            out[name].append(truth_scores(img, truth)["psnr_db"] - best)
            print(f"crop {k} {name}: {out[name][-1]:+.2f} dB", flush=True)
    return out


def main() -> None:
    torch.set_num_threads(1)
    got = clean_gains({"static (before)": static_config(), "default (now)": FitConfig()})
    for name, g in got.items():
        print(f"| {name} | " + " | ".join(f"{v:+.2f}" for v in g) + f" | **{np.mean(g):+.2f}** |")
    for r in hallucination(256):
        print(f"hallucination {r['case']}: std ratio {r['std_ratio_vs_bicubic_mean']:.2f}")
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))


if __name__ == "__main__":
    main()
