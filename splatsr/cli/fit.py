"""``splatsr fit``: options -> :func:`splatsr.pipeline.run_fit`."""

from __future__ import annotations

from typing import Any

import click

from splatsr.cli.group import main
from splatsr.cli.options import (
    POSITIVE,
    config_options,
    fit_config,
    progress_option,
    query_options,
    show_progress,
    stac_query,
)


@main.command()
@click.argument("stack_dir", required=False, type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Output COG (.tif); the shifts go to OUT's stem + .shifts.csv beside it. "
                   "With --every-date a folder.")
@click.option("--every-date", is_flag=True,
              help="Write every observation's scene, sharpened (fits of consecutive dates): "
                   "OUT is a folder of one COG per observation, shifts.csv and items.json (a "
                   "STAC ItemCollection). With --tile-size one mosaic per observation.")
@click.option("--mkdir", is_flag=True, help="Create OUT's folder if it does not exist.")
@click.option("--sample", is_flag=True, help="Fit the small real stack bundled with splatsr.")
@query_options(required=False)
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Where --aoi stacks are cached [default: $SPLATSR_CACHE or "
                   "~/.cache/splatsr/stacks].")
@click.option("--resolution", "resolution_m", default=2.5, show_default=True, type=POSITIVE,
              help="Output pixel size in metres (must divide the stack extent).")
@config_options("fit")
@click.option("--plain", is_flag=True,
              help="Plain least-squares fit: no per-date gain/offset, change layer or "
                   "outlier down-weighting (the default is robust to haze and unmasked clouds; "
                   "plain is ~0.3 dB sharper on perfectly clean stacks).")
@progress_option("Progress bars")
@click.option("--init-shifts", type=click.Choice(["zeros", "phasecorr"]), default="zeros",
              show_default=True,
              help="Start the shifts at zero or at phase-correlation estimates.")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Also write figures (panels, convergence, shifts) into this folder.")
@click.option("--uncertainty", is_flag=True,
              help="Also write OUT's stem + .sigma.tif (with --every-date: each date's "
                   "<id>.sigma.tif): the per-pixel 1-sigma uncertainty of every band, its "
                   "scale set by the stack's own spectrum, shifts and noise.")
@click.option("--uncertainty-mode", type=click.Choice(["full", "fast"]), default="full",
              show_default=True,
              help="With --uncertainty: full (posterior + dates + detail) or fast (no "
                   "posterior term; cheaper on large stacks).")
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
def fit(stack_dir: str | None, sample: bool, plain: bool, progress: bool | None,
        psf_sigma_m: float | str, tile_size: int | None, overlap: int,
        dask_address: str | None, tile_cache: str | None, uncertainty: bool,
        uncertainty_mode: str, **opts: Any) -> None:
    """Fit STACK_DIR (or --sample, or --aoi with --start/--end) and write a COG plus shifts.

    With --aoi the stack is fetched first into a cache folder keyed by the query (reused by
    later runs with the same query). With --aoi and --tile-size nothing is fetched: each tile
    task reads its own window of every scene straight from the COGs (--max-cloud and
    --min-coverage do not apply: cloudy pixels are masked per tile).
    """
    from splatsr.core.solver import PLAIN
    from splatsr.io.sample import sample_path
    from splatsr.pipeline import TileOptions, run_fit

    query = stac_query(opts)
    if sum([stack_dir is not None, sample, query["aoi"] is not None]) != 1:
        raise click.UsageError("give exactly one of STACK_DIR, --sample or --aoi")
    if query["aoi"] is not None and (query["start"] is None or query["end"] is None):
        raise click.UsageError("--aoi needs --start and --end")
    source = query if query["aoi"] is not None else sample_path() if sample else stack_dir
    fixed = dict(PLAIN if plain else {}, progress=show_progress(progress))
    if psf_sigma_m != "auto":
        fixed["psf_sigma_m"] = psf_sigma_m
    tiles = None if tile_size is None else TileOptions(tile_size, overlap, dask_address,
                                                       tile_cache)
    # what is left of opts is named as run_fit's arguments: out, mkdir, cache_dir,
    # resolution_m, init_shifts, report_dir
    run_fit(source, config=fit_config(opts, **fixed), tiles=tiles, psf_sigma_m=psf_sigma_m,
            uncertainty=uncertainty_mode if uncertainty else False, log=click.echo, **opts)
