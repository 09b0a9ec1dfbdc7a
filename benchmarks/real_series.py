"""Real Sentinel-2 time series under Wald's protocol: what real change between dates does to a fit.

One command (from the repository root)::

    python benchmarks/real_series.py [--quick] [--cli] [--windows check|fresh] [--out DIR]

Protocol (Wald): every real 10 m date is read as the scene at 5 m and observed by a simulated
10 m sensor (sub-pixel shift N(0, 1.5 m) per date, Gaussian PSF 4 m, 2 x 2 pixel integration,
noise 0.002), masked by that date's own real cloud mask (an observed pixel is NaN when any of
its 2 x 2 scene pixels is not clear). Each window is the N dates nearest in time to a clear
real date that is held out of the fit (dates with < 30 % clear pixels are skipped). Outputs
are at 5 m, scored with :func:`splatsr.evaluate.metrics.cpsnr` (per band gain/offset and a
+-2 px shift search, PROBA-V style) against

* the held-out real date, for the fit with ``target_date`` = that date (``target``), and
* the per-pixel median composite of the window's real 10 m dates (masked), for the default fit
  (``default``);

next to bicubic of the per-pixel median of the observations (``bicubic_median``), the best
single input date upsampled bicubically (``best_date``: an oracle, the best of the >= 90 %
clear inputs against the reference), the pixel-grid MAP-TV of :mod:`baselines`
(``map_tv``) and the fit with the defaults that predate the dynamic model (``static_fit``:
no target date, no change layer). The static-scene ceiling (``ceiling``) fits the same window
where every date is the held-out date's texture (one static scene, no change), unmasked and
masked by the real masks.

Data: ``worldcereal_31UES`` (72 real L2A dates, B02 B03 B04 B08, SCL; Belgian fields) and the
eo-learn test patch (NDVI of 68 dates, CLM cloud masks), Copernicus Sentinel data; see
``../shared/data/README.md``. :func:`headline` returns the must-show means so a later run can
compare (``--compare FILE.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EOLEARN, RESULTS, ROOT, SHARED, machine  # noqa: E402
from baselines import bicubic_median, map_tv, phasecorr  # noqa: E402

import splatsr  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402
from splatsr.evaluate.metrics import cpsnr  # noqa: E402

WORLDCEREAL = SHARED / "worldcereal_31UES" / "stack.npz"
SCENE_M, PIXEL_M, FACTOR = 5.0, 10.0, 2  # the real 10 m date read as the 5 m scene
NOISE, SHIFT_STD_M, PSF_M = 0.002, 1.5, 4.0
MIN_CLEAR = 0.3  # dates with fewer clear pixels are not inputs
# (series, season, held-out date): the windows; N in ``NS`` dates each
WINDOWS = [("worldcereal", "spring", "2019-04-16"), ("worldcereal", "summer", "2019-07-05"),
           ("eolearn_ndvi", "spring", "2017-04-21"), ("eolearn_ndvi", "summer", "2017-07-20")]
NS = (7, 14)
# other windows (``--windows check``), kept out of the choices made on WINDOWS to check them
CHECK_WINDOWS = [("worldcereal", "autumn18", "2018-10-13"),
                 ("worldcereal", "lsummer", "2019-08-24"),
                 ("worldcereal", "autumn19", "2019-10-13"),
                 ("eolearn_ndvi", "summer16", "2016-08-14"),
                 ("eolearn_ndvi", "autumn17", "2017-10-13"),
                 ("eolearn_ndvi", "winter16", "2016-01-07")]
# windows first run on 2026-12-07, after the consensus and anchor changes of that day were
# chosen (``--windows fresh``; the cloud-free start, chosen later on the other windows, was
# then run on them once): an estimate of what held-out series see, while no choice is made
# on them
FRESH_WINDOWS = [("worldcereal", "autumn18b", "2018-09-18"),
                 ("worldcereal", "spring19a", "2019-03-22"),
                 ("worldcereal", "spring19b", "2019-05-16"),
                 ("worldcereal", "summer19a", "2019-06-20"),
                 ("eolearn_ndvi", "autumn15", "2015-09-09"),
                 ("eolearn_ndvi", "spring16", "2016-05-26"),
                 ("eolearn_ndvi", "winter17", "2017-01-11"),
                 ("eolearn_ndvi", "summer17", "2017-06-20")]


@dataclass
class Series:
    """A real series: (T, B, H, W) reflectance at 10 m (read as 5 m), (T, H, W) clear mask."""

    name: str
    data: np.ndarray
    clear: np.ndarray
    dates: list[str]
    bands: list[str]
    crs: str = "EPSG:32631"
    extra: dict = field(default_factory=dict)


def load_series(name: str) -> Series:
    """The worldcereal stack (SCL 4, 5, 6, 11 clear) or the eo-learn NDVI (CLM = 0 clear)."""
    if name == "worldcereal":
        z = np.load(WORLDCEREAL, allow_pickle=True)
        data = z["data"].astype(np.float32) * 1e-4
        clear = np.isin(z["scl_10m_nearest"], [4, 5, 6, 11]) & (z["data"] > 0).all(1)
        return Series(name, data, clear, [str(d)[:10] for d in z["dates"]],
                      ["B02", "B03", "B04", "B08"])
    p = EOLEARN / "TestEOPatch"
    ndvi = np.load(p / "data" / "NDVI.npy")[..., 0][:, :64, :64].astype(np.float32)
    clm = np.load(p / "mask" / "CLM.npy")[..., 0][:, :64, :64]
    ts = [t[:10] for t in json.loads((p / "timestamps.json").read_text())]
    keep = np.unique(ts, return_index=True)[1]  # one duplicated timestamp
    return Series(name, ndvi[keep][:, None], (clm[keep] == 0) & np.isfinite(ndvi[keep]),
                  [ts[k] for k in keep], ["NDVI"], crs="EPSG:32633")


def window(s: Series, held: str, n: int) -> list[int]:
    """Indices of the n dates nearest in time to ``held`` (itself excluded), >= MIN_CLEAR."""
    day = np.array(s.dates, dtype="datetime64[D]")
    h = s.dates.index(held)
    ok = [k for k in range(len(day)) if k != h and s.clear[k].mean() >= MIN_CLEAR]
    return sorted(sorted(ok, key=lambda k: abs(int((day[k] - day[h]).astype(int))))[:n])


def observe(scenes: np.ndarray, clear: np.ndarray | None, *, seed: int) -> np.ndarray:
    """(T, B, H, W) 5 m scenes -> (T, B, H/2, W/2) simulated 10 m dates, NaN where not clear."""
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0.0, SHIFT_STD_M, (len(scenes), 2))
    obs = np.concatenate([splatsr.simulate(
        sc.astype(np.float64), truth_pixel_m=SCENE_M, pixel_m=PIXEL_M, shifts_m=shifts[t:t + 1],
        psf_sigma_m=PSF_M, noise_sigma=NOISE, seed=seed + t)[0] for t, sc in enumerate(scenes)])
    if clear is not None:
        T, H, W = clear.shape
        ok = clear.reshape(T, H // FACTOR, FACTOR, W // FACTOR, FACTOR).all((2, 4))
        obs = np.where(ok[:, None], obs, np.nan)
    return obs.astype(np.float32)


# FitConfig fields of the dynamic model, and the value that turns each off (those present)
DYNAMIC_OFF = {"target_date": None, "change_cell_m": 0.0, "band_offsets": False,
               "fit_band_offsets": False, "band_psf": False, "fit_band_psf": False,
               "prior": "tv", "median_anchor": False}


EXTRA: dict[str, dict] = {}  # more fits: name -> FitConfig fields (``--extra`` JSON)


def static_config() -> FitConfig:
    """The defaults that predate the dynamic model: every dynamic feature off."""
    names = {f.name for f in dataclasses.fields(FitConfig)}
    return FitConfig(**{k: v for k, v in DYNAMIC_OFF.items() if k in names})


def fit_configs(target: str, change_m: float | None) -> dict[str, FitConfig]:
    """The fits of one window: the static defaults, the default, the target-date fit (and
    both with a change layer of ``change_m`` when given). Fits that need a FitConfig field
    this version lacks are left out (so the benchmark also runs on older versions)."""
    names = {f.name for f in dataclasses.fields(FitConfig)}
    want = {"static_fit": None, "default": {}, "target": {"target_date": target}}
    if change_m:
        want["default_change"] = {"change_cell_m": change_m}
        want["target_change"] = {"target_date": target, "change_cell_m": change_m}
    for name, fields in EXTRA.items():  # "target_date": "held" -> the held-out date
        want[name] = {k: target if v == "held" else v for k, v in fields.items()}
    return {k: static_config() if v is None else FitConfig(**v) for k, v in want.items()
            if v is None or set(v) <= names}


def fit_render(obs: np.ndarray, cfg: FitConfig, dates: list[str], bands: list[str]
               ) -> tuple[np.ndarray, float]:
    """Fit in memory (the same solver as ``splatsr fit``) -> (B, H, W) at 5 m, seconds."""
    t0 = time.perf_counter()
    when = {"dates": dates} if "dates" in inspect.signature(fit_arrays).parameters else {}
    res = fit_arrays(obs, pixel_m=PIXEL_M, config=cfg, band_names=tuple(bands), **when)
    return res.render(SCENE_M), time.perf_counter() - t0


def best_date(obs: np.ndarray, ref: np.ndarray) -> float:
    """cPSNR of the best >= 90 % clear input date upsampled bicubically (an oracle choice)."""
    ok = [t for t in range(len(obs)) if np.isfinite(obs[t]).mean() >= 0.9]
    return max((cpsnr(bicubic_median(obs[t:t + 1], factor=FACTOR), ref) for t in ok),
               default=float("nan"))


def run_case(s: Series, season: str, held: str, n: int, *, change_m: float | None
             ) -> list[dict]:
    """Every method of one window, scored against the held-out date and the composite."""
    idx = window(s, held, n)
    h = s.dates.index(held)
    dates = [s.dates[k] for k in idx]
    seed = 100 * n + h
    obs = observe(s.data[idx], s.clear[idx], seed=seed)
    ref_date = s.data[h]
    refs = {"held_out": ref_date, "composite": composite(s, idx)}
    outs = {"bicubic_median": (bicubic_median(obs, factor=FACTOR), 0.0),
            "map_tv": (map_tv(obs, factor=FACTOR, pixel_m=PIXEL_M,
                              shifts_m=phasecorr(obs, pixel_m=PIXEL_M)), 0.0)}
    cfgs = fit_configs(held, change_m)
    for name, cfg in cfgs.items():
        same = [k for k, c in cfgs.items() if c == cfg and k in outs]  # identical: reuse
        outs[name] = outs[same[0]] if same else fit_render(obs, cfg, dates, s.bands)
    base = dict(series=s.name, season=season, held_out=held, n_dates=n,
                first=dates[0], last=dates[-1],
                masked_frac=float(np.isnan(obs).mean()))
    rows = [dict(base, method=m, seconds=sec,
                 **{f"cpsnr_{r}": cpsnr(img, ref) for r, ref in refs.items()})
            for m, (img, sec) in outs.items()]
    rows.append(dict(base, method="best_date", seconds=0.0,
                     **{f"cpsnr_{r}": best_date(obs, ref) for r, ref in refs.items()}))
    rows += ceiling(s, idx, h, dates, seed=seed, base=base)
    return rows


def ceiling(s: Series, idx: list[int], h: int, dates: list[str], *, seed: int, base: dict
            ) -> list[dict]:
    """The held-out date's texture as one static scene for every date: unmasked, masked."""
    rows = []
    static = np.repeat(s.data[h][None], len(idx), axis=0)
    for label, clear in (("ceiling", None), ("ceiling_masked", s.clear[idx])):
        obs = observe(static, clear, seed=seed)
        img, sec = fit_render(obs, FitConfig(), dates, s.bands)
        bic = cpsnr(bicubic_median(obs, factor=FACTOR), s.data[h])
        rows.append(dict(base, method=label, seconds=sec, cpsnr_held_out=cpsnr(img, s.data[h]),
                         cpsnr_composite=float("nan"), bicubic_held_out=bic))
    return rows


