"""The ``splatsr`` command line: a thin layer that converts options and calls the library."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

import splatsr
from splatsr.errors import SplatsrError

if TYPE_CHECKING:
    from splatsr.tiles.run import TiledResult


class _Group(click.Group):
    """Turns every :class:`SplatsrError` into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SplatsrError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


def _list(text: str, name: str, kind: type) -> list:
    """A non-empty comma-separated list of numbers (usage error otherwise)."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {text!r}",
                                 param_hint=name)
    return values


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(splatsr.__version__, prog_name="splatsr")
def main() -> None:
    """splatsr: multi-frame super-resolution of Sentinel-2 by Gaussian-splat fitting."""


def _aoi_option(ctx: click.Context, param: click.Parameter, value: str):
    """``--aoi``: W,S,E,N or a GeoJSON file; a bad AOI is a usage error (exit 2)."""
    from splatsr.errors import ConfigError
    from splatsr.io.fetch import parse_aoi

    if value is None:
        return None
    try:
        return parse_aoi(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _query_options(required: bool):
    """The STAC query options shared by ``fetch`` and ``fit --aoi``."""
    req = "" if required else " (with --aoi)"
    options = [
        click.option("--aoi", required=required, callback=_aoi_option,
                     metavar="W,S,E,N|FILE",
                     help="W,S,E,N in lon/lat degrees, or a GeoJSON file (its bounds)."),
        click.option("--start", required=required, type=click.DateTime(["%Y-%m-%d"]),
                     help=f"First acquisition day, YYYY-MM-DD{req}."),
        click.option("--end", required=required, type=click.DateTime(["%Y-%m-%d"]),
                     help=f"Last acquisition day (inclusive), YYYY-MM-DD{req}."),
        click.option("--bands", default="B02,B03,B04,B08", show_default=True,
                     help="Comma-separated 10 m bands, in file order."),
        click.option("--max-cloud", type=click.FloatRange(0, 1), default=0.2,
                     show_default=True,
                     help="Largest cloud/shadow/cirrus/snow fraction of the observed AOI "
                          "pixels."),
        click.option("--min-coverage", type=click.FloatRange(0, 1), default=0.25,
                     show_default=True,
                     help="Smallest fraction of the AOI a scene must observe (no-data is "
                          "not cloud)."),
        click.option("--stac-url", default="https://planetarycomputer.microsoft.com/api/stac/v1",
                     show_default=True, help="STAC API root."),
        click.option("--collection", default="sentinel-2-l2a", show_default=True),
        click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True,
                     help="Scenes read in parallel (fit --aoi --tile-size: tiles reading "
                          "their windows at once)."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


@main.command("fetch")
@_query_options(required=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Stack directory to write (re-running resumes).")
def fetch_cmd(aoi, start, end, bands, max_cloud, min_coverage, stac_url, collection, workers,
              progress, out_dir) -> None:
    """Fetch a cloud-screened Sentinel-2 L2A stack (one tile, native 10 m grid)."""
    from splatsr.io.fetch import fetch_stack

    stack = fetch_stack(aoi=aoi, start=start.date(), end=end.date(), out_dir=out_dir,
                        bands=bands, max_cloud=max_cloud, min_coverage=min_coverage,
                        stac_url=stac_url, collection=collection, max_workers=workers,
                        progress=progress)
    click.echo(f"wrote {len(stack.observations)} observations of tile "
               f"{stack.meta.get('tile')} ({stack.crs}, {stack.width}x{stack.height} px at "
               f"{stack.pixel_m:g} m) to {stack.root}; {len(stack.meta.get('dropped', []))} "
               "scenes dropped (reasons in stack.json)")


def _config(psf_sigma: float, splat_spacing: float, splat_sigma: float | None,
            coarse_levels: int, adam_steps: int, lbfgs_iters: int, tv: float, device: str,
            seed: int, progress: bool, plain: bool = False) -> splatsr.FitConfig:
    from splatsr.core.solver import PLAIN

    return splatsr.FitConfig(psf_sigma_m=psf_sigma, splat_spacing_m=splat_spacing,
                             splat_sigma_m=splat_sigma, coarse_levels=coarse_levels,
                             adam_steps=adam_steps, lbfgs_iters=lbfgs_iters, tv_weight=tv,
                             device=device, seed=seed, progress=progress,
                             **(PLAIN if plain else {}))


_POS = click.FloatRange(min=0, min_open=True)
_DEFAULT = splatsr.FitConfig()


def _psf_sigma_option(ctx: click.Context, param: click.Parameter, value: str) -> float | str:
    """``--psf-sigma``: a number >= 0 or ``auto`` (a usage error otherwise)."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        sigma = float(value)
    except ValueError:
        sigma = -1.0
    if not sigma >= 0:
        raise click.BadParameter(f"expected a number >= 0 or 'auto', got {value!r}")
    return sigma


