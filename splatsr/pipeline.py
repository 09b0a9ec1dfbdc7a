"""One ``splatsr fit`` run as a library call: input, checks, fit, outputs and summary lines.

:func:`run_fit` is everything the ``splatsr fit`` command does, so a Python user gets the same
run without the command line: it opens the input (a stack directory, a :class:`Stack`, or a
STAC query that is fetched into the cache first), checks the options against each other and
against the stack *before* the long fit (the output folder, the resolution), then runs one of
the four paths -- a whole-stack fit (optionally with the PSF chosen from held-out dates and the
shifts seeded by phase correlation), or a tiled fit on Dask of a stack or straight from STAC --
and writes the COG, the shifts CSV, the PSF curve and the report figures. Summary lines go to
``log`` (the command prints them; the default logs them to the ``splatsr`` logger).

This layer sits on :mod:`splatsr.workflow` and :mod:`splatsr.tiles` and below
:mod:`splatsr.cli`; every error is a :class:`~splatsr.errors.SplatsrError` (a bad option
value a :class:`~splatsr.errors.ConfigError`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from splatsr.core import memory
from splatsr.core.model import output_shape
from splatsr.core.config import AUTO_PRIOR, DEFAULT_PRIOR
from splatsr.core.solver import FitConfig
from splatsr.core.products.uncertainty import as_mode
from splatsr.errors import ConfigError
from splatsr.io.export import sigma_path
from splatsr.io.stack import Stack, read_stack
from splatsr.workflow import StackFit, fit, psf_curve_path, write_psf_curve

if TYPE_CHECKING:
    from splatsr.tiles.run import TiledResult

__all__ = ["COG_SUFFIXES", "OUTLIER_WEIGHT", "QUERY_KEYS", "FitRun", "TileOptions", "check_out",
           "check_series_dir", "date_notes", "run_fit",
           "tiled_summary"]

_LOG = logging.getLogger("splatsr")
OUTLIER_WEIGHT = 0.25  # a date whose fit weight is below this is named as an outlier
COG_SUFFIXES = (".tif", ".tiff")  # output names that say "GeoTIFF"
QUERY_KEYS = ("aoi", "start", "end", "bands", "max_cloud", "min_coverage", "stac_url",
              "collection", "max_workers")  # the keys of a STAC query mapping


@dataclass(frozen=True)
class TileOptions:
    """How to fit in tiles on Dask (see :func:`splatsr.tiles.run.fit_tiled`)."""

    tile_size: int  # tile side in source pixels
    overlap: int = 8  # least overlap of neighbouring tiles in pixels (also the blend ramp)
    address: str | None = None  # scheduler of an existing cluster; None: a LocalCluster
    store: str | os.PathLike | None = None  # finished-tile folder; None: beside ``out``
    uncertainty: str | None = None  # "full"/"fast": also the blended 1-sigma map


@dataclass
class FitRun:
    """What :func:`run_fit` wrote: one of ``fit`` (whole stack) or ``tiled`` is set."""

    path: Path  # the COG
    stack: Stack | None = None  # the stack fitted (None for a tiled fit straight from STAC)
    fit: StackFit | None = None  # the whole-stack fit
    tiled: TiledResult | None = None  # the tiled fit
    psf_curve: Path | None = None  # held-out error per PSF sigma, with psf_sigma_m="auto"
    series: Path | None = None  # the series' items.json, with every_date
    report: dict[str, Path] | None = None  # the report figures, with report_dir


def check_out(out: str | os.PathLike, *, mkdir: bool = False) -> Path:
    """Check an output file name before any work: its folder exists (or ``mkdir``).

    A name not ending in ``.tif``/``.tiff`` is written as a GeoTIFF all the same, with a
    :class:`UserWarning`.

    Raises
    ------
    ConfigError
        If the output's folder does not exist and ``mkdir`` is false, or ``out`` is a folder.
    """
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; give a file name such as {out / 'sr.tif'}")
    parent = out.parent
    if not mkdir and not parent.is_dir():
        raise ConfigError(f"output folder {parent} does not exist; create it or pass --mkdir "
                          "(mkdir=True in Python)")
    if out.suffix.lower() not in COG_SUFFIXES:
        warnings.warn(f"{out.name} does not end in .tif or .tiff; it is written as a GeoTIFF "
                      "(COG) all the same", UserWarning, stacklevel=2)
    return out


def check_series_dir(out: str | os.PathLike, *, mkdir: bool, config: FitConfig,
                     uncertainty: Any = False, psf_sigma_m: Any = None,
                     init_shifts: str = "zeros", report_dir: Any = None) -> Path:
    """Check the folder of an every-date run before any work (it is created if missing,
    its parent must exist unless ``mkdir``) and the options that go with it.

    Raises
    ------
    ConfigError
        If ``out`` is a file, its parent is missing, or an option does not apply.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--every-date writes a folder; {out} is a file")
    if not mkdir and not out.parent.is_dir():
        raise ConfigError(f"output folder {out.parent} does not exist; create it or pass "
                          "--mkdir (mkdir=True in Python)")
    if config.target_date is not None:
        raise ConfigError("--every-date renders every date of the stack; leave out "
                          "--target-date")
    as_mode(uncertainty)  # a bad mode fails here, before any work
    if config.prior == AUTO_PRIOR:
        raise ConfigError("--every-date does not choose the prior (--prior auto); pass tv "
                          "or huber")
    if psf_sigma_m == "auto" or init_shifts != "zeros" or report_dir is not None:
        raise ConfigError("--psf-sigma auto, --init-shifts phasecorr and --report are not "
                          "available with --every-date")
    return out