def run_api(quick: bool, change_m: float | None) -> list[dict]:
    """All windows (``quick``: the worldcereal ones, 7 dates only)."""
    rows = []
    for s, season, held, n in each_window(quick):
        got = run_case(s, season, held, n, change_m=change_m)
        rows += got
        print(f"{s.name} {season} N={n}: " + ", ".join(
            f"{r['method']} {r['cpsnr_held_out']:.2f}/{r['cpsnr_composite']:.2f}"
            for r in got), flush=True)
    return rows


def each_window(quick: bool):
    """(series, season, held-out date, N) of every window (``quick``: worldcereal, N = 7)."""
    cache: dict[str, Series] = {}
    for name, season, held in WINDOWS:
        if quick and name != "worldcereal":
            continue
        s = cache.setdefault(name, load_series(name))
        for n in (NS[:1] if quick else NS):
            yield s, season, held, n


def composite(s: Series, idx: list[int]) -> np.ndarray:
    """(B, H, W) per-pixel median of the clear real 10 m dates ``idx`` (all dates where none)."""
    comp = np.nanmedian(np.where(s.clear[idx][:, None], s.data[idx], np.nan), axis=0)
    return np.where(np.isfinite(comp), comp, np.median(s.data[idx], axis=0))


def gain(rows: list[dict], method: str, ref: str, base: str = "bicubic_median") -> float:
    """Mean over windows of ``method``'s cPSNR minus ``base``'s against reference ``ref``."""
    by = {}
    for r in rows:
        by.setdefault((r["series"], r["season"], r["n_dates"]), {})[r["method"]] = r
    d = [c[method][f"cpsnr_{ref}"] - (c[method]["bicubic_held_out"] if base == "own_bicubic"
                                      else c[base][f"cpsnr_{ref}"])
         for c in by.values() if method in c]
    return float(np.mean(d)) if d else float("nan")


