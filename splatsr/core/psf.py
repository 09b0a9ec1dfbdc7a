"""Choosing the PSF width from the data: held-out-observation prediction error.

The PSF is the one setting that changes the result much, and the stack itself can choose it:
fit the scene to all observations but a few, predict each held-out observation through the
forward model (its shift searched on a grid, its gain and offset fitted in closed form) and
keep the width whose predictions are best. A PSF that is too narrow lets the splats fit noise
(and detail that is not there), which an unseen date does not repeat; one that is too wide
smooths away detail that the unseen date shows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from splatsr.core.checks import MIN_OBSERVATIONS, check_stack_array
from splatsr.core.expand import put, subset_config
from splatsr.core.inputs import InputWarning, inspect_stack
from splatsr.core.model import render_observations
from splatsr.core.solver import FitConfig, FitResult, fit_arrays
from splatsr.errors import ConfigError, StackError

DEFAULT_CANDIDATES_M = (2.0, 3.0, 4.0, 5.0, 6.0)


@dataclass
class PsfSelection:
    """The chosen PSF width and the curve it was chosen from."""

    psf_sigma_m: float  # the candidate chosen by :func:`pick_psf_sigma` from the curve
    # per candidate: psf_sigma_m, heldout_rmse, band_heldout_rmse (one per band), fit_seconds
    curve: list[dict[str, Any]]
    holdout: list[int]  # indices of the held-out observations


def _gain_offset_fit(pred: torch.Tensor, obs: torch.Tensor, valid: torch.Tensor
                     ) -> torch.Tensor:
    """Per (candidate, band) least-squares ``g * pred + o`` to ``obs``; returns the fit.

    ``pred`` (N, B, H, W), ``obs`` and ``valid`` (B, H, W).
    """
    m = valid[None].to(pred.dtype)
    n = m.sum((2, 3)).clamp(min=1)
    mp = (pred * m).sum((2, 3)) / n
    mo = (obs[None] * m).sum((2, 3)) / n
    dp = (pred - mp[..., None, None]) * m
    do = (obs[None] - mo[..., None, None]) * m
    g = (dp * do).sum((2, 3)) / (dp * dp).sum((2, 3)).clamp(min=1e-20)
    return g[..., None, None] * (pred - mp[..., None, None]) + mo[..., None, None]


def heldout_error(result: FitResult, obs: np.ndarray, *, search_m: float = 6.0,
                  step_m: float = 0.25, robust: bool = True) -> tuple[float, np.ndarray]:
    """Error of predicting an unseen observation from a fitted scene.

    The scene is rendered through the forward model at every shift of a 1 m grid
    (``+-search_m``, both axes), then of a ``step_m`` grid around the best; at each, a per-band
    gain and offset are fitted in closed form, and the best shift is kept.

    Parameters
    ----------
    result
        A fit that did not see ``obs``.
    obs
        (B, H, W) the held-out observation (reflectance, NaN where invalid), on the fit's grid.
    search_m, step_m
        Shift search range and step in metres.
    robust
        Score with 1.4826 x the median absolute error (clouds or haze in the held-out date do
        not dominate) instead of the RMS.

    Returns
    -------
    error : float
        In reflectance.
    shift_m : np.ndarray
        (2,) the best ``(dx_m, dy_m)``.
    """
    obs = np.asarray(obs, np.float64)
    g, psf_m = result.grid, result.config.psf_widths_m()
    if obs.shape != (len(result.band_names), g.height, g.width):
        raise ConfigError(f"held-out observation must be (B, H, W) = "
                          f"{(len(result.band_names), g.height, g.width)}, got {obs.shape}")
    if not np.isfinite(obs).any():
        raise StackError("the held-out observation has no valid pixels")
    w, y, valid = _tensors(result, obs)

    def search(centre: np.ndarray, half_m: float, step: float) -> tuple[float, np.ndarray]:
        n = int(round(half_m / step))
        ax = step * np.arange(-n, n + 1)
        cand = np.stack(np.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2) + centre
        best, best_shift = math.inf, centre
        with torch.no_grad():
            for chunk in np.array_split(np.arange(len(cand)), max(1, len(cand) // 32)):
                shifts = result.band_shifts(torch.from_numpy(cand[chunk]))  # (N[, B], 2)
                pred = render_observations(w, shifts, grid=g, psf_sigma_m=psf_m)
                fitted = _gain_offset_fit(pred, y, valid)
                r = (fitted - y[None])[:, valid]  # (N, n_valid)
                err = 1.4826 * r.abs().median(dim=1).values if robust else \
                    r.pow(2).mean(dim=1).sqrt()
                k = int(torch.argmin(err))
                if float(err[k]) < best:
                    best, best_shift = float(err[k]), cand[chunk][k]
        return best, best_shift

    _, centre = search(result.shifts_m.mean(0), search_m, coarse := max(step_m, 1.0))
    best, best_shift = search(centre, coarse, step_m)
    return best, np.asarray(best_shift, np.float64)


def heldout_band_errors(result: FitResult, obs: np.ndarray, *, shift_m: np.ndarray
                        ) -> np.ndarray:
    """(B,) robust held-out error of each band (1.4826 x the median absolute error) at the
    shift ``shift_m`` (2,) that :func:`heldout_error` found, gain and offset fitted per band."""
    w, y, valid = _tensors(result, np.asarray(obs, np.float64))
    shifts = result.band_shifts(torch.from_numpy(np.asarray(shift_m, np.float64)[None]))
    with torch.no_grad():
        pred = render_observations(w, shifts, grid=result.grid,
                                   psf_sigma_m=result.config.psf_widths_m())
        r = _gain_offset_fit(pred, y, valid)[0] - y  # (B, H, W)
    return np.array([1.4826 * float(r[b][valid[b]].abs().median()) if bool(valid[b].any())
                     else math.nan for b in range(len(r))])


def _tensors(result: FitResult, obs: np.ndarray
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fit's splat weights, the held-out observation (NaN -> 0) and its valid mask, as
    float64 / bool tensors."""
    valid = np.isfinite(obs)
    return (torch.from_numpy(result.weights.astype(np.float64)),
            torch.from_numpy(np.where(valid, obs, 0.0)), torch.from_numpy(valid))


