"""Options shared by the commands, and the one table of solver options.

:data:`CONFIG_OPTIONS` is the single source of the solver flags of ``fit`` and ``sweep``: one
row per :class:`~splatsr.FitConfig` field with its flag and help; the default is read from
``FitConfig()``, and the click parameter is named after the field, so :func:`fit_config`
builds the config from the parsed values without copying fields by hand. A new
``FitConfig`` field gets a flag by adding one row; a row whose field does not exist (yet) is
left out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import click

from splatsr.core.config import AUTO_PRIOR
from splatsr.core.prior import PRIORS
from splatsr.core.solver import FitConfig

POSITIVE = click.FloatRange(min=0, min_open=True)
DEVICES = click.Choice(["auto", "cpu", "cuda"])
_FIELDS = {f.name for f in fields(FitConfig)}
_DEFAULT = FitConfig()


def psf_sigma_value(ctx: click.Context, param: click.Parameter, value: Any) -> float | str:
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


def band_psf_value(ctx: click.Context, param: click.Parameter, value: Any
                   ) -> tuple[float, ...] | None:
    """``--band-psf-sigma``: comma-separated numbers >= 0, one per band (a usage error
    otherwise); None when not given."""
    if value is None:
        return None
    try:
        widths = tuple(float(v) for v in str(value).split(","))
    except ValueError:
        widths = (-1.0,)
    if not all(w >= 0 for w in widths):
        raise click.BadParameter(f"expected one number >= 0 per band, comma-separated "
                                 f"(e.g. 4.2,4,3.8,4.5), got {value!r}")
    return widths


def iso_date(value: Any) -> str | None:
    """A parsed ``click.DateTime`` as ``YYYY-MM-DD`` text (JSON-safe in the COG's tags)."""
    return None if value is None else value.date().isoformat()


@dataclass(frozen=True)
class ConfigOption:
    """The flag of one :class:`FitConfig` field."""

    field: str  # the FitConfig field (also the click parameter name)
    flag: str  # e.g. "--tv"
    help: str
    type: Any = None  # click type; None: from the default
    metavar: str | None = None
    callback: Callable[..., Any] | None = None  # parses the value (fit)
    convert: Callable[[Any], Any] | None = None  # parsed value -> field value
    sweep: Literal["same", "list", "none"] = "same"  # in sweep: as is, comma-separated, absent
    list_help: str = ""  # help of the comma-separated form (sweep="list")

    @property
    def default(self) -> Any:
        return getattr(_DEFAULT, self.field)


CONFIG_OPTIONS: tuple[ConfigOption, ...] = tuple(row for row in (
    ConfigOption("psf_sigma_m", "--psf-sigma",
                 "Gaussian PSF sigma in metres, or 'auto': chosen by held-out-date prediction "
                 "error, one for every band (5 extra fits; the curve, with each band's own "
                 "error, goes to OUT's stem + .psf.csv).",
                 metavar="SIGMA|auto", callback=psf_sigma_value, sweep="list",
                 list_help="PSF sigmas in metres, comma-separated: one fit per value."),
    ConfigOption("band_psf_sigma_m", "--band-psf-sigma",
                 "PSF sigma of each band in metres, comma-separated in the stack's band "
                 "order [default: --psf-sigma for every band].",
                 metavar="S1,S2,...", callback=band_psf_value, sweep="none"),
    ConfigOption("splat_spacing_m", "--splat-spacing",
                 "Distance between splat centres in metres.", POSITIVE, sweep="list",
                 list_help="Splat spacings in metres, comma-separated: one fit per value."),
    ConfigOption("splat_sigma_m", "--splat-sigma",
                 "Splat sigma in metres [default: 0.8 x the spacing].", POSITIVE, sweep="none"),
    ConfigOption("coarse_levels", "--coarse-levels",
                 "Coarser levels (2x spacing each) fitted first.", click.IntRange(min=0)),
    ConfigOption("adam_steps", "--adam-steps", "Adam warm-up steps at the finest level.",
                 click.IntRange(min=0)),
    ConfigOption("lbfgs_iters", "--lbfgs-iters", "L-BFGS iterations at the finest level.",
                 click.IntRange(min=0)),
    ConfigOption("tv_weight", "--tv", "Total-variation weight (noise units).",
                 click.FloatRange(min=0)),
    ConfigOption("device", "--device", "Where to fit: auto (CUDA when torch sees a GPU), cpu "
                 "or cuda.", DEVICES),
    ConfigOption("seed", "--seed", "Random seed (the same seed gives the same fit).", int),
    ConfigOption("target_date", "--target-date",
                 "Fit the scene as of this day, YYYY-MM-DD (need not be a stack date) "
                 "[default: the consensus of all dates].",
                 click.DateTime(["%Y-%m-%d"]), convert=iso_date, sweep="none"),
    ConfigOption("time_window_days", "--time-window",
                 "Width in days of the weighting of dates around --target-date [default: 3 "
                 "times the distance to the nearest clear date, within 10-40].",
                 POSITIVE, metavar="DAYS", sweep="none"),
    ConfigOption("change_cell_m", "--change-cell",
                 "Fit a smooth per-date change layer on a lattice of this spacing in metres "
                 "(0 = off) [default: 40 with --target-date; for the consensus a node per "
                 "pixel where the dates differ at 40 m beyond noise, else off].",
                 click.FloatRange(min=0), metavar="METRES"),
    ConfigOption("change_weight", "--change-weight",
                 "Roughness penalty of the change layer (noise units) [default: 0.1 for the "
                 "consensus's automatic layer, else 1].",
                 click.FloatRange(min=0)),
    ConfigOption("band_offsets", "--band-offsets/--no-band-offsets",
                 "Estimate per-band sub-pixel offsets from the bands' shared edges and put "
                 "every band in the first band's frame."),
    ConfigOption("median_anchor", "--median-anchor/--no-median-anchor",
                 "Take the pixel-scale content from the per-pixel median of the dates "
                 "(time-weighted with --target-date), the detail from the fit.", sweep="none"),
    ConfigOption("observed_date", "--observed-date/--no-observed-date",
                 "When --target-date is an acquisition of the stack, its own observation "
                 "decides the 10 m-scale content (the other dates lend the detail it agrees "
                 "with); --no-observed-date: the time-weighted scene of the dates.",
                 sweep="none"),
    ConfigOption("season_blend", "--season-blend/--no-season-blend",
                 "With the observed-date scene: average it with the same date's scene from "
                 "a fit of the whole season (a second fit); --no-season-blend: the "
                 "time-weighted fit's scene alone.", sweep="none"),
    ConfigOption("prior", "--prior", "Scene prior: vtv (default: TV that couples the bands' "
                 "edges), tv (per band), huber (smooth where undetermined) or auto (with 3-5 "
                 "dates huber at the weight that predicts left-out dates best, else vtv).",
                 click.Choice([*PRIORS, AUTO_PRIOR])),
) if row.field in _FIELDS)


def _click_option(row: ConfigOption, listed: bool) -> Callable[[Any], Any]:
    if listed:
        return click.option(row.flag, row.field, default=f"{row.default:g}", show_default=True,
                            metavar="X,Y,...", help=row.list_help)
    default = row.default
    if row.callback is not None and default is not None:
        default = str(default)
    return click.option(row.flag, row.field, default=default, type=row.type,
                        show_default=default is not None, metavar=row.metavar,
                        callback=row.callback, help=row.help)


def config_options(command: Literal["fit", "sweep"]) -> Callable[[Any], Any]:
    """Decorate a command with the solver flags of :data:`CONFIG_OPTIONS`."""
    rows = [r for r in CONFIG_OPTIONS if command == "fit" or r.sweep != "none"]

    def decorate(f: Any) -> Any:
        for row in reversed(rows):
            f = _click_option(row, listed=command == "sweep" and row.sweep == "list")(f)
        return f
    return decorate


def fit_config(values: dict[str, Any], **fixed: Any) -> FitConfig:
    """Pop the :data:`CONFIG_OPTIONS` values out of ``values`` into a :class:`FitConfig`.

    ``fixed`` fields win over parsed ones (e.g. ``progress``, or the ``--plain`` settings).
    """
    picked = {}
    for row in CONFIG_OPTIONS:
        if row.field in values:
            value = values.pop(row.field)
            picked[row.field] = row.convert(value) if row.convert else value
    return FitConfig(**{**picked, **fixed})


def list_of(text: str, name: str, kind: type) -> list:
    """A non-empty comma-separated list of numbers (usage error otherwise)."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {text!r}",
                                 param_hint=name)
    return values


def progress_option(what: str) -> Callable[[Any], Any]:
    """``--progress/--no-progress``, default: when stderr is a terminal."""
    return click.option("--progress/--no-progress", default=None,
                        help=f"{what} on stderr [default: when stderr is a terminal].")


def show_progress(progress: bool | None) -> bool:
    """The ``--progress`` choice, or whether stderr is a terminal when none was made."""
    return sys.stderr.isatty() if progress is None else progress


def _aoi_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--aoi``: W,S,E,N or a GeoJSON file; a bad AOI is a usage error (exit 2)."""
    from splatsr.errors import ConfigError
    from splatsr.io.fetch import parse_aoi

    if value is None:
        return None
    try:
        return parse_aoi(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def query_options(required: bool) -> Callable[[Any], Any]:
    """The STAC query options shared by ``fetch`` and ``fit --aoi``."""
    req = "" if required else " (with --aoi)"
    day = click.DateTime(["%Y-%m-%d"])
    options = [
        click.option("--aoi", required=required, callback=_aoi_value, metavar="W,S,E,N|FILE",
                     help="W,S,E,N in lon/lat degrees, or a GeoJSON file (its bounds)."),
        click.option("--start", required=required, type=day,
                     help=f"First acquisition day, YYYY-MM-DD{req}."),
        click.option("--end", required=required, type=day,
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
        click.option("--collection", default="sentinel-2-l2a", show_default=True,
                     help="STAC collection of Sentinel-2 L2A items."),
        click.option("--workers", "max_workers", type=click.IntRange(1, 32), default=4,
                     show_default=True,
                     help="Scenes read in parallel (fit --aoi --tile-size: tiles reading "
                          "their windows at once)."),
    ]

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def stac_query(values: dict[str, Any]) -> dict[str, Any]:
    """Pop the :func:`query_options` values out of ``values`` into a STAC query mapping."""
    query = {k: values.pop(k) for k in ("aoi", "start", "end", "bands", "max_cloud",
                                         "min_coverage", "stac_url", "collection",
                                         "max_workers")}
    for day in ("start", "end"):
        if query[day] is not None:
            query[day] = query[day].date()
    return query