def headline(rows: list[dict]) -> dict[str, float]:
    """The must-show means [dB over bicubic-of-median] of :func:`run_api` rows, comparable
    across runs: target fit vs the held-out date, default fit vs the composite, the fit with
    the static defaults on both, the static-scene ceiling, per series and overall."""
    out = {}
    for series in [None, *dict.fromkeys(r["series"] for r in rows)]:
        sub = [r for r in rows if series is None or r["series"] == series]
        tag = "" if series is None else f"{series}:"
        methods = set(r["method"] for r in sub)
        for m in sorted(methods - {"bicubic_median", "ceiling", "ceiling_masked"}):
            if m in methods:
                out[f"{tag}{m}_vs_held_out"] = gain(sub, m, "held_out")
                out[f"{tag}{m}_vs_composite"] = gain(sub, m, "composite")
        for m in ("ceiling", "ceiling_masked"):
            out[f"{tag}{m}_vs_truth"] = gain(sub, m, "held_out", base="own_bicubic")
    return out


def write_window(root: Path, s: Series, obs: np.ndarray, dates: list[str]) -> Path:
    """The simulated window as a stack directory (10 m grid at an arbitrary UTM origin)."""
    from rasterio.transform import Affine

    from splatsr.io.stack import write_stack

    write_stack(root, obs, crs=s.crs, transform=Affine(PIXEL_M, 0, 500000.0, 0, -PIXEL_M,
                                                       5000000.0),
                bands=s.bands, ids=[f"d{d}" for d in dates],
                datetimes=[f"{d}T10:30:00Z" for d in dates])
    return root