def _holdout_indices(T: int, n_holdout: int) -> list[int]:
    """``n_holdout`` indices spread evenly over ``range(T)`` (never the first or last)."""
    return sorted({int(round((k + 1) * T / (n_holdout + 1))) % T for k in range(n_holdout)})


def select_psf_sigma(data: np.ndarray, *, pixel_m: float,
                     candidates_m: Sequence[float] = DEFAULT_CANDIDATES_M,
                     config: FitConfig | None = None, n_holdout: int = 2,
                     tolerance: float = 0.1, min_rise: float = 0.01,
                     band_names: tuple[str, ...] | None = None) -> PsfSelection:
    """Pick the PSF sigma whose fits best predict held-out observations.

    One fit per candidate on the stack minus ``n_holdout`` observations (spread over the
    stack), with ``config``'s settings (the candidate replaces its ``psf_sigma_m``); the score is
    the mean over the held-out observations of :func:`heldout_error` (robust). The choice from
    the curve is :func:`pick_psf_sigma`: the candidate just before the held-out error starts
    to rise steeply.

    Parameters
    ----------
    data
        (T, B, H, W) reflectance, NaN where invalid.
    pixel_m
        Pixel size in metres.
    candidates_m
        PSF sigmas to try, metres.
    config
        Settings of the trial fits (default :class:`FitConfig()`).
    n_holdout
        Observations held out; the fits need at least 2 others.
    tolerance, min_rise
        See :func:`pick_psf_sigma`.
    band_names
        Band names, passed to the fits.

    Returns
    -------
    PsfSelection
        ``.psf_sigma_m``, one for all bands (read off each band's own held-out error, in
        ``.curve``, it was wrong for 4 of 6 simulated bands: docs/quality.md).
    """
    data = check_stack_array(data)
    cands = sorted({float(c) for c in candidates_m})
    if not cands or min(cands) < 0:
        raise ConfigError(f"PSF candidates must be >= 0 and non-empty, got {candidates_m}")
    # the dates and bands with a valid pixel (the input guard's; the main fit says the rest)
    found_in = inspect_stack(data, band_names=band_names)
    bands_ok = found_in.used_bands  # (B,) the curve's per-band errors are NaN for the others
    if found_in.degenerate:
        data = data[found_in.used_dates][:, bands_ok]
        band_names = None if band_names is None else \
            tuple(b for b, ok in zip(band_names, bands_ok) if ok)
        config = None if config is None else subset_config(config, bands_ok)
    T = data.shape[0]
    if n_holdout < 1 or T - n_holdout < MIN_OBSERVATIONS:
        raise StackError(f"choosing the PSF holds out {n_holdout} of {T} observations and "
                         f"needs {MIN_OBSERVATIONS} left to fit; use a stack of at least "
                         f"{MIN_OBSERVATIONS + 1} dates or give --psf-sigma a number")
    hold = _holdout_indices(T, n_holdout)
    keep = [t for t in range(T) if t not in hold]
    cfg = config or FitConfig()
    curve = []
    for c in cands:
        # the PSF is the sensor's: chosen on consensus fits, whatever the target date
        with warnings.catch_warnings():  # the main fit says what the stack lacks
            warnings.simplefilter("ignore", InputWarning)
            res = fit_arrays(data[keep], pixel_m=pixel_m, band_names=band_names,
                             config=replace(cfg, psf_sigma_m=c, band_psf_sigma_m=None,
                                            target_date=None))
        found = [heldout_error(res, data[t]) for t in hold]  # (error, shift) per date
        band = [heldout_band_errors(res, data[t], shift_m=sh) for t, (_, sh) in zip(hold, found)]
        curve.append(dict(psf_sigma_m=c, heldout_rmse=float(np.mean([e for e, _ in found])),
                          band_heldout_rmse=put(_nan_mean(band), bands_ok, np.nan).tolist(),
                          fit_seconds=res.seconds))
    best = pick_psf_sigma(cands, [row["heldout_rmse"] for row in curve], tolerance=tolerance,
                          min_rise=min_rise)
    return PsfSelection(psf_sigma_m=best, curve=curve, holdout=hold)


