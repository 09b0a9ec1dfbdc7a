"""This acquisition, sharper: the observed-date and every-date products on real series.

One command (from the repository root)::

    python benchmarks/date_products.py [--windows tune|report|all] [--out DIR] [--figure]

Protocol (Wald, as :mod:`real_series`): every real 10 m date is read as the scene at 5 m and
observed by a simulated 10 m sensor (shift N(0, 1.5 m), PSF 4 m, 2 x 2 integration, noise
0.002), masked by its own real cloud mask. Unlike :mod:`real_series`, the asked date ``D`` is
**in** the stack: a window is the N clear-enough dates nearest to ``D``, ``D`` included.
Every product is scored per band with cPSNR against that date's real image, as a gain over
bicubic of the date's *own* simulated 10 m observation (do no harm: a gain below 0 is a
defect to explain):

* ``target``: ``fit(target_date=D)``, the observed-date product (D's own observation sets its
  10 m-scale content; averaged with the same date's scene from the season's fit);
  ``target_alone``: the same with ``season_blend=False`` (the time-weighted fit's observed
  scene alone); ``target_before``: with ``observed_date=False`` (the time-weighted scene,
  what ``--target-date`` gave before); the time of ``target`` over a default fit;
* ``series``: ``splatsr.fit_series`` (fits of segments of consecutive dates), every date's
  scene; the dates scored are those >= 90 % clear that their fit did not judge outliers
  (weight >= 0.25); its time (fits and every render) against a default fit of the same
  stack and its render; ``season_blend``: each date's scene averaged with its scene from
  the default fit (an experiment: not what ``fit_series`` gives);
* ``ceiling``: the same window with every date replaced by D's texture (one static scene).

Windows: ``tune`` are the windows the choices of :mod:`splatsr.core.products.observed` were made on;
``report`` were not looked at before the choices were frozen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine  # noqa: E402
from baselines import bicubic_median  # noqa: E402
from real_series import FACTOR, MIN_CLEAR, PIXEL_M, SCENE_M, Series, load_series, observe  # noqa: E402,E501

from splatsr.core.products.series import fit_segments, plan_from_data  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402
from splatsr.evaluate.metrics import cpsnr  # noqa: E402
from splatsr.pipeline import OUTLIER_WEIGHT  # noqa: E402
from splatsr.workflow import StackFit  # noqa: E402

CLEAR = 0.9  # a date is scored in the series when this share of its pixels is valid
UNMASKED_CLOUD = "2018-11-12"  # worldcereal: a cloud the SCL called clear (an outlier)
CLOUD_PX = 11  # --centred --cloud: the western third of D (10 m px) is masked
# (series, season, asked date D, N dates in the window, D included)
TUNE = [("worldcereal", "spring", "2019-04-16", 8), ("worldcereal", "autumn", "2018-10-13", 12),
        ("worldcereal", "summer", "2019-07-05", 10)]
REPORT = [("worldcereal", "winter", "2019-02-25", 10), ("worldcereal", "lspring", "2019-05-16", 14),
          ("worldcereal", "eautumn", "2018-09-18", 9), ("worldcereal", "lsummer", "2019-08-24", 12),
          ("eolearn_ndvi", "spring", "2017-04-21", 10), ("eolearn_ndvi", "winter", "2016-01-07", 10),
          ("eolearn_ndvi", "summer", "2016-08-14", 12), ("eolearn_ndvi", "autumn", "2017-10-13", 8)]


def window_with(s: Series, asked: str, n: int) -> list[int]:
    """Indices of the n dates nearest to ``asked`` (itself included), >= MIN_CLEAR clear."""
    day = np.array(s.dates, dtype="datetime64[D]")
    h = s.dates.index(asked)
    ok = [k for k in range(len(day)) if s.clear[k].mean() >= MIN_CLEAR or k == h]
    return sorted(sorted(ok, key=lambda k: abs(int((day[k] - day[h]).astype(int))))[:n])


def band_gains(img: np.ndarray, ref: np.ndarray, own: np.ndarray) -> list[float]:
    """Per band: cPSNR of ``img`` minus that of bicubic of ``own`` (B, h, w), against ``ref``."""
    bic = bicubic_median(own[None], factor=FACTOR)
    return [cpsnr(img[b:b + 1], ref[b:b + 1]) - cpsnr(bic[b:b + 1], ref[b:b + 1])
            for b in range(len(ref))]


def fit(obs: np.ndarray, dates: list[str], bands: list[str], **cfg) -> tuple[StackFit, float]:
    """A fit in memory as :func:`splatsr.fit` would make it, and its seconds."""
    t0 = time.perf_counter()
    res = fit_arrays(obs, pixel_m=PIXEL_M, config=FitConfig(**cfg), band_names=tuple(bands),
                     dates=dates)
    sec = time.perf_counter() - t0
    out = StackFit(**{k: getattr(res, k) for k in res.__dataclass_fields__})
    out.data = obs
    return out, sec


def run_window(s: Series, season: str, asked: str, n: int) -> dict:
    """Every product of one window: per-band gains, per-date series gains, times."""
    idx = window_with(s, asked, n)
    h, dates = s.dates.index(asked), [s.dates[k] for k in idx]
    t = idx.index(h)
    obs = observe(s.data[idx], s.clear[idx], seed=100 * n + h)
    row = dict(series=s.name, season=season, asked=asked, n_dates=n, first=dates[0],
               last=dates[-1], clear=float(np.isfinite(obs[t]).mean()))
    for name, cfg in (("target", {}), ("target_alone", {"season_blend": False}),
                      ("target_before", {"observed_date": False})):
        res, sec = fit(obs, dates, s.bands, target_date=asked, **cfg)
        row[name] = band_gains(res.render(SCENE_M), s.data[h], obs[t])
        row[f"{name}_s"] = sec
    shared, fit_s = fit(obs, dates, s.bands)  # the default fit: the time reference
    t0 = time.perf_counter()
    plan = plan_from_data(obs, pixel_m=PIXEL_M, config=FitConfig(), dates=dates)
    segments = fit_segments(obs, pixel_m=PIXEL_M, plan=plan, dates=dates,
                            band_names=tuple(s.bands))
    images = [next(g for g in segments if g.renders(k)).scene(obs, k, SCENE_M)
              for k in range(len(idx))]  # every date's scene: the product
    series_s = time.perf_counter() - t0
    per_date = []
    for k, img in enumerate(images):
        seg = next(g for g in segments if g.renders(k))
        clear = float(np.isfinite(obs[k]).mean())
        weight = float(seg.fit.obs_weights[seg.index_of(k)])
        blend = 0.5 * (img + shared.render_date(k, SCENE_M))  # with the season's fit
        per_date.append(dict(date=dates[k], clear=clear, weight=weight,
                             scored=bool(clear >= CLEAR and weight >= OUTLIER_WEIGHT),
                             gains=band_gains(img, s.data[idx[k]], obs[k]),
                             season_blend=band_gains(blend, s.data[idx[k]], obs[k])))
    row.update(series_dates=per_date, series_fit_s=fit_s, segments=len(segments),
               series_s=series_s, default_render_s=_timed(lambda: shared.render(SCENE_M)))
    static = observe(np.repeat(s.data[h][None], len(idx), axis=0), s.clear[idx], seed=100 * n + h)
    res, _ = fit(static, dates, s.bands, target_date=asked)
    row["ceiling"] = band_gains(res.render(SCENE_M), s.data[h], static[t])
    return row


def centred_windows(s: Series) -> dict[str, list[tuple[str, int]]]:
    """Windows centred on every clear date of ``s`` (>= 90 % valid, not the cloud the SCL
    called clear), N = 8, 10, 12 in turn: set ``A`` (every other one, where the own window
    was chosen) and ``B`` (the rest)."""
    clear = s.clear.reshape(len(s.dates), -1).mean(axis=1)
    wins = [(s.dates[k], (8, 10, 12)[j % 3]) for j, k in enumerate(
        k for k in range(len(s.dates)) if clear[k] >= CLEAR and s.dates[k] != UNMASKED_CLOUD)]
    return {"A": wins[0::2], "B": wins[1::2]}


def centred_row(s: Series, asked: str, n: int, *, cloud: bool, **cfg) -> dict:
    """``fit(target_date=D)`` on a window centred on D, per band against bicubic of D; with
    ``cloud`` the western third of D is masked and the PSNR inside (the cloud less 5 m of
    its edge) and outside (beyond 30 m of it) is reported instead."""
    idx = window_with(s, asked, n)
    h, dates = s.dates.index(asked), [s.dates[k] for k in idx]
    t = idx.index(h)
    obs = observe(s.data[idx], s.clear[idx], seed=7 + 100 * n + h)
    if cloud:
        obs[t][:, :, :CLOUD_PX] = np.nan
    res, sec = fit(obs, dates, s.bands, target_date=asked, **cfg)
    img, ref = res.render(SCENE_M), s.data[h]
    row = dict(asked=asked, n_dates=n, seconds=sec)
    if not cloud:
        return dict(row, gains=band_gains(img, ref, obs[t]))
    inside = (slice(None), slice(None), slice(FACTOR, FACTOR * CLOUD_PX - FACTOR))
    outside = (slice(None), slice(None), slice(FACTOR * (CLOUD_PX + 3), None))
    return dict(row, inside_db=psnr_db(img[inside], ref[inside]),
                outside_db=psnr_db(img[outside], ref[outside]))


def psnr_db(img: np.ndarray, ref: np.ndarray) -> float:
    """Mean over bands of the PSNR (data range 1) of ``img`` against ``ref`` (B, h, w)."""
    return float(np.mean([10 * np.log10(1.0 / np.mean((i - r) ** 2)) for i, r in zip(img, ref)]))


def centred_markdown(rows: dict[str, list[dict]], *, cloud: bool) -> list[str]:
    """Per set: mean gain, worst band-scene and band-scenes below -0.2 dB (or the PSNR
    inside and outside the cloud)."""
    md = []
    for label, part in rows.items():
        if cloud:
            md.append(f"| {label} | {len(part)} | {np.mean([r['inside_db'] for r in part]):.2f} | "
                      f"{np.mean([r['outside_db'] for r in part]):.2f} |")
            continue
        g = np.array([r["gains"] for r in part])
        md.append(f"| {label} | {len(part)} | {g.mean():+.3f} | {g.min():+.2f} | "
                  f"{int((g < -0.2).sum())} of {g.size} |")
    head = ("| set | windows | PSNR inside the cloud | outside |" if cloud else
            "| set | windows | mean gain over D's bicubic | worst band | below -0.2 dB |")
    return [head, "|" + "---|" * (head.count("|") - 1)] + md


def field_window(s: Series, season: str, asked: str, n: int) -> dict:
    """opensr-test's metrics (``[eval]`` extra) of the target product, the time-weighted
    one and bicubic of D's own observation, against the real date D (2 px border)."""
    from field_metrics import score_against

    idx = window_with(s, asked, n)
    h, dates = s.dates.index(asked), [s.dates[k] for k in idx]
    t = idx.index(h)
    obs = observe(s.data[idx], s.clear[idx], seed=100 * n + h)
    kw = dict(scale=FACTOR, bands=s.bands, index=s.name == "eolearn_ndvi")
    imgs = {"bicubic": bicubic_median(obs[t:t + 1], factor=FACTOR)}
    for name, cfg in (("target", {}), ("target_before", {"observed_date": False})):
        imgs[name] = fit(obs, dates, s.bands, target_date=asked, **cfg)[0].render(SCENE_M)
    return dict(series=s.name, season=season, asked=asked, n_dates=n,
                **{k: dict(score_against(s.data[h], img, obs[t], **kw),
                           cpsnr=cpsnr(img, s.data[h])) for k, img in imgs.items()})


