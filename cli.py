"""The ``splatsr`` command line: a thin layer that converts options and calls the library.

Installed as the module ``splatsr_cli.cli`` (see pyproject.toml) so that it never shadows
another distribution's top-level ``cli`` module; ``python cli.py ...`` also works from a
checkout.
"""

from __future__ import annotations

import sys

import click

import splatsr
from splatsr.errors import SplatsrError


class _Group(click.Group):
    """Turns every :class:`SplatsrError` into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SplatsrError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


def _floats(text: str | None, name: str) -> list[float] | None:
    """Parse a comma-separated list of numbers (usage error on bad input)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}",
                                 param_hint=name) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(splatsr.__version__, prog_name="splatsr")
def main() -> None:
    """splatsr: multi-frame super-resolution of Sentinel-2 by Gaussian-splat fitting."""


def _aoi_option(ctx: click.Context, param: click.Parameter, value: str):
    """``--aoi``: W,S,E,N or a GeoJSON file; a bad AOI is a usage error (exit 2)."""
    from splatsr.errors import ConfigError
    from splatsr.fetch import parse_aoi

    try:
        return parse_aoi(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("fetch")
@click.option("--aoi", required=True, callback=_aoi_option, metavar="W,S,E,N|FILE",
              help="W,S,E,N in lon/lat degrees, or a GeoJSON file (its bounds).")
@click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="First acquisition day, YYYY-MM-DD.")
@click.option("--end", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Last acquisition day (inclusive), YYYY-MM-DD.")
@click.option("--bands", default="B02,B03,B04,B08", show_default=True,
              help="Comma-separated 10 m bands, in file order.")
@click.option("--max-cloud", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Largest cloud/shadow/cirrus/snow fraction of the observed AOI pixels.")
@click.option("--min-coverage", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Smallest fraction of the AOI a scene must observe (no-data is not cloud).")
@click.option("--stac-url", default="https://planetarycomputer.microsoft.com/api/stac/v1",
              show_default=True, help="STAC API root.")
@click.option("--collection", default="sentinel-2-l2a", show_default=True)
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Scenes read in parallel.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Stack directory to write (re-running resumes).")
def fetch_cmd(aoi, start, end, bands, max_cloud, min_coverage, stac_url, collection, workers,
              progress, out_dir) -> None:
    """Fetch a cloud-screened Sentinel-2 L2A stack (one tile, native 10 m grid)."""
    from splatsr.fetch import fetch_stack

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
            seed: int, progress: bool) -> splatsr.FitConfig:
    return splatsr.FitConfig(psf_sigma_m=psf_sigma, splat_spacing_m=splat_spacing,
                             splat_sigma_m=splat_sigma, coarse_levels=coarse_levels,
                             adam_steps=adam_steps, lbfgs_iters=lbfgs_iters, tv_weight=tv,
                             device=device, seed=seed, progress=progress)


_POS = click.FloatRange(min=0, min_open=True)
_DEFAULT = splatsr.FitConfig()


@main.command()
@click.argument("stack_dir", required=False, type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output COG; the shifts go to OUT's stem + .shifts.csv beside it.")
@click.option("--sample", is_flag=True, help="Fit the small real stack bundled with splatsr.")
@click.option("--resolution", default=2.5, show_default=True, type=_POS,
              help="Output pixel size in metres (must divide the stack extent).")
@click.option("--psf-sigma", default=_DEFAULT.psf_sigma_m, show_default=True,
              type=click.FloatRange(min=0), help="Gaussian PSF sigma in metres.")
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
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: when stderr is a terminal].")
def fit(stack_dir: str | None, out: str, sample: bool, resolution: float, psf_sigma: float,
        splat_spacing: float, splat_sigma: float | None, coarse_levels: int, adam_steps: int,
        lbfgs_iters: int, tv: float, device: str, seed: int, progress: bool | None) -> None:
    """Fit STACK_DIR (or --sample) and write a super-resolved COG plus the shifts."""
    if (stack_dir is None) == (not sample):
        raise click.UsageError("give exactly one of STACK_DIR or --sample")
    from splatsr.model import output_shape
    from splatsr.sample import sample_path

    stack = splatsr.read_stack(sample_path() if sample else stack_dir)
    extent = (stack.height * stack.pixel_m, stack.width * stack.pixel_m)
    rows, cols = output_shape(extent, resolution)  # fail before a long fit, not after
    cfg = _config(psf_sigma, splat_spacing, splat_sigma, coarse_levels, adam_steps,
                  lbfgs_iters, tv, device, seed,
                  sys.stderr.isatty() if progress is None else progress)
    result = splatsr.fit(stack, config=cfg)
    path = result.save(out, resolution_m=resolution)
    click.echo(f"wrote {path} ({cols} x {rows} px at {resolution:g} m, "
               f"{len(stack.bands)} bands) and {path.stem}.shifts.csv; "
               f"{len(stack.observations)} observations fitted in {result.seconds:.1f} s")


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
    from splatsr.simulate import read_truth

    image, truth_m, crs, origin, names = read_truth(truth)
    stack = splatsr.simulate_stack(out, image, truth_pixel_m=truth_pixel or truth_m,
                                   pixel_m=pixel, crs=crs, origin=origin, bands=names,
                                   n_obs=n_obs, shift_std_m=shift_std, psf_sigma_m=psf_sigma,
                                   noise_sigma=noise, seed=seed)
    click.echo(f"wrote {stack.root}: {len(stack.observations)} observations of "
               f"{stack.width} x {stack.height} px at {pixel:g} m (truth in truth.tif)")


if __name__ == "__main__":
    main()