@main.command()
@click.argument("stack_dir", required=False, type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output COG; the shifts go to OUT's stem + .shifts.csv beside it.")
@click.option("--sample", is_flag=True, help="Fit the small real stack bundled with splatsr.")
@_query_options(required=False)
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Where --aoi stacks are cached [default: $SPLATSR_CACHE or "
                   "~/.cache/splatsr/stacks].")
@click.option("--resolution", default=2.5, show_default=True, type=_POS,
              help="Output pixel size in metres (must divide the stack extent).")
@click.option("--psf-sigma", default=str(_DEFAULT.psf_sigma_m), show_default=True,
              callback=_psf_sigma_option, metavar="SIGMA|auto",
              help="Gaussian PSF sigma in metres, or 'auto': chosen by held-out-date "
                   "prediction error (5 extra fits; the curve goes to OUT's stem + "
                   ".psf.csv).")
@click.option("--splat-spacing", default=_DEFAULT.splat_spacing_m, show_default=True,
              type=_POS, help="Distance between splat centres in metres.")
@click.option("--splat-sigma", default=None, type=_POS,
              help="Splat sigma in metres [default: 0.8 x the spacing].")
@click.option("--coarse-levels", default=_DEFAULT.coarse_levels, show_default=True,
              type=click.IntRange(min=0), help="Coarser levels (2x spacing each) fitted first.")
@click.option("--adam-steps", default=_DEFAULT.adam_steps, show_default=True,
              type=click.IntRange(min=0), help="Adam warm-up steps at the finest level.")
@click.option("--lbfgs-iters", default=_DEFAULT.lbfgs_iters, show_default=True,
              type=click.IntRange(min=0), help="L-BFGS iterations at the finest level.")
@click.option("--tv", default=_DEFAULT.tv_weight, show_default=True,
              type=click.FloatRange(min=0), help="Total-variation weight (noise units).")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--plain", is_flag=True,
              help="Plain least-squares fit: no per-date gain/offset, no outlier "
                   "down-weighting (the default is robust to haze and unmasked clouds; "
                   "plain is ~0.3 dB sharper on perfectly clean stacks).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: when stderr is a terminal].")
@click.option("--init-shifts", type=click.Choice(["zeros", "phasecorr"]), default="zeros",
              show_default=True,
              help="Start the shifts at zero or at phase-correlation estimates.")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Also write figures (panels, convergence, shifts) into this folder.")
@click.option("--tile-size", default=None, type=click.IntRange(min=8), metavar="N",
              help="Fit in overlapping tiles of N x N 10 m pixels on Dask (each tile with "
                   "its own shifts) and blend them into one COG.")
@click.option("--overlap", default=8, show_default=True, type=click.IntRange(min=0),
              metavar="M", help="Least overlap of neighbouring tiles (pixels); also the "
                                "blend ramp width. With --tile-size.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Scheduler address of an existing Dask cluster [default: a LocalCluster "
                   "on this machine]. With --tile-size.")
@click.option("--tile-cache", default=None, type=click.Path(file_okay=False),
              help="Folder of finished tiles, reused by reruns [default: beside OUT, "
                   "named after it: sr.tif -> sr.tiles]. With --tile-size.")
