"""Independent shift estimates by phase correlation, and a check of a fit's shifts against them.

The fit's shifts are only as credible as an independent estimator's agreement with them. This
module registers every observation against a robust reference (the per-pixel median of the
stack) with :func:`skimage.registration.phase_cross_correlation` (upsampled by 100) and
compares the result with a shifts CSV, as in the source's table (std, max |shift|, Pearson r,
mean absolute deviation, per axis). Scores against a reference image are in
:mod:`splatsr.evaluate.metrics`.

Choices, and the traps they avoid
---------------------------------
- skimage's masked mode ignores ``upsample_factor`` (integer-pixel shifts only), which is
  useless for sub-pixel jitter. Instead NaN pixels of an observation are filled with the
  reference's values there (no artificial edges; they pull that observation's estimate
  slightly towards zero) and the images are tapered with a Tukey window, so the FFT's
  periodic wrap-around does not add a zero-shift edge either.
- ``normalization=None`` (plain cross-correlation): phase normalisation whitens the spectrum
  and, for blurred and noisy 10 m data, can silently return zero shift.
- skimage returns the ``(row, col)`` shift that registers the moving image onto the
  reference. A content displacement ``(dx_m, dy_m)`` (east, north) of the observation needs a
  registering shift of ``(+dy_m, -dx_m) / pixel_m`` (rows grow southwards), so
  ``dx_m = -col * pixel_m`` and ``dy_m = +row * pixel_m``.
- The median reference sits at the stack's mean displacement, so estimates are made
  mean-zero, like the solver's shifts. One refinement pass re-builds the reference from the
  observations moved back by their first estimates, which sharpens it and reduces the shrinkage
  of the estimates towards zero.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.signal.windows import tukey
from skimage.registration import phase_cross_correlation

from splatsr.core.checks import check_stack_array
from splatsr.errors import ConfigError, StackError
from splatsr.io.atomic import write_text_atomic
from splatsr.io.export import read_shifts_csv, sigma_path
from splatsr.io.stack import Stack, read_stack

MIN_VALID_FRACTION = 0.25  # observations seeing less of the area get NaN estimates


def phasecorr_shifts(data: np.ndarray, *, pixel_m: float, upsample_factor: int = 100,
                     reference: str | np.ndarray = "median", refine_iters: int = 1,
                     normalization: str | None = None, taper: float = 0.25,
                     min_valid_fraction: float = MIN_VALID_FRACTION) -> np.ndarray:
    """Per-observation shifts by phase correlation against a robust reference.

    Parameters
    ----------
    data
        (T, B, H, W) reflectance, NaN where invalid.
    pixel_m
        Pixel size of ``data`` in metres.
    upsample_factor
        Sub-pixel precision of :func:`~skimage.registration.phase_cross_correlation`
        (1 / ``upsample_factor`` of a pixel).
    reference
        ``"median"`` or ``"mean"`` composite of the stack, or a (B, H, W) array (e.g. a fitted
        scene rendered at zero shift); an array reference is used as is (no refinement).
    refine_iters
        Times the composite is rebuilt from the observations moved back by their estimates.
    normalization
        Passed to skimage: ``None`` (plain cross-correlation; robust for blurred data) or
        ``"phase"``.
    taper
        Tukey window parameter (0 = no taper, 1 = Hann) applied before correlating.
    min_valid_fraction
        Observations with fewer valid pixels than this fraction get NaN.

    Returns
    -------
    np.ndarray
        (T, 2) ``(dx_m, dy_m)``: content displacement, east and north positive, metres,
        mean zero over the finite rows (NaN rows for observations that could not be
        registered). With an array ``reference`` the estimates are relative to it and are not
        re-centred.
    """
    data = _check_phasecorr_input(data, pixel_m, upsample_factor, normalization)
    T, B, H, W = data.shape
    window = np.outer(tukey(H, taper), tukey(W, taper))
    fixed = not isinstance(reference, str)
    ref = _reference(data, reference)

    def register(ref: np.ndarray) -> np.ndarray:
        return _register_all(data, ref, window, pixel_m=pixel_m, upsample=int(upsample_factor),
                             normalization=normalization, min_valid=min_valid_fraction)

    est = register(ref)
    if fixed:
        return est
    for _ in range(max(0, int(refine_iters))):
        if not np.isfinite(est).all(axis=1).any():
            break
        aligned = np.stack([_unshift(data[t], est[t], pixel_m) if np.isfinite(est[t]).all()
                            else data[t] for t in range(T)])
        est = register(_composite(aligned, reference))
    return _centre(est)


def _check_phasecorr_input(data: np.ndarray, pixel_m: float, upsample_factor: int,
                           normalization: str | None) -> np.ndarray:
    """``data`` as float64 (T, B, H, W) after checking the options of :func:`phasecorr_shifts`."""
    data = check_stack_array(data, dtype=np.float64, min_obs=1)
    if not pixel_m > 0:
        raise ConfigError(f"pixel_m must be > 0, got {pixel_m}")
    if int(upsample_factor) < 1:
        raise ConfigError(f"upsample_factor must be >= 1, got {upsample_factor}")
    if normalization not in (None, "phase"):
        raise ConfigError(f"normalization must be None or 'phase', got {normalization!r}")
    H, W = data.shape[2:]
    if min(H, W) < 8:
        raise StackError(f"images of {W}x{H} px are too small for phase correlation")
    return data


def _reference(data: np.ndarray, reference: str | np.ndarray) -> np.ndarray:
    """The (B, H, W) reference: a composite of ``data`` by name, or a given array as is."""
    if not isinstance(reference, str):
        ref = np.asarray(reference, np.float64)
        if ref.shape != data.shape[1:]:
            B, H, W = data.shape[1:]
            raise ConfigError(f"reference must be (B={B}, H={H}, W={W}), got {ref.shape}")
        return ref
    if reference in ("median", "mean"):
        return _composite(data, reference)
    raise ConfigError(f"reference must be 'median', 'mean' or an array, got {reference!r}")


def phasecorr_seed(data: np.ndarray, *, pixel_m: float, **kwargs: Any) -> np.ndarray:
    """Finite phase-correlation shifts to start the solver from (``init_shifts_m``).

    Like :func:`phasecorr_shifts`, but observations that could not be registered start at 0
    (the stack's mean), so the result can always be passed to :func:`splatsr.fit`.
    """
    est = phasecorr_shifts(data, pixel_m=pixel_m, **kwargs)
    est = np.where(np.isfinite(est), est, 0.0)
    return est - est.mean(0)


def shift_from_seed_m(shifts_m: np.ndarray, seed_m: np.ndarray) -> float:
    """Mean distance (metres) between fitted shifts and their seed, both re-centred."""
    a = np.asarray(shifts_m, np.float64)
    b = np.asarray(seed_m, np.float64)
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    if not ok.any():
        return math.nan
    d = (a[ok] - a[ok].mean(0)) - (b[ok] - b[ok].mean(0))
    return float(np.hypot(d[:, 0], d[:, 1]).mean())


def _composite(data: np.ndarray, how: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        comp = np.nanmedian(data, axis=0) if how == "median" else np.nanmean(data, axis=0)
    for b in range(comp.shape[0]):
        bad = ~np.isfinite(comp[b])
        if bad.all():
            comp[b] = 0.0
        elif bad.any():
            comp[b][bad] = np.nanmean(comp[b])
    return comp


def _register_all(data: np.ndarray, ref: np.ndarray, window: np.ndarray, *, pixel_m: float,
                  upsample: int, normalization: str | None, min_valid: float) -> np.ndarray:
    T, B = data.shape[:2]
    out = np.full((T, 2), np.nan)
    for t in range(T):
        per_band = []
        for b in range(B):
            valid = np.isfinite(data[t, b])
            if valid.mean() < min_valid:
                continue
            r = ref[b]
            if np.ptp(r) == 0 or np.ptp(data[t, b][valid]) == 0:
                continue
            m = np.where(valid, data[t, b], r)
            r = (r - r.mean()) * window
            m = (m - m.mean()) * window
            shift, _, _ = phase_cross_correlation(r, m, upsample_factor=upsample,
                                                  normalization=normalization)
            per_band.append(shift)
        if per_band:
            row, col = np.median(np.asarray(per_band), axis=0)
            out[t] = (-col * pixel_m, row * pixel_m)
    return out


def _unshift(obs: np.ndarray, shift_m: np.ndarray, pixel_m: float) -> np.ndarray:
    """Move an observation's content back by its estimated displacement (NaN kept)."""
    dx, dy = shift_m
    # content displaced east by dx sits dx/p columns right and dy/p rows up; undo that
    d = (dy / pixel_m, -dx / pixel_m)
    out = np.empty_like(obs)
    for b in range(obs.shape[0]):
        valid = np.isfinite(obs[b])
        fill = np.where(valid, obs[b], np.nanmean(obs[b]) if valid.any() else 0.0)
        out[b] = ndimage.shift(fill, d, order=3, mode="nearest")
        moved = ndimage.shift(valid.astype(float), d, order=1, mode="nearest")
        out[b][moved < 0.99] = np.nan
    return out


def _centre(est: np.ndarray) -> np.ndarray:
    ok = np.isfinite(est).all(axis=1)
    if ok.any():
        est = est.copy()
        est[ok] -= est[ok].mean(0)
    return est


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def compare_shifts(a_m: np.ndarray, b_m: np.ndarray) -> dict[str, dict[str, float]]:
    """Agreement of two (T, 2) shift sets: per axis Pearson r and mean absolute deviation.

    Rows where either is NaN are left out; both sets are re-centred on the rows kept.
    Returns ``{"pearson_r": {"dx", "dy"}, "mad_m": {"dx", "dy"}, "n": int}``.
    """
    a = np.asarray(a_m, np.float64)
    b = np.asarray(b_m, np.float64)
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a, b = a[ok], b[ok]
    if ok.any():
        a, b = a - a.mean(0), b - b.mean(0)
    out: dict[str, Any] = {"pearson_r": {}, "mad_m": {}, "n": int(ok.sum())}
    for i, ax in enumerate(("dx", "dy")):
        out["pearson_r"][ax] = _pearson(a[:, i], b[:, i])
        out["mad_m"][ax] = float(np.abs(a[:, i] - b[:, i]).mean()) if ok.any() else math.nan
    return out


def shift_stats(s: np.ndarray) -> dict[str, dict[str, float]]:
    """Per axis standard deviation and largest magnitude of (T, 2) shifts (NaN rows left out)."""
    ok = np.isfinite(s).all(1)
    s = s[ok]
    return {"std_m": {ax: float(np.std(s[:, i])) if len(s) else math.nan
                      for i, ax in enumerate(("dx", "dy"))},
            "max_abs_m": {ax: float(np.abs(s[:, i]).max()) if len(s) else math.nan
                          for i, ax in enumerate(("dx", "dy"))}}


def validate_shifts(stack: Stack | str | os.PathLike, shifts_csv: str | os.PathLike, *,
                    pc_shifts_m: np.ndarray | None = None, **pc_options: Any) -> dict[str, Any]:
    """Compare a shifts CSV with independent phase-correlation estimates.

    Parameters
    ----------
    stack
        The stack (directory or :class:`Stack`) the shifts belong to.
    shifts_csv
        ``id,datetime,dx_m,dy_m,...`` as written by ``splatsr fit``.
    pc_shifts_m
        Precomputed (T, 2) phase-correlation shifts in stack order (default: computed).
    **pc_options
        Passed to :func:`phasecorr_shifts` (``upsample_factor``, ``reference``, ...).

    Returns
    -------
    dict
        JSON-ready: ``pearson_r`` and ``mad_m`` (``{dx, dy}``, fit against phase correlation),
        ``fit`` and ``phasecorr`` (``std_m``, ``max_abs_m`` per axis), ``n_compared``,
        ``observations`` (``id, dx_m, dy_m, pc_dx_m, pc_dy_m``), ``sigma``
        (:func:`sigma_summary`) and, for a simulated stack, ``planted``.

    Raises
    ------
    StackError
        If the CSV cannot be read or its ids do not match the stack's observations.
    """
    if not isinstance(stack, Stack):
        stack = read_stack(stack)
    fit_shifts = _read_matching(stack, shifts_csv)
    if pc_shifts_m is None:
        pc = phasecorr_shifts(stack.load(), pixel_m=stack.pixel_m, **pc_options)
    else:
        pc = np.asarray(pc_shifts_m, np.float64)
        if pc.shape != fit_shifts.shape:
            raise ConfigError(f"pc_shifts_m must be {fit_shifts.shape}, got {pc.shape}")
    agree = compare_shifts(fit_shifts, pc)
    report: dict[str, Any] = {
        "stack": str(stack.root), "shifts_csv": str(shifts_csv), "pixel_m": stack.pixel_m,
        "pearson_r": agree["pearson_r"], "mad_m": agree["mad_m"],
        "n_compared": agree["n"], "fit": shift_stats(fit_shifts), "phasecorr": shift_stats(pc),
        "method": {"estimator": "skimage.registration.phase_cross_correlation",
                   "upsample_factor": pc_options.get("upsample_factor", 100),
                   "reference": str(pc_options.get("reference", "median")),
                   "normalization": pc_options.get("normalization")},
        "observations": [{"id": o.id, "dx_m": float(f[0]), "dy_m": float(f[1]),
                          "pc_dx_m": float(p[0]), "pc_dy_m": float(p[1])}
                         for o, f, p in zip(stack.observations, fit_shifts, pc)],
    }
    planted = (stack.meta.get("simulation") or {}).get("shifts_m")
    if planted is not None and np.shape(planted) == fit_shifts.shape:
        planted = np.asarray(planted, np.float64)
        report["planted"] = {"fit": compare_shifts(fit_shifts, planted),
                             "phasecorr": compare_shifts(pc, planted),
                             **shift_stats(planted)}
        for obs, s in zip(report["observations"], planted):
            obs["planted_dx_m"], obs["planted_dy_m"] = float(s[0]), float(s[1])
    report["sigma"] = sigma_summary(shifts_csv)  # None unless fit --uncertainty wrote one
    return _json_ready(report)


def sigma_summary(shifts_csv: str | os.PathLike) -> dict[str, Any] | None:
    """Median and 90th percentile per band of the ``.sigma.tif`` beside a shifts CSV, if any.

    ``sr.shifts.csv`` -> ``sr.sigma.tif`` (written by ``splatsr fit --uncertainty``).
    """
    import rasterio

    csv_path = Path(shifts_csv)
    stem = csv_path.name[: -len(".shifts.csv")] if csv_path.name.endswith(".shifts.csv") \
        else csv_path.stem
    path = sigma_path(csv_path.with_name(stem + ".tif"))
    if not path.is_file():
        return None
    with rasterio.open(path) as src:
        sigma = src.read(out_dtype=np.float64)
        names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band gives NaN
        return {"path": str(path),
                "median": {n: float(np.nanmedian(b)) for n, b in zip(names, sigma)},
                "p90": {n: float(np.nanpercentile(b, 90)) for n, b in zip(names, sigma)}}


def _read_matching(stack: Stack, path: str | os.PathLike) -> np.ndarray:
    try:
        ids, shifts = read_shifts_csv(path)
    except FileNotFoundError:
        raise StackError(f"{path}: no such shifts CSV") from None
    except (KeyError, ValueError) as exc:
        raise StackError(f"{path}: not a shifts CSV with columns id, dx_m, dy_m ({exc})") \
            from None
    by_id = dict(zip(ids, shifts))
    missing = [o.id for o in stack.observations if o.id not in by_id]
    if missing or len(by_id) != len(stack.observations):
        raise StackError(f"{path}: its ids do not match the stack's observations "
                         f"({len(missing)} of {len(stack.observations)} missing"
                         f"{', e.g. ' + repr(missing[0]) if missing else ''}; "
                         f"{len(by_id)} rows)")
    return np.array([by_id[o.id] for o in stack.observations], np.float64)


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else round(float(obj), 6)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def format_table(report: dict[str, Any]) -> str:
    """The source-style table of a :func:`validate_shifts` report, as plain text."""
    def f(v: Any, nd: int = 2) -> str:
        return "n/a" if v is None else f"{v:.{nd}f}"

    rows = [("shift std, fit (m)", report["fit"]["std_m"], 2),
            ("shift std, phase corr. (m)", report["phasecorr"]["std_m"], 2),
            ("max |shift|, fit (m)", report["fit"]["max_abs_m"], 2),
            ("max |shift|, phase corr. (m)", report["phasecorr"]["max_abs_m"], 2),
            ("Pearson r, fit vs phase corr.", report["pearson_r"], 3),
            ("mean abs. deviation (m)", report["mad_m"], 2)]
    if "planted" in report:
        p = report["planted"]
        rows += [("Pearson r, fit vs planted", p["fit"]["pearson_r"], 3),
                 ("Pearson r, phase corr. vs planted", p["phasecorr"]["pearson_r"], 3),
                 ("MAD fit vs planted (m)", p["fit"]["mad_m"], 2),
                 ("MAD phase corr. vs planted (m)", p["phasecorr"]["mad_m"], 2)]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'dx':>7}  {'dy':>7}"]
    lines += [f"{name:{width}}  {f(v['dx'], nd):>7}  {f(v['dy'], nd):>7}" for name, v, nd in rows]
    lines.append(f"{report['n_compared']} of {len(report['observations'])} observations "
                 "compared")
    if report.get("sigma"):
        med = ", ".join(f"{k} {v:.4f}" for k, v in report["sigma"]["median"].items())
        lines.append(f"median 1-sigma uncertainty ({Path(report['sigma']['path']).name}): "
                     f"{med}")
    return "\n".join(lines)


def write_validation(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a :func:`validate_shifts` report as JSON, atomically."""
    write_text_atomic(path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return Path(path)