def run_fit(source: Stack | str | os.PathLike | Mapping[str, Any], out: str | os.PathLike, *,
            config: FitConfig | None = None, resolution_m: float = 2.5,
            psf_sigma_m: float | Literal["auto"] | None = None,
            init_shifts: Literal["zeros", "phasecorr"] = "zeros",
            report_dir: str | os.PathLike | None = None, tiles: TileOptions | None = None,
            cache_dir: str | os.PathLike | None = None, mkdir: bool = False,
            uncertainty: bool | Literal["full", "fast"] = False, every_date: bool = False,
            log: Callable[[str], None] | None = None) -> FitRun:
    """Fit a stack (or an AOI fetched from STAC) and write the COG, shifts and extras.

    Parameters
    ----------
    source
        A stack directory, a :class:`Stack`, or a STAC query mapping (:data:`QUERY_KEYS`),
        fetched first (:func:`splatsr.io.fetch.fetch_cached`), or with ``tiles`` per tile.
    out
        The output COG; the shifts go to ``<stem>.shifts.csv`` beside it.
    config
        Solver settings (default ``FitConfig()``); its ``progress`` also shows the fetch's.
    resolution_m
        Output pixel size; checked against the stack before the fit.
    psf_sigma_m
        Metres, ``"auto"`` (held-out choice, curve in ``<stem>.psf.csv``), None: the config's.
    init_shifts
        ``"zeros"`` or ``"phasecorr"`` (start at phase-correlation estimates).
    report_dir
        Also write the report figures into this folder.
    tiles
        Fit in tiles on Dask (no ``"auto"`` PSF, phase-correlation seed or report then).
    cache_dir
        Cache of fetched stacks (default ``$SPLATSR_CACHE`` or ``~/.cache/splatsr/stacks``).
    mkdir
        Create the output's folder if it is missing (else that is an error).
    uncertainty
        Also write the 1-sigma map ``<stem>.sigma.tif`` (True/"full", or "fast"; tiled too).
    every_date
        Write every observation's observed-date scene (:func:`splatsr.series.fit_series`:
        fits of consecutive dates): ``out`` is then a folder of one COG per observation,
        ``shifts.csv`` and ``items.json`` (a STAC ItemCollection).
    log
        Receives the summary lines (default: the ``splatsr`` logger).

    Returns
    -------
    FitRun

    Raises
    ------
    ConfigError
        For a bad option value, also one found by reading the stack (e.g. the resolution);
        other ``SplatsrError``s for bad input data.
    """
    log, cfg = log or _LOG.info, config or FitConfig()
    out = check_series_dir(out, mkdir=mkdir, config=cfg, uncertainty=uncertainty,
                           psf_sigma_m=psf_sigma_m, init_shifts=init_shifts,
                           report_dir=report_dir) if every_date else check_out(out, mkdir=mkdir)
    cfg.validate()  # bad settings, a missing CUDA too: before any fetch or memory plan
    opts = dict(psf_sigma_m=psf_sigma_m, init_shifts=init_shifts, report_dir=report_dir,
                uncertainty=uncertainty, every_date=every_date)
    tiles = _check_options(source, tiles=tiles, prior=cfg.prior, **opts)
    if tiles is not None and isinstance(source, Mapping):
        return _fit_query_tiled(source, out, cfg=cfg, resolution_m=resolution_m, tiles=tiles,
                                log=log)
    stack = _open(source, cfg=cfg, cache_dir=cache_dir, log=log)
    output_shape(_extent(stack), resolution_m)  # fail before a long fit, not after
    tiles = tiles or _auto_tiles(source, stack, cfg, opts, log)
    if tiles is not None:
        return _fit_tiled(stack, out, cfg=cfg, resolution_m=resolution_m, tiles=tiles, log=log,
                          every_date=every_date)
    if every_date:
        return _fit_series(stack, out, cfg=cfg, resolution_m=resolution_m, log=log,
                           uncertainty=opts["uncertainty"])
    opts.pop("every_date")
    return _fit_whole(stack, out, cfg=cfg, resolution_m=resolution_m, log=log, **opts)