def cli_fit(stack: Path, out: Path, bands: list[str], *extra: str
            ) -> tuple[np.ndarray, float]:
    """``python -m splatsr fit STACK --out OUT --resolution 5 EXTRA`` -> (B, H, W) in the
    order of ``bands`` (the COG puts B04, B03, B02 first), seconds."""
    import rasterio

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "splatsr", "fit", str(stack), "--out", str(out),
                    "--resolution", str(SCENE_M), "--no-progress", *extra], check=True,
                   cwd=ROOT, capture_output=True, text=True)
    with rasterio.open(out) as src:
        img, names = src.read().astype(np.float32), list(src.descriptions)
    return img[[names.index(b) for b in bands]], time.perf_counter() - t0


def run_cli(quick: bool) -> list[dict]:
    """The two must-show commands on every window, through the real CLI."""
    rows = []
    for s, season, held, n in each_window(quick):
        idx, h = window(s, held, n), s.dates.index(held)
        dates = [s.dates[k] for k in idx]
        obs = observe(s.data[idx], s.clear[idx], seed=100 * n + h)
        comp = composite(s, idx)
        bic = bicubic_median(obs, factor=FACTOR)
        with tempfile.TemporaryDirectory() as tmp:
            st = write_window(Path(tmp) / "stack", s, obs, dates)
            tgt, t_s = cli_fit(st, Path(tmp) / "t.tif", s.bands, "--target-date", held)
            dft, d_s = cli_fit(st, Path(tmp) / "d.tif", s.bands)
        rows.append(dict(series=s.name, season=season, held_out=held, n_dates=n,
                         target_gain=cpsnr(tgt, s.data[h]) - cpsnr(bic, s.data[h]),
                         default_gain=cpsnr(dft, comp) - cpsnr(bic, comp),
                         target_s=t_s, default_s=d_s))
        print(f"CLI {s.name} {season} N={n}: target {rows[-1]['target_gain']:+.2f}, "
              f"default {rows[-1]['default_gain']:+.2f}", flush=True)
    return rows


