"""Figures of a fit and of a sweep, written as files.

Built with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`, saved through
the Agg canvas): no pyplot, no global backend switch at import, so importing this module in a
notebook or a GUI application leaves its backend alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from splatsr.core.solver import FitResult

ZOOM_PX = 32  # side of the zoomed window, in 10 m pixels


def _display(img: np.ndarray, bands: Sequence[str], lo_hi: tuple[np.ndarray, np.ndarray]
             ) -> tuple[np.ndarray, str | None]:
    """(B, H, W) -> an RGB (B04, B03, B02) or grey image stretched with fixed limits."""
    idx = [list(bands).index(b) for b in ("B04", "B03", "B02")] \
        if all(b in bands for b in ("B04", "B03", "B02")) else [0]
    lo, hi = lo_hi
    x = (img[idx] - lo[idx, None, None]) / np.maximum(hi - lo, 1e-12)[idx, None, None]
    x = np.clip(np.nan_to_num(x, nan=0.0), 0, 1)
    return (np.moveaxis(x, 0, -1), None) if len(idx) == 3 else (x[0], "gray")


def _limits(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = img.reshape(img.shape[0], -1)
    with np.errstate(invalid="ignore"):
        return np.nanpercentile(flat, 2, axis=1), np.nanpercentile(flat, 98, axis=1)


def _window(h: int, w: int, zoom_px: int) -> tuple[slice, slice]:
    n_y, n_x = min(h, zoom_px), min(w, zoom_px)
    r0, c0 = (h - n_y) // 2, (w - n_x) // 2
    return slice(r0, r0 + n_y), slice(c0, c0 + n_x)


def plot_panels(result: FitResult, path: str | os.PathLike, *, stack_data: np.ndarray,
                obs_index: int | None = None, resolution_m: float = 2.5,
                zoom_px: int = ZOOM_PX) -> Path:
    """One observation, its bicubic upsampling and the reconstruction, same window and stretch."""
    from skimage.transform import resize

    grid = result.grid
    f = grid.pixel_m / resolution_m
    T = stack_data.shape[0]
    if obs_index is None:  # the observation seeing the most of the area
        obs_index = int(np.argmax(np.isfinite(stack_data).reshape(T, -1).sum(1)))
    obs = stack_data[obs_index]
    sr = result.render(resolution_m)
    filled = np.where(np.isfinite(obs), obs, np.nanmean(obs))
    bicubic = resize(filled, (obs.shape[0], sr.shape[1], sr.shape[2]), order=3, mode="edge",
                     anti_aliasing=False)
    ry, rx = _window(obs.shape[1], obs.shape[2], zoom_px)
    hy = slice(round(ry.start * f), round(ry.stop * f))
    hx = slice(round(rx.start * f), round(rx.stop * f))
    lims = _limits(obs[:, ry, rx])
    ext = [rx.start * grid.pixel_m, rx.stop * grid.pixel_m, ry.stop * grid.pixel_m,
           ry.start * grid.pixel_m]
    fig = _figure((12, 4.4))
    axes = fig.subplots(1, 3)
    panels = [(obs[:, ry, rx], f"observation {obs_index} ({grid.pixel_m:g} m)"),
              (bicubic[:, hy, hx], f"bicubic ({resolution_m:g} m)"),
              (sr[:, hy, hx], f"splatsr ({resolution_m:g} m, PSF σ "
                              f"{result.config.psf_sigma_m:g} m)")]
    for ax, (img, title) in zip(axes, panels):
        shown, cmap = _display(img, result.band_names, lims)
        ax.imshow(shown, cmap=cmap, extent=ext, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("east (m)")
    axes[0].set_ylabel("south (m)")
    return _save(fig, path)


def plot_convergence(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Convergence, one panel per level: loss minus the level's best against loss evaluations.

    The x axis counts loss evaluations (each Adam step is one; an L-BFGS iteration takes one
    or more, its line search included), so L-BFGS gets the room its work takes rather than
    the sliver of wall time it needs. The y axis is ``loss - min(loss)`` of the level on a
    log scale: the approach to the optimum stays visible after the first orders of magnitude
    (points at the minimum itself are not drawn). Levels differ in model, so each has its
    own panel; a dashed line marks the Adam to L-BFGS hand-off (where the robust loss scale
    and date weights are re-estimated, so the curve may step there).
    """
    levels = sorted({h["level"] for h in history})
    fig = _figure((max(4.2, 3.6 * len(levels)), 3.8))
    if not history:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no history", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    axes = np.atleast_1d(fig.subplots(1, len(levels), squeeze=False)[0])
    for ax, lev in zip(axes, levels):
        _convergence_panel(ax, [h for h in history if h["level"] == lev])
    axes[0].set_ylabel("loss − best loss of the level")
    fig.suptitle("convergence (x: loss evaluations)", fontsize=10)
    return _save(fig, path)