def _auto_tiles(source: Any, stack: Stack, cfg: FitConfig, opts: dict[str, Any],
                log: Callable[[str], None]) -> TileOptions | None:
    """:func:`choose_route`'s tiles, after checking the options work with tiles."""
    tiles = choose_route(stack, cfg, psf_sigma_m=opts["psf_sigma_m"], log=log)
    if tiles is not None:
        tiles = _check_options(source, tiles=tiles, prior=cfg.prior, **opts)
    return tiles


def choose_route(stack: Stack, cfg: FitConfig, *, psf_sigma_m: Any = None, overlap: int = 8,
                 budget_bytes: int | None = None,
                 log: Callable[[str], None] | None = None) -> TileOptions | None:
    """None when the whole-stack fit fits the device's memory, else the tiles to fit in.

    The budget is ``budget_bytes``, else ``SPLATSR_MEMORY_BUDGET_MIB``, else a share of the
    device's free memory (:func:`splatsr.core.memory.device_budget_bytes`).

    Raises
    ------
    ConfigError
        If not even a small tile fits.
    """
    psf = psf_sigma_m if isinstance(psf_sigma_m, (int, float)) else cfg.widest_psf_m()
    T, B = len(stack.observations), len(stack.bands)
    kw = dict(n_obs=T, n_bands=B, pixel_m=stack.pixel_m, spacing_m=cfg.splat_spacing_m,
              psf_sigma_m=psf, lbfgs_history=cfg.lbfgs_history,
              change_cell_m=cfg.finest_change_cell(pixel_m=stack.pixel_m))
    plan = memory.plan_fit_memory(height=stack.height, width=stack.width, **kw)
    device = memory.resolve_device(cfg.device)
    budget = budget_bytes or memory.env_budget_bytes() or memory.device_budget_bytes(device)
    if plan.total <= budget:
        return None
    side = memory.largest_tile(overlap=overlap, budget_bytes=budget, **kw)
    mib = 2 ** 20
    if side is None:
        raise ConfigError(f"a {T} x {B} x {stack.height} x {stack.width} stack does not fit "
                          f"the {budget / mib:.0f} MiB of {device}, not even in small tiles; "
                          "use fewer dates or bands, or a larger splat spacing")
    (log or _LOG.info)(
        f"the whole-stack fit needs ~{plan.total / mib:.0f} MiB, more than the "
        f"{budget / mib:.0f} MiB {device} allows: fitting in tiles of {side} px instead "
        f"(choose with --tile-size)")
    return TileOptions(tile_size=side, overlap=overlap)


def _check_options(source: Any, *, tiles: TileOptions | None, psf_sigma_m: Any,
                   init_shifts: str, report_dir: Any, uncertainty: Any = False,
                   every_date: bool = False, prior: str = DEFAULT_PRIOR) -> TileOptions | None:
    """``tiles`` with the uncertainty mode; a :class:`ConfigError` for options that clash."""
    if isinstance(source, Mapping):
        missing = [k for k in ("aoi", "start", "end") if source.get(k) is None]
        unknown = sorted(set(source) - set(QUERY_KEYS))
        if missing:
            raise ConfigError(f"a STAC query needs {', '.join(missing)} "
                              f"(--aoi needs --start and --end)")
        if unknown:
            raise ConfigError(f"unknown STAC query key(s): {', '.join(unknown)}")
    if init_shifts not in ("zeros", "phasecorr"):
        raise ConfigError(f"init_shifts must be 'zeros' or 'phasecorr', got {init_shifts!r}")
    as_mode(uncertainty)  # a bad mode fails here, before any work
    if tiles is None:
        return None
    if psf_sigma_m == "auto":
        raise ConfigError("--psf-sigma auto is not available with --tile-size; run it on a "
                          "part of the stack and pass the number")
    if init_shifts != "zeros" or report_dir is not None:
        raise ConfigError("--init-shifts phasecorr and --report are not available with "
                          "--tile-size")
    if prior == AUTO_PRIOR:
        raise ConfigError("--prior auto is not available with tiles (--tile-size, or a "
                          "stack too large for one fit); pass tv or huber")
    if every_date and isinstance(source, Mapping):
        raise ConfigError("--every-date with --tile-size needs a stack on disk: fetch it "
                          "first (splatsr fetch), then fit the stack directory")
    return replace(tiles, uncertainty=as_mode(uncertainty))


