"""``splatsr sweep``: options -> :func:`splatsr.evaluate.sweep.run_sweep`."""

from __future__ import annotations

from typing import Any

import click

from splatsr.cli.group import main
from splatsr.cli.options import config_options, fit_config, list_of


@main.command("sweep")
@click.argument("stack_dir", type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for sweep.csv, sweep.md and the figures.")
@click.option("--n-obs", default=None,
              help="Observation counts, comma-separated [default: all but the held-out one].")
@config_options("sweep")
@click.option("--truth", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Truth GeoTIFF for PSNR/SSIM [default: a simulated stack's truth.tif].")
@click.option("--holdout/--no-holdout", default=True, show_default=True,
              help="Keep one observation out of every fit and score its prediction.")
def sweep_cmd(stack_dir: str, out: str, n_obs: str | None, truth: str | None, holdout: bool,
              psf_sigma_m: str, splat_spacing_m: str, **opts: Any) -> None:
    """Fit STACK_DIR once per setting (PSF sigma x N obs x spacing) and tabulate the fits."""
    from splatsr.evaluate.sweep import run_sweep

    psfs = list_of(psf_sigma_m, "--psf-sigma", float)
    spacings = list_of(splat_spacing_m, "--splat-spacing", float)
    counts = None if n_obs is None else list_of(n_obs, "--n-obs", int)
    rows = run_sweep(stack_dir, psf_sigmas=psfs, n_obs=counts, splat_spacings=spacings,
                     out_dir=out, config=fit_config(opts), truth=truth, holdout=holdout)
    skipped = sorted(set(counts or []) - {int(r["n_obs"]) for r in rows})
    if skipped:
        click.echo(f"skipped --n-obs {','.join(map(str, skipped))}: a fit needs between 2 "
                   f"and the stack's observations{' less the held-out one' if holdout else ''}"
                   " (see sweep.md)", err=True)
    click.echo(f"wrote {out}/sweep.csv and sweep.md ({len(rows)} fits) and figures; "
               f"{sum(r['seconds'] for r in rows):.1f} s of fitting")