def _convergence_panel(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    """One level: loss - best against evaluation index, Adam and L-BFGS in two colours."""
    loss = np.array([h["loss"] for h in rows], np.float64)
    stage = np.array([h["stage"] for h in rows])
    gap = loss - loss.min()
    floor = max(abs(loss.min()), 1e-30) * 1e-9  # below float32 resolution of the loss
    x = np.arange(len(rows))
    for st, colour, name in (("adam", "tab:blue", "Adam"), ("lbfgs", "tab:orange", "L-BFGS")):
        sel = (stage == st) & (gap > floor)
        if sel.any():
            n = int((stage == st).sum())
            secs = _stage_seconds(rows, st)
            ax.plot(x[sel], gap[sel], ".-", color=colour, lw=1, ms=3,
                    label=f"{name}: {n} evals, {secs:.1f} s")
    handoff = np.flatnonzero(stage == "lbfgs")
    if handoff.size and handoff[0] > 0:
        ax.axvline(handoff[0] - 0.5, color="grey", ls="--", lw=1)
    if (gap > floor).any():
        ax.set_yscale("log")
    ax.set_xlabel("loss evaluation")
    ax.set_title(f"level {rows[0]['level']} (splats every {rows[0]['spacing_m']:g} m)",
                 fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")


def _stage_seconds(rows: Sequence[dict[str, Any]], stage: str) -> float:
    """Wall time spent in one stage of a level (from the evaluations' time stamps)."""
    t = [h["time_s"] for h in rows]
    idx = [i for i, h in enumerate(rows) if h["stage"] == stage]
    start = t[idx[0] - 1] if idx[0] > 0 else (t[0] - (t[1] - t[0] if len(t) > 1 else 0.0))
    return max(t[idx[-1]] - start, 0.0)


def plot_shifts(shifts_m: np.ndarray, pc_shifts_m: np.ndarray, path: str | os.PathLike,
                *, planted_m: np.ndarray | None = None) -> Path:
    """Fitted shifts against phase-correlation estimates, per axis, with the 1:1 line."""
    from splatsr.evaluate.registration import compare_shifts

    agree = compare_shifts(shifts_m, pc_shifts_m)
    fig = _figure((9, 4.4))
    axes = fig.subplots(1, 2)
    for i, (ax, name) in enumerate(zip(axes, ("dx", "dy"))):
        a, b = shifts_m[:, i], pc_shifts_m[:, i]
        ok = np.isfinite(a) & np.isfinite(b)
        ax.scatter(b[ok], a[ok], s=18, label="fit vs phase correlation")
        if planted_m is not None:
            ax.scatter(planted_m[ok, i], a[ok], s=12, marker="x", color="tab:green",
                       label="fit vs planted (x axis: planted)")
        vals = np.concatenate([a[ok], b[ok]]) if ok.any() else np.array([-1.0, 1.0])
        lim = float(np.abs(vals).max()) * 1.15 + 0.1
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=1, ls="--")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        r, mad = agree["pearson_r"][name], agree["mad_m"][name]
        ax.set_title(f"{name}: r = {r:.3f}, MAD = {mad:.2f} m", fontsize=10)
        ax.set_xlabel(f"phase correlation {name} (m)")
        ax.set_ylabel(f"fit {name} (m)")
        ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def write_report(result: FitResult, out_dir: str | os.PathLike, *,
                 stack_data: np.ndarray | None = None,
                 pc_shifts: np.ndarray | None = None, sigma: np.ndarray | None = None,
                 resolution_m: float = 2.5) -> dict[str, Path]:
    """Write the three figures of a fit (four with ``sigma``) into ``out_dir``.

    Parameters
    ----------
    result
        A fit.
    out_dir
        Folder for ``panels.png``, ``convergence.png`` and ``shifts.png`` (created).
    stack_data
        (T, B, H, W) the data fitted; default: read from ``result.stack``.
    pc_shifts
        (T, 2) phase-correlation shifts; default: computed with
        :func:`splatsr.evaluate.registration.phasecorr_shifts`.
    sigma
        (B, H', W') the fit's 1-sigma map at ``resolution_m`` (``StackFit.sigma``): also
        ``sigma.png`` (the scene beside its uncertainty).
    resolution_m
        Output pixel size of the scene panels (and of ``sigma``).

    Returns
    -------
    dict
        ``{"panels", "convergence", "shifts"[, "sigma"]}`` -> paths written.
    """
    from splatsr.errors import ConfigError
    from splatsr.evaluate.registration import phasecorr_shifts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if stack_data is None:
        if getattr(result, "stack", None) is None:
            raise ConfigError("write_report needs stack_data for a result fitted from arrays")
        stack_data = result.stack.load()
    if pc_shifts is None:
        pc_shifts = phasecorr_shifts(stack_data, pixel_m=result.grid.pixel_m)
    planted = None
    if getattr(result, "stack", None) is not None:
        p = (result.stack.meta.get("simulation") or {}).get("shifts_m")
        if p is not None and np.shape(p) == result.shifts_m.shape:
            planted = np.asarray(p, np.float64)
    paths = {"panels": plot_panels(result, out / "panels.png", stack_data=stack_data,
                                   resolution_m=resolution_m),
             "convergence": plot_convergence(result.history, out / "convergence.png"),
             "shifts": plot_shifts(result.shifts_m, np.asarray(pc_shifts, np.float64),
                                   out / "shifts.png", planted_m=planted)}
    if sigma is not None:
        paths["sigma"] = plot_sigma(result.render(resolution_m), sigma, out / "sigma.png",
                                    band_names=result.band_names, resolution_m=resolution_m)
    return paths


def plot_sigma(scene: np.ndarray, sigma: np.ndarray, path: str | os.PathLike, *,
               band_names: Sequence[str], resolution_m: float) -> Path:
    """The scene and its per-pixel 1-sigma uncertainty (first band of ``sigma``), side by side.

    ``scene`` and ``sigma`` are (B, H', W') in reflectance at ``resolution_m``.
    """
    fig = _figure((10, 4.4))
    axes = fig.subplots(1, 2)
    h, w = sigma.shape[1:]
    ext = [0, w * resolution_m, h * resolution_m, 0]
    shown, cmap = _display(scene, band_names, _limits(scene))
    axes[0].imshow(shown, cmap=cmap, extent=ext, interpolation="nearest")
    axes[0].set_title(f"scene ({resolution_m:g} m)", fontsize=10)
    s = sigma[0]
    top = float(np.nanpercentile(s, 99)) if np.isfinite(s).any() else 1.0
    im = axes[1].imshow(s, cmap="magma", vmin=0, vmax=top, extent=ext, interpolation="nearest")
    axes[1].set_title(f"1-sigma uncertainty, {band_names[0]} (median "
                      f"{float(np.nanmedian(s)):.4f})", fontsize=10)
    fig.colorbar(im, ax=axes[1], label="reflectance")
    for ax in axes:
        ax.set_xlabel("east (m)")
    axes[0].set_ylabel("south (m)")
    return _save(fig, path)


def plot_sweep(rows: Sequence[dict[str, Any]],
               recons: Sequence[tuple[dict[str, Any], np.ndarray]], out_dir: str | os.PathLike,
               *, truth: np.ndarray | None = None, bicubic: np.ndarray | None = None
               ) -> list[Path]:
    """Sweep figures: ``sweep_recon.png`` (reconstructions side by side, first band, one
    stretch) and ``sweep_<setting>.png`` metric curves for each setting with several values."""
    out = Path(out_dir)
    paths = []
    tiles = ([(truth[0], "truth (5 m)")] if truth is not None else []) + \
        ([(bicubic[0], "bicubic")] if bicubic is not None else []) + \
        [(img[0], f"σ {r['psf_sigma_m']:g}, N {r['n_obs']}, sp {r['splat_spacing_m']:g}")
         for r, img in recons]
    ref = tiles[0][0]
    lo, hi = np.nanpercentile(ref, [2, 98])
    ncol = min(len(tiles), 5)
    nrow = -(-len(tiles) // ncol)
    axes = _figure((2.6 * ncol, 2.8 * nrow)).subplots(nrow, ncol, squeeze=False)
    fig = axes.flat[0].figure
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, title) in zip(axes.flat, tiles):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    paths.append(_save(fig, out / "sweep_recon.png"))
    return paths + plot_sweep_curves(rows, out)


def plot_sweep_curves(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike
                      ) -> list[Path]:
    """``sweep_<setting>.png``: every metric against each setting given several values."""
    out = Path(out_dir)
    paths: list[Path] = []
    metrics = [m for m in ("psnr_db", "ssim", "fine_error", "heldout_error", "misfit_rms",
                           "grad_rms", "shift_from_seed_m")
               if any(np.isfinite(r[m]) for r in rows)]
    keys = ("psf_sigma_m", "n_obs", "splat_spacing_m")
    for x in keys:
        if len({r[x] for r in rows}) < 2:
            continue
        others = [k for k in keys if k != x]
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(r[k] for k in others), []).append(r)
        ncol = min(4, len(metrics))
        nrow = -(-len(metrics) // ncol)
        fig = _figure((3.3 * ncol, 3.0 * nrow))
        axes = fig.subplots(nrow, ncol, squeeze=False)
        for ax in axes.flat[len(metrics):]:
            ax.axis("off")
        for ax, m in zip(axes.flat, metrics):
            for g, rs in groups.items():
                rs = sorted(rs, key=lambda r: r[x])
                ax.plot([r[x] for r in rs], [r[m] for r in rs], marker="o",
                        label=", ".join(f"{k.split('_')[0]} {v:g}" for k, v in zip(others, g)))
            ax.set_xlabel(x)
            ax.set_title(m, fontsize=9)
        axes.flat[0].legend(fontsize=7)
        paths.append(_save(fig, out / f"sweep_{x}.png"))
    return paths


def _figure(size_in: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=size_in, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    from splatsr.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)