def _extent(stack: Stack) -> tuple[float, float]:
    return stack.height * stack.pixel_m, stack.width * stack.pixel_m


def _open(source: Any, *, cfg: FitConfig, cache_dir: Any, log: Callable[[str], None]) -> Stack:
    """The stack to fit: as given, read from its directory, or fetched into the cache."""
    if isinstance(source, Stack):
        return source
    if not isinstance(source, Mapping):
        return read_stack(source)
    from splatsr.io.fetch import fetch_cached

    stack = fetch_cached(**source, cache_dir=cache_dir, progress=cfg.progress)
    log(f"stack of {len(stack.observations)} observations in {stack.root}")
    return stack


def _fit_series(stack: Stack, out: Path, *, cfg: FitConfig, resolution_m: float,
                log: Callable[[str], None], uncertainty: Any = False) -> FitRun:
    """The series: fits of consecutive dates, every date's scene (and sigma), shifts and
    items.json."""
    from splatsr.series import fit_series

    series = fit_series(stack, config=cfg)
    run = FitRun(path=out, stack=stack)
    run.series = series.save(out, resolution_m=resolution_m, uncertainty=uncertainty)
    rows, cols = output_shape(_extent(stack), resolution_m)
    n_obs = len(stack.observations)
    log(f"wrote {n_obs} COGs ({cols} x {rows} px at {resolution_m:g} m, "
        f"{len(stack.bands)} bands), shifts.csv and {run.series.name} to {out}; "
        f"{n_obs} observations fitted in {len(series.segments)} segment(s) of consecutive "
        f"dates in {series.seconds:.1f} s")
    if uncertainty:
        log(f"wrote a <id>.sigma.tif beside each COG: per-pixel 1-sigma uncertainty "
            f"({as_mode(uncertainty)} estimate)")
    return run


def _fit_whole(stack: Stack, out: Path, *, cfg: FitConfig, resolution_m: float,
               psf_sigma_m: Any, init_shifts: Any, report_dir: Any,
               log: Callable[[str], None], uncertainty: Any = False) -> FitRun:
    """One fit of the whole stack, then the COG, shifts, sigma, PSF curve and report."""
    device = memory.resolve_device(cfg.device)
    memory.reset_peak(device)
    result = fit(stack, config=cfg, psf_sigma_m=psf_sigma_m, init_shifts=init_shifts,
                 uncertainty=uncertainty)
    peak = memory.peak_allocated(device)
    if peak is not None:
        log(f"peak {device} memory allocated by the fit: {peak / 2 ** 20:.0f} MiB")
    run = FitRun(path=out, stack=stack, fit=result)
    sel, seed_m = result.psf_selection, result.seed_shifts_m
    if sel is not None:
        run.psf_curve = write_psf_curve(psf_curve_path(out), sel, result.band_names)
        log(f"psf sigma auto: {sel.psf_sigma_m:g} m (held-out error per sigma in "
            f"{run.psf_curve.name})")
    rows, cols = output_shape(_extent(stack), resolution_m)
    size = f"{cols} x {rows} px at {resolution_m:g} m, {len(stack.bands)} bands"
    n_obs = _n_used(result, stack)
    effective = f"effective dates: {result.effective_dates():.1f} of {n_obs}"
    for line in date_notes(result):
        log(line)
    run.path = result.save(out, resolution_m=resolution_m)
    log(f"wrote {run.path} ({size}) and {run.path.stem}.shifts.csv; "
        f"{n_obs} observations fitted in {result.seconds:.1f} s; {effective}")
    if uncertainty:
        log(f"wrote {sigma_path(run.path).name}: per-pixel 1-sigma uncertainty "
            f"({result.uncertainty} estimate; its scale set by this stack's spectrum, "
            f"shifts and noise)")
    if seed_m is not None:
        from splatsr.evaluate.registration import shift_from_seed_m

        log(f"mean shift of the fit from the phase-correlation seed: "
            f"{shift_from_seed_m(result.shifts_m, seed_m):.2f} m")
    if report_dir is not None:
        from splatsr.evaluate.report import write_report

        sigma = result.sigma(resolution_m) if uncertainty else None
        run.report = write_report(result, report_dir, pc_shifts=seed_m, sigma=sigma,
                                  resolution_m=resolution_m)
        log(f"wrote {', '.join(p.name for p in run.report.values())} to {report_dir}")
    return run