def fit(stack_dir: str | None, out: str, sample: bool, aoi, start, end, bands: str,
        max_cloud: float, min_coverage: float, stac_url: str, collection: str, workers: int,
        cache_dir: str | None, resolution: float, psf_sigma: float,
        splat_spacing: float, splat_sigma: float | None, coarse_levels: int, adam_steps: int,
        lbfgs_iters: int, tv: float, device: str, seed: int, plain: bool,
        progress: bool | None,
        init_shifts: str = "zeros", report_dir: str | None = None,
        tile_size: int | None = None, overlap: int = 8, dask_address: str | None = None,
        tile_cache: str | None = None) -> None:
    """Fit STACK_DIR (or --sample, or --aoi with --start/--end) and write a COG plus shifts.

    With --aoi the stack is fetched first into a cache folder keyed by the query (reused by
    later runs with the same query). With --aoi and --tile-size nothing is fetched: each tile
    task reads its own window of every scene straight from the COGs (--max-cloud and
    --min-coverage do not apply: cloudy pixels are masked per tile).
    """
    if sum([stack_dir is not None, sample, aoi is not None]) != 1:
        raise click.UsageError("give exactly one of STACK_DIR, --sample or --aoi")
    if aoi is not None and (start is None or end is None):
        raise click.UsageError("--aoi needs --start and --end")
    from splatsr.core.model import output_shape
    from splatsr.io.sample import sample_path

    show = sys.stderr.isatty() if progress is None else progress
    auto_psf = psf_sigma == "auto"
    cfg = _config(_DEFAULT.psf_sigma_m if auto_psf else psf_sigma, splat_spacing, splat_sigma,
                  coarse_levels, adam_steps, lbfgs_iters, tv, device, seed, show, plain)
    if tile_size is not None and auto_psf:
        raise click.UsageError("--psf-sigma auto is not available with --tile-size; run "
                               "it on a part of the stack and pass the number")
    if tile_size is not None and (init_shifts != "zeros" or report_dir is not None):
        raise click.UsageError("--init-shifts phasecorr and --report are not available "
                               "with --tile-size")
    tiled = dict(out=out, tile_size=tile_size, overlap=overlap, config=cfg,
                 resolution_m=resolution, address=dask_address, store=tile_cache,
                 progress=show)
    if aoi is not None and tile_size is not None:
        from splatsr.tiles.run import fit_aoi_tiled

        _report_tiled(fit_aoi_tiled(aoi=aoi, start=start.date(), end=end.date(), bands=bands,
                                    stac_url=stac_url, collection=collection,
                                    max_reads=workers, **tiled))
        return
    if aoi is not None:
        from splatsr.io.fetch import fetch_cached

        stack = fetch_cached(aoi=aoi, start=start.date(), end=end.date(), bands=bands,
                             max_cloud=max_cloud, min_coverage=min_coverage,
                             stac_url=stac_url, collection=collection, cache_dir=cache_dir,
                             progress=show, max_workers=workers)
        click.echo(f"stack of {len(stack.observations)} observations in {stack.root}")
    else:
        stack = splatsr.read_stack(sample_path() if sample else stack_dir)
    extent = (stack.height * stack.pixel_m, stack.width * stack.pixel_m)
    rows, cols = output_shape(extent, resolution)  # fail before a long fit, not after
    if tile_size is not None:
        from splatsr.tiles.run import fit_tiled

        _report_tiled(fit_tiled(stack, **tiled))
        return
    result = splatsr.fit(stack, config=cfg, psf_sigma_m=psf_sigma, init_shifts=init_shifts)
    seed_m, sel = result.seed_shifts_m, result.psf_selection
    if sel is not None:
        from splatsr.workflow import psf_curve_path, write_psf_curve

        curve = write_psf_curve(psf_curve_path(out), sel)
        click.echo(f"psf sigma auto: {sel.psf_sigma_m:g} m (held-out error per sigma in "
                   f"{curve.name})")
    path = result.save(out, resolution_m=resolution)
    click.echo(f"wrote {path} ({cols} x {rows} px at {resolution:g} m, "
               f"{len(stack.bands)} bands) and {path.stem}.shifts.csv; "
               f"{len(stack.observations)} observations fitted in {result.seconds:.1f} s")
    if seed_m is not None:
        from splatsr.evaluate.registration import shift_from_seed_m

        click.echo(f"mean shift of the fit from the phase-correlation seed: "
                   f"{shift_from_seed_m(result.shifts_m, seed_m):.2f} m")
    if report_dir is not None:
        from splatsr.evaluate.report import write_report

        figs = write_report(result, report_dir, pc_shifts=seed_m)
        click.echo(f"wrote {', '.join(p.name for p in figs.values())} to {report_dir}")


def _report_tiled(res: TiledResult) -> None:
    """The one-line summary of ``fit --tile-size`` (see splatsr.tiles.run)."""
    click.echo(f"wrote {res.path}, {res.path.stem}.shifts.csv, "
               f"{res.tile_shifts_csv.name} and {res.shifts_tif.name}: "
               f"{len(res.tiles)} tiles ({len(res.fitted)} fitted, {len(res.reused)} reused "
               f"from {res.store}, {len(res.empty)} empty) of {len(res.observations)} "
               f"observations in {res.seconds:.1f} s")


@main.command()
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Stack directory to create.")
@click.option("--truth-pixel", default=None, type=_POS,
              help="Read the truth's pixels as this size in metres [default: its own].")
@click.option("--pixel", default=10.0, show_default=True, type=_POS,
              help="Observation pixel size in metres.")
@click.option("--n-obs", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--shift-std", default=1.5, show_default=True, type=click.FloatRange(min=0),
              help="Standard deviation of the random shifts in metres.")
