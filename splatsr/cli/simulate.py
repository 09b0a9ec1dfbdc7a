"""``splatsr simulate``: options -> :func:`splatsr.simulate_stack`."""

from __future__ import annotations

import click

from splatsr.cli.group import main
from splatsr.cli.options import POSITIVE


@main.command()
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Stack directory to create.")
@click.option("--truth-pixel", default=None, type=POSITIVE,
              help="Read the truth's pixels as this size in metres [default: its own].")
@click.option("--pixel", default=10.0, show_default=True, type=POSITIVE,
              help="Observation pixel size in metres.")
@click.option("--n-obs", default=16, show_default=True, type=click.IntRange(min=1),
              help="Number of observations (dates) to simulate.")
@click.option("--shift-std", default=1.5, show_default=True, type=click.FloatRange(min=0),
              help="Standard deviation of the random shifts in metres.")
@click.option("--psf-sigma", default=4.0, show_default=True, type=click.FloatRange(min=0),
              help="Gaussian PSF sigma of the simulated sensor in metres.")
@click.option("--noise", default=0.003, show_default=True, type=click.FloatRange(min=0),
              help="Standard deviation of the added noise (reflectance).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed of the shifts and the noise.")
def simulate(truth: str, out: str, truth_pixel: float | None, pixel: float, n_obs: int,
             shift_std: float, psf_sigma: float, noise: float, seed: int) -> None:
    """Simulate a stack from a high-resolution TRUTH GeoTIFF with known shifts, PSF, noise."""
    from splatsr.evaluate.simulate import read_truth, simulate_stack

    image, truth_m, crs, origin, names = read_truth(truth)
    stack = simulate_stack(out, image, truth_pixel_m=truth_pixel or truth_m, pixel_m=pixel,
                           crs=crs, origin=origin, bands=names, n_obs=n_obs,
                           shift_std_m=shift_std, psf_sigma_m=psf_sigma, noise_sigma=noise,
                           seed=seed)
    click.echo(f"wrote {stack.root}: {len(stack.observations)} observations of "
               f"{stack.width} x {stack.height} px at {pixel:g} m (truth in truth.tif)")
