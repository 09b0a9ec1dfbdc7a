"""Target-date weighting and the change layer on real series: a quick check, 4 windows.

Wald's protocol on the real WorldCereal 31UES L2A series (../shared/data/worldcereal_31UES):
each real 10 m date is read as the scene at 5 m and observed by the simulated sensor at 10 m
(shift N(0, 1.5 m), Gaussian PSF 4 m, 2 x 2 pixel integration, noise 0.002, masked where that
date's SCL is not clear). The 5 m output is scored with cPSNR (per-band gain/offset and a
+-2 px shift search) against a clear date held out of the fit and against the per-pixel
median composite of the window's real dates, as the difference to bicubic-of-median.

    python benchmarks/dynamic_windows.py '{"default": {}, "target": {"target": "held"}}' \
        springC,summerC,spring19,long19 dyn 0,1

Argument 1: variants, name -> FitConfig fields (``"target": "held"`` sets target_date to
the held-out date); 2: windows; 3: ``static`` (every date shows the held-out date's scene:
the ceiling) or anything else; 4: seeds. The full benchmark is benchmarks/real_series.py.
"""
import json
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import splatsr
from splatsr.evaluate.metrics import cpsnr
from splatsr.evaluate.simulate import simulate

torch.set_num_threads(1)

from _common import SHARED  # noqa: E402

Z = np.load(SHARED / 'worldcereal_31UES' / 'stack.npz', allow_pickle=True)
SER = Z['data'].astype(np.float32) * 1e-4
SER[Z['data'] == 0] = np.nan
CLEAR = np.isin(Z['scl_10m_nearest'], [4, 5, 6, 11])
DATES = [str(d)[:10] for d in Z['dates']]
WINDOWS = {
    "springC": (["2019-02-25", "2019-03-22", "2019-04-01", "2019-04-21", "2019-05-11",
                 "2019-05-16"], "2019-04-16"),
    "summerC": (["2019-06-20", "2019-06-30", "2019-07-05", "2019-07-30", "2019-08-24"],
                "2019-07-25"),
    "autumnC": (["2018-08-04", "2018-10-13", "2018-10-18", "2018-11-12"], "2018-09-18"),
    "spring19": (["2019-03-22", "2019-04-01", "2019-04-11", "2019-04-16", "2019-04-26",
                  "2019-05-06", "2019-05-11", "2019-05-16"], "2019-04-21"),
    "summer19": (["2019-06-10", "2019-06-20", "2019-06-30", "2019-07-20", "2019-07-25",
                  "2019-07-30", "2019-08-24"], "2019-07-05"),
    "long19": (["2019-02-15", "2019-02-25", "2019-03-07", "2019-03-22", "2019-04-01",
                "2019-04-11", "2019-04-16", "2019-04-26", "2019-05-06", "2019-05-11",
                "2019-05-16", "2019-06-10", "2019-06-20", "2019-06-30"], "2019-04-21"),
}


def stack(window, seed=0, static=False):
    names, held = WINDOWS[window]
    idx = [DATES.index(d) for d in names]
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0, 1.5, (len(idx), 2)); shifts -= shifts.mean(0)
    obs = []
    for k, t in enumerate(idx):
        truth = SER[DATES.index(held) if static else t]
        truth = np.nan_to_num(truth, nan=float(np.nanmedian(truth)))
        o, _ = simulate(truth, truth_pixel_m=5.0, shifts_m=shifts[k:k + 1], psf_sigma_m=4.0,
                        noise_sigma=0.002, seed=seed * 100 + k)
        m = CLEAR[t].reshape(32, 2, 32, 2).all((1, 3))
        o[0][:, ~m] = np.nan
        obs.append(o[0])
    return np.stack(obs), [Z['dates'][i] for i in idx], SER[DATES.index(held)], idx


def bicubic_median(obs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        med = np.nanmedian(obs, 0)
    med = np.where(np.isfinite(med), med, np.nanmean(med))
    return F.interpolate(torch.from_numpy(med[None]).double(), scale_factor=2, mode="bicubic",
                         align_corners=False)[0].numpy()


def composite(idx):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.nanmedian(np.where(CLEAR[idx][:, None], SER[idx], np.nan), 0)


def run(window, variants, seed=0, static=False):
    obs, dates, held, idx = stack(window, seed, static)
    comp = composite(idx)
    base = bicubic_median(obs)
    b_h, b_c = cpsnr(base, held), cpsnr(base, comp)
    rows = []
    for name, kw in variants.items():
        kw = dict(kw)
        tgt = kw.pop("target", None)
        if tgt == "held":
            kw["target_date"] = WINDOWS[window][1]
        t0 = time.time()
        res = splatsr.fit_arrays(obs, pixel_m=10.0, config=splatsr.FitConfig(**kw),
                                 dates=dates)
        img = res.render(5.0)
        rows.append(dict(window=window, variant=name, seed=seed, static=static,
                         d_held=cpsnr(img, held) - b_h, d_comp=cpsnr(img, comp) - b_c,
                         s=time.time() - t0))
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    variants = json.loads(sys.argv[1])
    windows = sys.argv[2].split(",")
    static = len(sys.argv) > 3 and sys.argv[3] == "static"
    seeds = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0]
    allr = []
    for w in windows:
        for sd in seeds:
            allr += run(w, variants, static=static, seed=sd)
    for v in variants:
        r = [x for x in allr if x["variant"] == v]
        held, comp = np.mean([x["d_held"] for x in r]), np.mean([x["d_comp"] for x in r])
        print(f"{v:20s} held {held:+.2f}  comp {comp:+.2f}")
