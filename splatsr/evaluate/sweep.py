"""Sweeps of the settings that matter: PSF width, number of observations, splat spacing.

One fit per setting (the full grid of the values given). Every fit starts from the
phase-correlation shifts (:func:`splatsr.evaluate.registration.phasecorr_seed`), like the
source's sweep, and each row reports:

``psf_sigma_m, n_obs, splat_spacing_m``
    The setting.
``misfit_rms``
    RMS of the residuals over the fitted observations (reflectance).
``heldout_error``
    Error predicting one observation that no fit sees (reflectance; robust RMS, i.e.
    1.4826 x the median absolute error, from :func:`splatsr.core.psf.heldout_error`: the
    observation's shift searched with the scene fixed, a per-band gain and offset fitted).
    The held-out observation is the same for every row (the stack's middle one), so rows are
    comparable; the ``n_obs`` observations are drawn from the others. A scene that fits
    noise or invents detail predicts an unseen date worse, which the misfit alone cannot
    show.
``shift_from_seed_m``
    Mean distance of the fitted shifts from their phase-correlation seed.
``seconds``
    Wall time of the fit.
``grad_rms``
    RMS of the reconstruction's gradient at 5 m (per metre): a sharpness / artifact proxy.
``psnr_db, ssim, fine_error``
    Against the truth (simulated stacks), both at 5 m: the truth block-averaged, the
    reconstruction integrated over 5 m pixels, registered to the truth by phase correlation
    (a subset's shifts are mean-zero over that subset, which moves the scene's frame) and
    compared on the interior (a 20 m border is left out). ``fine_error`` is the fine-scale
    part of the error relative to the truth's fine-scale detail (see :func:`truth_scores`;
    lower is better).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.registration import phase_cross_correlation

from splatsr.core.checks import integer_ratio
from splatsr.core.psf import heldout_error
from splatsr.core.solver import FitConfig, FitResult, fit_arrays
from splatsr.core.products.uncertainty import sigma_map
from splatsr.errors import ConfigError, StackError
from splatsr.evaluate.registration import phasecorr_seed, shift_from_seed_m
from splatsr.io.atomic import write_text_atomic
from splatsr.io.stack import Stack, read_stack
from splatsr.io.text import format_cell

COMPARE_M = 5.0  # resolution of the truth comparison
BORDER_M = 20.0  # left out of the truth comparison on every side
FINE_SIGMA_M = 10.0  # low-pass that separates "fine-scale" content (below ~10 m) in scores
COLUMNS = ("psf_sigma_m", "n_obs", "splat_spacing_m", "misfit_rms", "heldout_error",
           "shift_from_seed_m", "seconds", "grad_rms", "psnr_db", "ssim", "fine_error",
           "median_sigma")


def subset_indices(n_available: int, n: int, *, how: str = "even") -> np.ndarray:
    """Indices of ``n`` of ``n_available`` observations: evenly spaced or the first ``n``."""
    if n < 1 or n > n_available:
        raise ConfigError(f"cannot pick {n} of {n_available} observations")
    if how == "first":
        return np.arange(n)
    if how != "even":
        raise ConfigError(f"subset must be 'even' or 'first', got {how!r}")
    return np.unique(np.round(np.linspace(0, n_available - 1, n)).astype(int))


def run_sweep(stack: Stack | str | os.PathLike, *, psf_sigmas: Sequence[float],
              n_obs: Sequence[int] | None = None,
              splat_spacings: Sequence[float] | None = None,
              out_dir: str | os.PathLike, config: FitConfig | None = None,
              truth: str | os.PathLike | None = None, holdout: bool = True,
              subset: str = "even", figures: bool = True) -> list[dict[str, Any]]:
    """Fit every combination of the settings and tabulate what each fit achieves.

    Parameters
    ----------
    stack
        A stack directory or :class:`Stack`.
    psf_sigmas, splat_spacings
        PSF widths and splat spacings (m) to fit with; default spacing: that of ``config``.
    n_obs
        Numbers of observations to fit (subsets, see ``subset``); default: all available
        (every observation but the held-out one). Larger values are skipped (listed in
        ``sweep.md``, never in the returned rows).
    out_dir
        Folder for ``sweep.csv``, ``sweep.md`` and the figures (created).
    config
        The other solver settings (iterations, TV, ...); default :class:`FitConfig()`.
    truth
        A truth GeoTIFF to score against; default: the simulated stack's ``truth.tif``
        when ``stack.json`` records one, else no truth.
    holdout
        Keep one observation out of every fit and report how well each fit predicts it.
    subset
        ``"even"`` (evenly spaced in time) or ``"first"`` (the first ``n``).
    figures
        Write the PNG figures.

    Returns
    -------
    list of dict
        One row per fitted setting, keys :data:`COLUMNS` (NaN where not applicable).

    Raises
    ------
    ConfigError
        If a list is empty, a value is out of range, or no ``n_obs`` value fits the stack.
    """
    stack = stack if isinstance(stack, Stack) else read_stack(stack)
    cfg = config or FitConfig()
    psfs, spacings = _check_settings(psf_sigmas, n_obs, splat_spacings, cfg)
    data = stack.load()
    held, pool = _holdout(data.shape[0], holdout)
    usable, skipped = _usable_n_obs(n_obs, len(pool), holdout)
    truth_img = truth_at(stack, truth)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = [(pool[subset_indices(len(pool), n, how=subset)], _scaled(cfg, psf, spacing))
                for psf, n, spacing in itertools.product(psfs, usable, spacings)]
    recons = _fit_settings(stack, data, settings, held=held, truth=truth_img)
    rows = [row for row, _ in recons]
    write_sweep_tables(rows, out, skipped=skipped, held_id=None if held is None
                       else stack.observations[held].id, truth=truth_img is not None)
    if figures:
        _figures(rows, recons, out, truth=truth_img, data=data[pool], pixel_m=stack.pixel_m)
    return rows


def _figures(rows: list[dict[str, Any]], recons: list[tuple[dict[str, Any], np.ndarray]],
             out: Path, *, truth: np.ndarray | None, data: np.ndarray, pixel_m: float) -> None:
    """The sweep's figures; with a truth, beside a bicubic baseline of the fitted ``data``."""
    from splatsr.evaluate.report import plot_sweep

    bicubic = None if truth is None else bicubic_baseline(data, np.arange(len(data)), pixel_m)
    plot_sweep(rows, recons, out, truth=truth, bicubic=bicubic)