def field_markdown(rows: list[dict]) -> list[str]:
    """The opensr-test table: improvement / omission / hallucination per product."""
    keys = ("improvement", "omission", "hallucination", "consistency_reflectance", "cpsnr")
    md = ["| window | D | product | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for r in rows:
        for prod in ("target", "target_before", "bicubic"):
            md.append(f"| {r['series']} {r['season']} | {r['asked']} | {prod} | "
                      + " | ".join(f"{r[prod][k]:.3f}" for k in keys) + " |")
    for prod in ("target", "target_before", "bicubic"):
        md.append(f"| **mean** | | {prod} | " + " | ".join(
            f"{np.mean([r[prod][k] for r in rows]):.3f}" for k in keys) + " |")
    return md


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def summary(rows: list[dict]) -> dict[str, float]:
    """The must-show figures: means, worst band-scene, worst series date, time ratio."""
    out = {}
    for name in ("target", "target_alone", "target_before", "ceiling"):
        if not all(name in r for r in rows):
            continue
        flat = np.concatenate([np.ravel(r[name]) for r in rows])  # every band-scene
        out[f"{name}_mean"] = float(np.mean([np.mean(r[name]) for r in rows]))
        out[f"{name}_worst_band"] = float(flat.min())
        out[f"{name}_below_-0.2"] = int((flat < -0.2).sum())
    scored = [np.mean(d["gains"]) for r in rows for d in r["series_dates"] if d["scored"]]
    blend = [np.mean(d["season_blend"]) for r in rows for d in r["series_dates"]
             if d["scored"] and "season_blend" in d]
    if blend:
        out["series_season_blend_mean"] = float(np.mean(blend))
        out["series_season_blend_worst_date"] = float(np.min(blend))
    out["target_time_ratio"] = float(np.mean([r["target_s"] / r["series_fit_s"] for r in rows]))
    out["series_mean"] = float(np.mean(scored)) if scored else float("nan")
    out["series_worst_date"] = float(np.min(scored)) if scored else float("nan")
    out["series_dates_scored"] = len(scored)
    out["series_time_ratio"] = float(np.mean([r["series_s"]
                                              / (r["series_fit_s"] + r["default_render_s"])
                                              for r in rows]))
    return out


def markdown(rows: list[dict], info: dict) -> list[str]:
    """The results page: per window, per band; the series per date; the summary."""
    md = ["| series | season | D | N | D clear | target (per band) | alone | before | ceiling | "
          "series dates scored: mean (worst) | time series / default (segments) |",
          "|---" * 11 + "|"]
    for r in rows:
        sc = [np.mean(d["gains"]) for d in r["series_dates"] if d["scored"]]
        fmt = lambda v: " ".join(f"{x:+.2f}" for x in v)  # noqa: E731
        md.append(f"| {r['series']} | {r['season']} | {r['asked']} | {r['n_dates']} | "
                  f"{r['clear']:.0%} | {fmt(r['target'])} | "
                  f"{np.mean(r.get('target_alone', np.nan)):+.2f} | "
                  f"{np.mean(r['target_before']):+.2f} "
                  f"| {np.mean(r['ceiling']):+.2f} | "
                  f"{np.mean(sc) if sc else float('nan'):+.2f} "
                  f"({np.min(sc) if sc else float('nan'):+.2f}, {len(sc)}) | "
                  f"{r['series_s'] / (r['series_fit_s'] + r['default_render_s']):.2f} "
                  f"({r['segments']}) |")
    md += ["", "| quantity | value |", "|---|---|"]
    md += [f"| {k} | {v:+.2f} |" if isinstance(v, float) else f"| {k} | {v} |"
           for k, v in summary(rows).items()]
    md += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())]
    return md