def _nan_mean(errors: list[np.ndarray]) -> np.ndarray:
    """(B,) mean over the held-out dates of their (B,) errors, NaN ignored; NaN (quietly)
    where a band has no valid pixel in any of them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a band with no valid pixel
        return np.nanmean(errors, axis=0)


def pick_psf_sigma(sigmas_m: Sequence[float], errors: Sequence[float], *,
                   tolerance: float = 0.1, min_rise: float = 0.01) -> float:
    """The PSF width read off a held-out error curve: the candidate before the steepest rise.

    Below the true width scene and PSF trade off (a sharper scene behind a narrower PSF
    predicts the 10 m pixels about as well), so the curve is nearly flat there, sometimes
    slightly *lower*; above it the curve rises steeply. So neither the minimum nor "the widest
    within a tolerance" is reliable (measured, true PSF 4 m: a 64 x 64 px curve over 2-6 m is
    within 2.3 % everywhere with its minimum at 5 m, and the widest within 10 % is 6 m; on a
    16 x 16 px curve 1 m scores 8 % below 4 m). Rule: among the candidates within
    ``tolerance`` of the lowest error, take the one after which the error rises fastest (per
    metre of sigma, relative), counting only rises of more than ``min_rise`` (relative) to the
    next candidate; if none rises that much, the widest of them.

    Parameters
    ----------
    sigmas_m, errors
        The curve: candidate PSF sigmas (metres, any order) and their held-out errors.
    tolerance
        Candidates whose error exceeds the lowest by more than this (relative) are not chosen.
    min_rise
        Smallest relative rise to the next candidate that counts as the curve turning up.

    Returns
    -------
    float
        The chosen sigma, metres.

    Examples
    --------
    >>> pick_psf_sigma([2, 3, 4, 5, 6], [1.00, 0.99, 0.99, 1.00, 1.20])
    5.0
    """
    if len(sigmas_m) != len(errors) or not len(errors):
        raise ConfigError(f"a PSF curve needs as many errors as sigmas (> 0), got "
                          f"{len(sigmas_m)} and {len(errors)}")
    order = np.argsort(np.asarray(sigmas_m, float))
    s = np.asarray(sigmas_m, float)[order]
    e = np.asarray(errors, float)[order]
    ok = np.flatnonzero(e <= (1 + tolerance) * e.min())
    rises = [((e[i + 1] - e[i]) / e[i] / (s[i + 1] - s[i]), i) for i in ok
             if i + 1 < len(s) and e[i + 1] > (1 + min_rise) * e[i]]
    return float(s[max(rises)[1]] if rises else s[ok.max()])


def selection_tags(sel: PsfSelection) -> dict[str, Any]:
    """The selection as JSON-ready tags for the output's metadata."""
    return {"psf_sigma_auto": asdict(sel)}