def _scaled(cfg: FitConfig, psf_sigma_m: float, spacing_m: float) -> FitConfig:
    """``cfg`` with this PSF width for every band and this splat spacing (a set splat width
    scales with it)."""
    return replace(cfg, psf_sigma_m=float(psf_sigma_m), band_psf_sigma_m=None,
                   splat_spacing_m=float(spacing_m),
                   splat_sigma_m=None if cfg.splat_sigma_m is None
                   else cfg.splat_sigma_m * spacing_m / cfg.splat_spacing_m)


def _fit_settings(stack: Stack, data: np.ndarray,
                  settings: Sequence[tuple[np.ndarray, FitConfig]], *, held: int | None,
                  truth: np.ndarray | None) -> list[tuple[dict[str, Any], np.ndarray]]:
    """One fit per (observation indices, config), each seeded by phase correlation."""
    seed_all = phasecorr_seed(data, pixel_m=stack.pixel_m)
    return [_fit_setting(stack, data, idx, seed_all, c, held=held, truth=truth)
            for idx, c in settings]


def _check_settings(psf_sigmas: Sequence[float], n_obs: Sequence[int] | None,
                    splat_spacings: Sequence[float] | None, cfg: FitConfig
                    ) -> tuple[list[float], list[float]]:
    """The PSF widths and splat spacings to sweep, after checking every list and value."""
    spacings = list(splat_spacings) if splat_spacings else [cfg.splat_spacing_m]
    psfs = list(psf_sigmas)
    if not psfs or (n_obs is not None and not list(n_obs)) or not spacings:
        raise ConfigError("psf_sigmas, n_obs and splat_spacings need at least one value each")
    if any(s < 0 for s in psfs) or any(s <= 0 for s in spacings):
        raise ConfigError("PSF sigmas must be >= 0 and splat spacings > 0")
    return psfs, spacings