@click.option("--psf-sigma", default=4.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--noise", default=0.003, show_default=True, type=click.FloatRange(min=0),
              help="Standard deviation of the added noise (reflectance).")
@click.option("--seed", default=0, show_default=True, type=int)
def simulate(truth: str, out: str, truth_pixel: float | None, pixel: float, n_obs: int,
             shift_std: float, psf_sigma: float, noise: float, seed: int) -> None:
    """Simulate a stack from a high-resolution TRUTH GeoTIFF with known shifts, PSF, noise."""
    from splatsr.evaluate.simulate import read_truth

    image, truth_m, crs, origin, names = read_truth(truth)
    stack = splatsr.simulate_stack(out, image, truth_pixel_m=truth_pixel or truth_m,
                                   pixel_m=pixel, crs=crs, origin=origin, bands=names,
                                   n_obs=n_obs, shift_std_m=shift_std, psf_sigma_m=psf_sigma,
                                   noise_sigma=noise, seed=seed)
    click.echo(f"wrote {stack.root}: {len(stack.observations)} observations of "
               f"{stack.width} x {stack.height} px at {pixel:g} m (truth in truth.tif)")


@main.command("validate")
@click.argument("stack_dir", type=click.Path(path_type=str))
@click.argument("shifts_csv", type=click.Path(path_type=str))
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False),
              help="Write the report as JSON here.")
@click.option("--upsample", default=100, show_default=True, type=click.IntRange(min=1),
              help="Phase-correlation precision: 1/UPSAMPLE of a pixel.")
def validate_cmd(stack_dir: str, shifts_csv: str, out: str | None, upsample: int) -> None:
    """Check SHIFTS_CSV (from fit) against independent phase-correlation shift estimates."""
    from splatsr.evaluate.registration import (
        format_table,
        validate_shifts,
        write_validation,
    )

    report = validate_shifts(stack_dir, shifts_csv, upsample_factor=upsample)
    click.echo(format_table(report))
    if out is not None:
        click.echo(f"wrote {write_validation(report, out)}")


@main.command("sweep")
@click.argument("stack_dir", type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for sweep.csv, sweep.md and the figures.")
@click.option("--psf-sigma", default=str(_DEFAULT.psf_sigma_m), show_default=True,
              help="PSF sigmas in metres, comma-separated.")
@click.option("--n-obs", default=None,
              help="Observation counts, comma-separated [default: all but the held-out one].")
@click.option("--splat-spacing", default=str(_DEFAULT.splat_spacing_m), show_default=True,
              help="Splat spacings in metres, comma-separated.")
@click.option("--truth", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Truth GeoTIFF for PSNR/SSIM [default: a simulated stack's truth.tif].")
@click.option("--holdout/--no-holdout", default=True, show_default=True,
              help="Keep one observation out of every fit and score its prediction.")
@click.option("--coarse-levels", default=_DEFAULT.coarse_levels, show_default=True,
              type=click.IntRange(min=0))
@click.option("--adam-steps", default=_DEFAULT.adam_steps, show_default=True,
              type=click.IntRange(min=0))
@click.option("--lbfgs-iters", default=_DEFAULT.lbfgs_iters, show_default=True,
              type=click.IntRange(min=0))
@click.option("--tv", default=_DEFAULT.tv_weight, show_default=True,
              type=click.FloatRange(min=0), help="Total-variation weight (noise units).")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--seed", default=0, show_default=True, type=int)
def sweep_cmd(stack_dir: str, out: str, psf_sigma: str, n_obs: str | None, splat_spacing: str,
              truth: str | None, holdout: bool, coarse_levels: int, adam_steps: int,
              lbfgs_iters: int, tv: float, device: str, seed: int) -> None:
    """Fit STACK_DIR once per setting (PSF sigma x N obs x spacing) and tabulate the fits."""
    from splatsr.evaluate.sweep import run_sweep

    psfs = _list(psf_sigma, "--psf-sigma", float)
    spacings = _list(splat_spacing, "--splat-spacing", float)
    counts = None if n_obs is None else _list(n_obs, "--n-obs", int)
    cfg = splatsr.FitConfig(coarse_levels=coarse_levels, adam_steps=adam_steps,
                            lbfgs_iters=lbfgs_iters, tv_weight=tv, device=device, seed=seed)
    rows = run_sweep(stack_dir, psf_sigmas=psfs, n_obs=counts, splat_spacings=spacings,
                     out_dir=out, config=cfg, truth=truth, holdout=holdout)
    click.echo(f"wrote {out}/sweep.csv and sweep.md ({len(rows)} fits) and figures; "
               f"{sum(r['seconds'] for r in rows):.1f} s of fitting")


if __name__ == "__main__":
    main()