def markdown(rows: list[dict], cli: list[dict], info: dict) -> list[str]:
    """The results page: per-window table, headline means, CLI rows, machine record."""
    methods = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("ceil")))
    md = ["| series | season | held out | N | dates | masked | ref | " + " | ".join(methods)
          + " | ceiling (bicubic) | ceiling masked (bicubic) |", "|---" * (len(methods) + 9)
          + "|"]
    for key in dict.fromkeys((r["series"], r["season"], r["n_dates"]) for r in rows):
        by = {r["method"]: r for r in rows if (r["series"], r["season"], r["n_dates"]) == key}
        r0 = next(iter(by.values()))
        for ref in ("held_out", "composite"):
            ceil = (" | ".join(f"{by[c]['cpsnr_held_out']:.2f} ({by[c]['bicubic_held_out']:.2f})"
                               for c in ("ceiling", "ceiling_masked")) if ref == "held_out"
                    else " | ")
            md.append(f"| {key[0]} | {key[1]} | {r0['held_out']} | {key[2]} | {r0['first']} … "
                      f"{r0['last']} | {r0['masked_frac']:.0%} | {ref} | "
                      + " | ".join(f"{by[m][f'cpsnr_{ref}']:.2f}" for m in methods)
                      + f" | {ceil} |")
    md += ["", "Mean gain over bicubic-of-median [dB] (all windows):", "",
           "| quantity | dB |", "|---|---|"]
    md += [f"| {k} | {v:+.2f} |" for k, v in headline(rows).items()]
    if cli:
        md += ["", "Through the CLI (`python -m splatsr fit STACK --out X.tif --resolution 5 "
               "[--target-date D]`), gain over bicubic-of-median [dB]:", "",
               "| series | season | N | target vs held-out | default vs composite | s |",
               "|---|---|---|---|---|---|"]
        md += [f"| {c['series']} | {c['season']} | {c['n_dates']} | {c['target_gain']:+.2f} | "
               f"{c['default_gain']:+.2f} | {c['target_s']:.0f} / {c['default_s']:.0f} |"
               for c in cli]
        md.append(f"| **mean** | | | **{np.mean([c['target_gain'] for c in cli]):+.2f}** | "
                  f"**{np.mean([c['default_gain'] for c in cli]):+.2f}** | |")
    md += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())]
    return md