def _holdout(T: int, holdout: bool) -> tuple[int | None, np.ndarray]:
    """The held-out observation (the middle one, or None) and the indices fits draw from."""
    held = T // 2 if holdout else None
    if holdout and T < 3:
        raise StackError(f"a held-out observation needs at least 3 observations, the stack "
                         f"has {T}; sweep without a held-out one (holdout=False, --no-holdout)")
    return held, np.array([t for t in range(T) if t != held])


def _usable_n_obs(n_obs: Sequence[int] | None, available: int, holdout: bool
                  ) -> tuple[list[int], list[int]]:
    """The ``n_obs`` values that fit ``available`` observations, and the skipped ones."""
    n_obs = [available] if n_obs is None else list(n_obs)
    usable = sorted({int(n) for n in n_obs if 2 <= n <= available})
    skipped = sorted({int(n) for n in n_obs} - set(usable))
    if not usable:
        raise ConfigError(f"no n_obs value in {list(n_obs)} fits: between 2 and {available} "
                          f"observations are available{' (one is held out)' if holdout else ''}")
    return usable, skipped


def _fit_setting(stack: Stack, data: np.ndarray, idx: np.ndarray, seed_all: np.ndarray,
                 config: FitConfig, *, held: int | None, truth: np.ndarray | None
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """Fit observations ``idx`` with ``config``: the sweep row and the 5 m rendering."""
    seed = seed_all[idx] - seed_all[idx].mean(0)
    dates = [stack.observations[i].datetime for i in idx]
    res = fit_arrays(data[idx], pixel_m=stack.pixel_m, config=config, band_names=stack.bands,
                     init_shifts_m=seed, dates=dates)
    img = res.render(COMPARE_M)
    row: dict[str, Any] = dict(psf_sigma_m=float(config.psf_sigma_m), n_obs=len(idx),
                               splat_spacing_m=float(config.splat_spacing_m),
                               misfit_rms=_rms(res.predict() - data[idx]),
                               heldout_error=math.nan,
                               shift_from_seed_m=shift_from_seed_m(res.shifts_m, seed),
                               seconds=res.seconds, grad_rms=grad_rms(img, COMPARE_M),
                               psnr_db=math.nan, ssim=math.nan, fine_error=math.nan,
                               median_sigma=median_sigma(res, data[idx]))
    if held is not None:
        row["heldout_error"] = heldout_error(res, data[held])[0]
    if truth is not None:
        row.update(truth_scores(img, truth))
    return row, img


def median_sigma(result: FitResult, data: np.ndarray) -> float:
    """Median of the fit's 1-sigma map at :data:`COMPARE_M` (all bands)."""
    sigma = sigma_map(result, data, resolution_m=COMPARE_M)
    return float(np.nanmedian(sigma))


def _rms(r: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.sqrt(np.nanmean(np.square(r))))


def grad_rms(img: np.ndarray, pixel_m: float) -> float:
    """RMS gradient magnitude (reflectance per metre) of (B, H, W), averaged over bands."""
    gy, gx = np.gradient(np.asarray(img, np.float64), pixel_m, axis=(1, 2))
    return float(np.sqrt(np.nanmean(gx * gx + gy * gy)))


def truth_at(stack: Stack, truth: str | os.PathLike | None) -> np.ndarray | None:
    """The truth (B, H, W) block-averaged to :data:`COMPARE_M`, or None if none is known.

    ``truth`` is a GeoTIFF path; None means the simulated stack's own ``truth.tif``.
    """
    from splatsr.evaluate.simulate import read_truth

    if truth is None:
        name = (stack.meta.get("simulation") or {}).get("truth")
        if not name or not (stack.root / name).is_file():
            return None
        truth = stack.root / name
    arr, px, _, _, _ = read_truth(truth)
    f = integer_ratio(COMPARE_M, px, what="the comparison pixel / the truth pixel")
    B, H, W = arr.shape
    expect = (stack.height * stack.pixel_m / COMPARE_M, stack.width * stack.pixel_m / COMPARE_M)
    if (H // f, W // f) != expect or len(stack.bands) != B:
        raise ConfigError(f"truth {W}x{H} px at {px} m ({B} bands) does not cover the stack")
    return arr.reshape(B, H // f, f, W // f, f).mean(axis=(2, 4))


def truth_scores(img: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and fine-scale error of ``img`` against ``truth`` (both (B, H, W) at 5 m).

    ``img`` is first registered to ``truth`` by phase correlation (sub-pixel, spline shift);
    a :data:`BORDER_M` border is left out; the data range is the truth's.

    Returns
    -------
    dict
        ``psnr_db``, ``ssim`` and ``fine_error``: the RMS of the error's fine-scale part
        (what a Gaussian low-pass of :data:`FINE_SIGMA_M` removes) relative to the RMS of the
        truth's fine-scale part. An image with no fine detail at all scores 1; lower is
        better (bicubic of 10 m data scores about 0.7); a rise means wrong fine-scale
        content (noise fitted as structure, ringing).
    """
    b = int(round(BORDER_M / COMPARE_M))
    shift, _, _ = phase_cross_correlation(truth.mean(0), img.mean(0), upsample_factor=100,
                                          normalization=None)
    moved = np.stack([ndimage.shift(band, shift, order=3, mode="nearest") for band in img])
    t, m = truth[:, b:-b, b:-b], moved[:, b:-b, b:-b]
    rng = float(t.max() - t.min()) or 1.0
    psnr = peak_signal_noise_ratio(t, m, data_range=rng)
    ssim = float(np.mean([structural_similarity(t[i], m[i], data_range=rng)
                          for i in range(t.shape[0])]))

    def fine(x: np.ndarray) -> np.ndarray:
        s = FINE_SIGMA_M / COMPARE_M
        return x - ndimage.gaussian_filter(x, (0, s, s), mode="nearest")

    fine_t = float(np.sqrt(np.mean(fine(t) ** 2))) or 1.0
    return dict(psnr_db=float(psnr), ssim=ssim,
                fine_error=float(np.sqrt(np.mean(fine(m - t) ** 2))) / fine_t)


def bicubic_baseline(data: np.ndarray, idx: np.ndarray, pixel_m: float) -> np.ndarray:
    """Bicubic upsampling of the median composite to :data:`COMPARE_M` (a baseline)."""
    from skimage.transform import resize

    with np.errstate(invalid="ignore"):
        comp = np.nan_to_num(np.nanmedian(data[idx], axis=0))
    f = pixel_m / COMPARE_M
    B, H, W = comp.shape
    return resize(comp, (B, round(H * f), round(W * f)), order=3, mode="edge",
                  anti_aliasing=False)


def write_sweep_tables(rows: list[dict[str, Any]], out_dir: str | os.PathLike, *,
                       skipped: Sequence[int] = (), held_id: str | None = None,
                       truth: bool = False) -> tuple[Path, Path]:
    """Write ``sweep.csv`` and ``sweep.md`` (atomically) into ``out_dir``."""
    out = Path(out_dir)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(COLUMNS)
    for r in rows:
        wr.writerow([format_cell(r[c]) for c in COLUMNS])
    write_text_atomic(out / "sweep.csv", buf.getvalue())
    heads = ["PSF σ (m)", "N obs", "spacing (m)", "misfit RMS", "held-out error",
             "shift from seed (m)", "time (s)", "grad RMS (1/m)", "PSNR (dB)", "SSIM",
             "fine error", "median σ"]
    fmts = ["{:g}", "{:d}", "{:g}", "{:.5f}", "{:.5f}", "{:.2f}", "{:.1f}", "{:.2e}",
            "{:.2f}", "{:.3f}", "{:.3f}", "{:.4f}"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        cells = ["–" if isinstance(r[c], float) and math.isnan(r[c]) else f.format(r[c])
                 for c, f in zip(COLUMNS, fmts)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if held_id is not None:
        notes.append(f"Held-out observation (never fitted): `{held_id}`.")
    if not truth:
        notes.append("No truth known: PSNR/SSIM are empty.")
    notes.append("median σ: median of the per-pixel 1-sigma uncertainty at "
                 f"{COMPARE_M:g} m (reflectance; what `splatsr fit --uncertainty` writes).")
    if skipped:
        notes.append(f"Skipped n_obs {', '.join(map(str, skipped))}: more than the "
                     "observations available (or fewer than 2).")
    text = "# splatsr sweep\n\n" + "\n".join(lines) + "\n" + \
        ("\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")
    write_text_atomic(out / "sweep.md", text)
    return out / "sweep.csv", out / "sweep.md"