def date_notes(result: StackFit) -> list[str]:
    """Summary lines on the dates: the observed date a target-date product follows, and
    dates the fit judged outliers (weight below :data:`OUTLIER_WEIGHT`)."""
    ids = [o.id for o in result.stack.observations]
    lines = []
    ds = result.date_scene
    if ds is not None:
        lines.append(f"target date {result.config.target_date} is the acquisition "
                     f"{ids[ds.index]}: its own observation sets the 10 m-scale content "
                     f"(corrected bands: {sum(ds.corrected)} of {len(ds.corrected)})")
    w = result.obs_weights
    for t in np.flatnonzero(w < OUTLIER_WEIGHT) if w is not None else ():
        lines.append(f"date {ids[t]} departs from the other dates beyond the noise (fit weight "
                     f"{w[t]:.2f}: a cloud or haze the mask missed, or a change)"
                     + ("; the product follows its own observation (--no-observed-date: "
                        "the time-weighted scene of the dates)"
                        if ds is not None and ds.index == t else ""))
    return lines


def _n_used(result: StackFit, stack: Stack) -> int:
    """How many of the stack's dates the fit used (the input guard leaves empty ones out)."""
    inputs = result.inputs
    return len(stack.observations) if inputs is None else int(inputs.used_dates.sum())


def _tile_kwargs(out: Path, cfg: FitConfig, resolution_m: float,
                 tiles: TileOptions) -> dict[str, Any]:
    return {"out": out, "tile_size": tiles.tile_size, "overlap": tiles.overlap, "config": cfg,
            "resolution_m": resolution_m, "address": tiles.address, "store": tiles.store,
            "progress": cfg.progress, "uncertainty": tiles.uncertainty}


def _fit_tiled(stack: Stack, out: Path, *, cfg: FitConfig, resolution_m: float,
               tiles: TileOptions, log: Callable[[str], None], every_date: bool = False
               ) -> FitRun:
    kwargs = _tile_kwargs(out, cfg, resolution_m, tiles)
    if every_date:
        from splatsr.tiles.series import fit_series_tiled

        res = fit_series_tiled(stack, out_dir=kwargs.pop("out"), **kwargs)
        log(f"wrote {len(res.observations)} mosaic COGs, shifts.csv, "
            f"{res.tile_shifts_csv.name}, {res.shifts_tif.name} and {res.path.name} to "
            f"{res.path.parent}" + (" (and each date's <id>.sigma.tif)" if res.uncertainty
                                   else "") + f": {_tile_counts(res)}")
        return FitRun(path=out, stack=stack, tiled=res, series=res.path)
    from splatsr.tiles.run import fit_tiled

    res = fit_tiled(stack, **kwargs)
    log(tiled_summary(res))
    return FitRun(path=res.path, stack=stack, tiled=res)


def _fit_query_tiled(query: Mapping[str, Any], out: Path, *, cfg: FitConfig,
                     resolution_m: float, tiles: TileOptions,
                     log: Callable[[str], None]) -> FitRun:
    """Tiles read straight from STAC (no stack on disk; cloud screening is per pixel)."""
    from splatsr.tiles.run import fit_aoi_tiled

    q = {k: v for k, v in query.items() if k not in ("max_cloud", "min_coverage")}
    if "max_workers" in q:
        q["max_reads"] = q.pop("max_workers")
    res = fit_aoi_tiled(**q, **_tile_kwargs(out, cfg, resolution_m, tiles))
    log(tiled_summary(res))
    return FitRun(path=res.path, tiled=res)


def tiled_summary(res: TiledResult) -> str:
    """The one-line summary of a tiled fit."""
    sigma = f"{res.sigma_tif.name}, " if res.sigma_tif is not None else ""
    return (f"wrote {res.path}, {res.path.stem}.shifts.csv, {sigma}"
            f"{res.tile_shifts_csv.name} and {res.shifts_tif.name}: {_tile_counts(res)}")


def _tile_counts(res: TiledResult) -> str:
    return (f"{len(res.tiles)} tiles ({len(res.fitted)} fitted, {len(res.reused)} reused "
            f"from {res.store}, {len(res.empty)} empty) of {len(res.observations)} "
            f"observations in {res.seconds:.1f} s")
