"""Bands that do not line up: where the fit puts each output band when the bands are offset.

One command (from the repository root)::

    python benchmarks/band_alignment.py [--size 128]

Known truth: crop 0 of the real Sentinel-2 green band in ``tests/data/s2_green_crops.npy``
(read as a 2.5 m scene) as four bands (B02, B03, B04, B08 = 0.6, 0.8, 1.0, 1.5 x the texture),
observed by the simulated 10 m sensor in 16 dates (shifts N(0, 1.5 m), PSF 4 m, noise 0.002).
In the *offset* stack B04 sits 1.5 m east and B08 1.2 m south of the other bands in every
date (the truth band moved by cubic-spline interpolation before the simulation); the *aligned*
stack is the same without the offsets. Each output band at 2.5 m of a fit of the offset stack
is registered (phase correlation, 1/100 px) against the same band of the default fit of the
aligned stack; the displacement is what the band offsets leave uncorrected (0 = the bands
line up as if the stack had none). Both the default fit and the fit with
``band_offsets=False`` (when that option exists) are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import shift as nd_shift
from skimage.registration import phase_cross_correlation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TEXTURE_CROPS, machine  # noqa: E402

import splatsr  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402

BANDS = ("B02", "B03", "B04", "B08")
GAINS = (0.6, 0.8, 1.0, 1.5)
OFFSETS_M = {"B04": (1.5, 0.0), "B08": (0.0, 1.2)}  # (east, south) in metres
TRUTH_M, OUT_M = 2.5, 2.5


def truth_bands(size: int, *, offsets: bool) -> np.ndarray:
    """(4, size, size) reflectance, the named bands moved by ``OFFSETS_M`` when ``offsets``."""
    tex = np.load(TEXTURE_CROPS)[0][:size, :size].astype(np.float64) * 1e-4
    out = []
    for b, g in zip(BANDS, GAINS):
        east, south = OFFSETS_M.get(b, (0.0, 0.0)) if offsets else (0.0, 0.0)
        out.append(nd_shift(g * tex, (south / TRUTH_M, east / TRUTH_M), order=3, mode="reflect"))
    return np.stack(out)


def displacement_m(img: np.ndarray, ref: np.ndarray, border_px: int = 8) -> np.ndarray:
    """(B, 2) (east, south) displacement in metres of each band of img against ref's."""
    sl = np.s_[border_px:-border_px, border_px:-border_px]
    out = []
    for a, b in zip(img, ref):
        sh = phase_cross_correlation(b[sl], a[sl], upsample_factor=100)[0]  # (rows, cols)
        out.append((-sh[1] * OUT_M, -sh[0] * OUT_M))
    return np.array(out)


def configs() -> dict[str, FitConfig]:
    """The default fit, and the fit without band offsets where the option exists."""
    cfgs = {"default": FitConfig()}
    if "band_offsets" in {f.name for f in dataclasses.fields(FitConfig)}:
        cfgs["no_band_offsets"] = FitConfig(band_offsets=False)
    return cfgs


def run(size: int, n_obs: int = 16, seed: int = 3) -> dict[str, np.ndarray]:
    """Per config: (B, 2) displacement [m] of the offset-stack fit vs the aligned-stack fit."""
    sim = dict(truth_pixel_m=TRUTH_M, n_obs=n_obs, noise_sigma=0.002, psf_sigma_m=4.0,
               seed=seed)
    obs_al, _ = splatsr.simulate(truth_bands(size, offsets=False), **sim)
    obs_off, _ = splatsr.simulate(truth_bands(size, offsets=True), **sim)
    ref = fit_arrays(obs_al, pixel_m=10.0, band_names=BANDS).render(OUT_M)
    out = {}
    for name, cfg in configs().items():
        res = fit_arrays(obs_off, pixel_m=10.0, config=cfg, band_names=BANDS)
        out[name] = displacement_m(res.render(OUT_M), ref)
        est = getattr(res, "band_offsets_m", None)
        if est is not None:
            out[f"{name}_estimated_offsets"] = np.asarray(est)
    return out


def markdown(got: dict[str, np.ndarray]) -> list[str]:
    md = ["| fit | " + " | ".join(f"{b} east, south [m] (|d|)" for b in BANDS) + " |",
          "|---" * (len(BANDS) + 1) + "|"]
    for name, d in got.items():
        d = np.asarray(d).reshape(-1, 2)
        md.append(f"| {name} | " + " | ".join(
            f"{e:+.2f}, {s:+.2f} ({np.hypot(e, s):.2f})" for e, s in d) + " |")
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="truth side in 2.5 m pixels")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(markdown(run(a.size))))
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))


if __name__ == "__main__":
    main()