def figure(s: Series, season: str, held: str, n: int, path: Path) -> None:
    """One window: held-out date, composite, bicubic-of-median, default and target fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx, h = window(s, held, n), s.dates.index(held)
    dates = [s.dates[k] for k in idx]
    obs = observe(s.data[idx], s.clear[idx], seed=100 * n + h)
    comp = np.nanmedian(np.where(s.clear[idx][:, None], s.data[idx], np.nan), axis=0)
    panels = {"held-out date (reference a)": s.data[h], "median composite (reference b)": comp,
              "bicubic of median": bicubic_median(obs, factor=FACTOR)}
    for name, cfg in fit_configs(held, None).items():
        panels[f"fit: {name}"] = fit_render(obs, cfg, dates, s.bands)[0]
    band = [s.bands.index("B04"), s.bands.index("B03"), s.bands.index("B02")] \
        if "B04" in s.bands else [0]
    fig, axs = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    lo, hi = np.nanpercentile(s.data[h][band], [1, 99])
    for ax, (title, img) in zip(axs, panels.items()):
        rgb = np.clip((np.moveaxis(img[band], 0, -1) - lo) / (hi - lo), 0, 1)
        ax.imshow(rgb.squeeze(), cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{s.name} {season}, {n} dates around {held} (5 m, Wald's protocol)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="default: benchmarks/results/real_series[_check|_fresh]")
    ap.add_argument("--windows", choices=["main", "check", "fresh"], default="main",
                    help="check: 6 other windows (autumn, late summer, winter); fresh: 8 "
                    "windows no choice was made on; neither draws figures")
    ap.add_argument("--quick", action="store_true", help="worldcereal, 7 dates only")
    ap.add_argument("--cli", action="store_true", help="also the must-show commands via the CLI")
    ap.add_argument("--change-m", type=float, default=60.0, help="change layer cell (0 = none)")
    ap.add_argument("--compare", help="headline JSON of an earlier run")
    ap.add_argument("--extra", default="{}", help="JSON: more fits, name -> FitConfig fields "
                    "(\"target_date\": \"held\" = the held-out date)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--figures", default=str(ROOT / "docs"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    EXTRA.update(json.loads(a.extra))
    if a.windows != "main":
        WINDOWS[:] = CHECK_WINDOWS if a.windows == "check" else FRESH_WINDOWS
        a.no_figures = True
    out = Path(a.out or RESULTS / ("real_series" + ("" if a.windows == "main"
                                                    else "_" + a.windows)))
    out.mkdir(parents=True, exist_ok=True)
    rows = run_api(a.quick, a.change_m or None)
    cli = run_cli(a.quick) if a.cli else []
    head = headline(rows)
    if a.compare:
        old = json.loads(Path(a.compare).read_text())
        for k, v in head.items():
            print(f"{k}: {old.get(k, float('nan')):+.2f} -> {v:+.2f}")
    info = machine()
    (out / "headline.json").write_text(json.dumps(head, indent=1) + "\n")
    (out / "rows.json").write_text(json.dumps(dict(rows=rows, cli=cli, machine=info), indent=1))
    (out / "real_series.md").write_text("\n".join(markdown(rows, cli, info)) + "\n")
    figs = Path(a.figures)
    for name, season, held in ([] if a.no_figures else WINDOWS[:2]):
        figure(load_series(name), season, held, NS[0], figs / f"real_series_{season}.png")
    print("\n".join(markdown(rows, cli, info)))


if __name__ == "__main__":
    main()