def figure(s: Series, season: str, asked: str, n: int, path: Path) -> None:
    """The real date, bicubic of its observation, the product before and now, and the
    difference of the real date to the other dates' median (where a field changed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = window_with(s, asked, n)
    h, dates = s.dates.index(asked), [s.dates[k] for k in idx]
    t = idx.index(h)
    obs = observe(s.data[idx], s.clear[idx], seed=100 * n + h)
    now, _ = fit(obs, dates, s.bands, target_date=asked)
    before, _ = fit(obs, dates, s.bands, target_date=asked, observed_date=False)
    others = np.nanmedian(np.where(s.clear[idx][:, None], s.data[idx], np.nan)[
        [k for k in range(len(idx)) if k != t]], axis=0)
    band = [s.bands.index(b) for b in ("B04", "B03", "B02")] if "B04" in s.bands else [0]
    panels = {f"real date {asked}": s.data[h],
              "bicubic of its 10 m look": bicubic_median(obs[t:t + 1], factor=FACTOR),
              "before: time-weighted": before.render(SCENE_M),
              "now: observed-date product": now.render(SCENE_M)}
    fig, axs = plt.subplots(1, len(panels) + 1, figsize=(3 * (len(panels) + 1), 3.3))
    lo, hi = np.nanpercentile(s.data[h][band], [1, 99])
    for ax, (title, img) in zip(axs, panels.items()):
        ax.imshow(np.clip((np.moveaxis(img[band], 0, -1) - lo) / (hi - lo), 0, 1).squeeze(),
                  cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    change = np.abs(s.data[h] - others).mean(0)
    axs[-1].imshow(change, cmap="magma", interpolation="nearest")
    axs[-1].set_title("|real date - median of the others|", fontsize=8)
    axs[-1].axis("off")
    fig.suptitle(f"{s.name} {season}: {n} dates with {asked} in the stack (5 m, Wald)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", choices=["tune", "report", "all"], default="all")
    ap.add_argument("--out", default=str(RESULTS / "date_products"))
    ap.add_argument("--figure", action="store_true", help="also docs/date_products_*.png")
    ap.add_argument("--opensr", action="store_true", help="only opensr-test's metrics of the "
                    "target product and bicubic (needs the [eval] extra): field.md")
    ap.add_argument("--centred", action="store_true", help="only the target product on "
                    "windows centred on every clear worldcereal date: centred.md")
    ap.add_argument("--cloud", action="store_true", help="with --centred: the western third "
                    "of D masked, PSNR inside and outside it: centred_cloud.md")
    ap.add_argument("--own-window-days", type=float, default=FitConfig.own_window_days,
                    help="with --centred: FitConfig.own_window_days (10 = as before it)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    chosen = {"tune": TUNE, "report": REPORT, "all": TUNE + REPORT}[a.windows]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[str, Series] = {}
    if a.centred:
        s = load_series("worldcereal")
        rows = {k: [] for k in ("A", "B")}
        for label, wins in centred_windows(s).items():
            for asked, n in wins:
                rows[label].append(centred_row(s, asked, n, cloud=a.cloud,
                                               own_window_days=a.own_window_days))
                print(label, rows[label][-1], flush=True)
        name = "centred_cloud" if a.cloud else "centred"
        md = centred_markdown(rows, cloud=a.cloud) + ["", f"own_window_days "
                                                     f"{a.own_window_days:g}. Machine: " +
                                                     ", ".join(f"{k} {v}" for k, v in
                                                               machine().items())]
        (out / f"{name}.json").write_text(json.dumps(rows, indent=1))
        (out / f"{name}.md").write_text("\n".join(md) + "\n")
        print("\n".join(md))
        return
    if a.opensr:
        rows = [field_window(cache.setdefault(w[0], load_series(w[0])), *w[1:])
                for w in chosen]
        md = field_markdown(rows) + ["", "Machine: " + ", ".join(
            f"{k} {v}" for k, v in machine().items())]
        (out / "field.json").write_text(json.dumps(rows, indent=1))
        (out / "field.md").write_text("\n".join(md) + "\n")
        print("\n".join(md))
        return
    rows = []
    for name, season, asked, n in chosen:
        s = cache.setdefault(name, load_series(name))
        rows.append(dict(run_window(s, season, asked, n), set="tune" if (name, season, asked, n)
                         in TUNE else "report"))
        print("\n".join(markdown(rows[-1:], {})[2:3]), flush=True)
        (out / "rows.json").write_text(json.dumps(rows, indent=1))  # kept as it goes
    info = machine()
    md = []
    for label in ("tune", "report"):
        part = [r for r in rows if r["set"] == label]
        if part:
            md += [f"## {label} windows", ""] + markdown(part, info) + [""]
    (out / "date_products.md").write_text("\n".join(md))
    (out / "summary.json").write_text(json.dumps(
        {k: summary([r for r in rows if r["set"] == k]) for k in ("tune", "report")
         if any(r["set"] == k for r in rows)}, indent=1))
    if a.figure:
        for name, season, asked, n in TUNE[1:2] + REPORT[:1]:
            figure(cache.setdefault(name, load_series(name)), season, asked, n,
                   ROOT / "docs" / f"date_products_{season}.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
