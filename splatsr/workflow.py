"""One fit of a stack, start to finish: what ``splatsr fit STACK`` does, as a library call.

The numerical core (:mod:`splatsr.core`) takes arrays and returns arrays; this module composes
it with the stack directory (:mod:`splatsr.io.stack`), the phase-correlation seed
(:mod:`splatsr.evaluate.registration`), the PSF choice (:mod:`splatsr.core.psf`) and the
outputs (COG, shifts CSV, report figures)::

    stack dir --read--> Stack --load--> (T, B, H, W) --fit_arrays--> FitResult
                                                                       |
                                        StackFit (the result + its stack) --save--> COG + CSV
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine

from splatsr import __version__
from splatsr.core.checks import MIN_OBSERVATIONS
from splatsr.core.model import output_shape
from splatsr.core.prior_choice import resolve_prior
from splatsr.core.provenance import fit_tags
from splatsr.core.products.observed import date_scene
from splatsr.core.psf import (
    DEFAULT_CANDIDATES_M,
    PsfSelection,
    select_psf_sigma,
    selection_tags,
)
from splatsr.core.solver import FitConfig, FitResult, fit_arrays
from splatsr.core.products.uncertainty import UncertaintyMode, as_mode, coefficients, sigma_map
from splatsr.errors import ConfigError
from splatsr.io.atomic import write_text_atomic
from splatsr.io.export import (
    shifts_path,
    sigma_path,
    write_cog,
    write_shifts_csv,
    write_sigma_cog,
)
from splatsr.io.stack import Stack, read_observation, read_stack
from splatsr.io.xarray import scene_to_xarray, stack_from_xarray
from splatsr.series import observation_index


@dataclass
class StackFit(FitResult):
    """A :class:`FitResult` that knows its stack, so it can be written as a georeferenced COG."""

    stack: Stack | None = None  # the stack fitted
    psf_selection: PsfSelection | None = None  # the held-out curve, when psf_sigma_m="auto"
    seed_shifts_m: np.ndarray | None = None  # (T, 2) phase-correlation seed, when used
    uncertainty: UncertaintyMode | None = None  # write OUT.sigma.tif on save (fit(uncertainty=))
    data: np.ndarray | None = None  # (T, B, H, W) the fitted data, kept when uncertainty is set

    def sigma(self, resolution_m: float = 2.5, *, mode: UncertaintyMode | None = None
              ) -> np.ndarray:
        """The per-pixel 1-sigma uncertainty of :meth:`render`: (B, H', W') float32.

        Reflectance units, NaN where the scene is NaN (see :mod:`splatsr.core.products.uncertainty`).
        ``mode``: ``"full"`` (default) or ``"fast"`` (no posterior term, cheaper).
        """
        mode = mode or self.uncertainty or "full"
        data = self.data
        if data is None:
            if self.stack is None:
                raise ConfigError("this result has no stack or data; use splatsr.fit on a "
                                  "stack directory, or core.products.uncertainty.sigma_map on arrays")
            data = self.stack.load()
        return sigma_map(self, data, resolution_m=resolution_m, mode=mode,
                         scene=self.render(resolution_m))

    def _georef(self, resolution_m: float) -> tuple[Stack, Affine, list[str]]:
        if self.stack is None:
            raise ConfigError("this result has no stack; save needs one "
                              "(use splatsr.fit on a stack directory)")
        st = self.stack
        transform = st.output_transform(resolution_m)
        return st, transform, [o.id for o in st.observations]

    def save(self, out: str | os.PathLike, *, resolution_m: float = 2.5,
             uncertainty: bool | UncertaintyMode | None = None) -> Path:
        """Write the scene as a COG at ``out`` and the shifts as ``<out stem>.shifts.csv``.

        With ``uncertainty`` (default: as given to :func:`fit`) also the 1-sigma map as
        ``<out stem>.sigma.tif`` (:meth:`save_sigma`). Every file is written to a temporary
        name and renamed, so nothing is half-written.
        """
        st, transform, ids = self._georef(resolution_m)
        out = Path(out)
        image = self.render(resolution_m)
        write_shifts_csv(shifts_path(out), ids=ids,
                         datetimes=[o.datetime for o in st.observations],
                         shifts_m=self.reported_shifts_m(), extra=self.per_observation())
        path = write_cog(out, image, crs=st.crs, transform=transform,
                         band_names=list(self.band_names),
                         tags=self.tags(resolution_m=resolution_m, ids=ids))
        mode = as_mode(self.uncertainty if uncertainty is None else uncertainty)
        if mode:
            self.save_sigma(out, resolution_m=resolution_m, mode=mode)
        return path

    def save_sigma(self, out: str | os.PathLike, *, resolution_m: float = 2.5,
                   mode: UncertaintyMode | None = None) -> Path:
        """Write :meth:`sigma` as ``<out stem>.sigma.tif``: the grid, CRS, bands of ``out``."""
        st, transform, ids = self._georef(resolution_m)
        mode = mode or self.uncertainty or "full"
        tags = self.tags(resolution_m=resolution_m, ids=ids)
        tags.update(uncertainty_mode=mode, uncertainty_components=coefficients(mode))
        return write_sigma_cog(sigma_path(out), self.sigma(resolution_m, mode=mode),
                               crs=st.crs, transform=transform,
                               band_names=list(self.band_names), tags=tags)

    def observation(self, t: int) -> np.ndarray:
        """(B, H, W) observation ``t`` as fitted (NaN where invalid)."""
        if self.data is not None:
            return self.data[t]
        if self.stack is None:
            raise ConfigError("this result has no stack or data to read observations from")
        return read_observation(self.stack, self.stack.observations[t])

    def render_date(self, which: int | str, resolution_m: float = 2.5) -> np.ndarray:
        """Observation ``which`` (index, id or date) as its own scene at ``resolution_m``:
        (B, H', W') float32 in that date's reflectance, the shared fit's fine detail where
        the date agrees with it, corrected until the date's sensor view reproduces its
        observation to within the noise (:mod:`splatsr.core.products.observed`)."""
        t = which if self.stack is None else observation_index(
            self.stack, which, valid_fraction=self.valid_fraction)
        return date_scene(self, self.observation(int(t)), int(t)).render(self, resolution_m)

    def to_xarray(self, resolution_m: float = 2.5) -> Any:
        """The scene at ``resolution_m`` as a georeferenced ``xarray.DataArray`` (band, y, x).

        Coordinates ``x``/``y`` are pixel centres in the stack's CRS; the CRS and transform
        are in a ``spatial_ref`` coordinate. Needs the ``xarray`` extra, whose rioxarray is
        imported here: ``.rio.crs``, ``.rio.transform()``, ``.rio.nodata`` (NaN), and
        ``.rio.to_raster(path)`` writes the band names (in the stack's order) as descriptions.
        For every date as (time, band, y, x): :meth:`splatsr.series.SeriesFit.to_xarray`.
        """
        if self.stack is None:
            raise ConfigError("this result has no stack (its CRS and grid); use splatsr.fit")
        st = self.stack
        transform = st.output_transform(resolution_m)
        return scene_to_xarray(self.render(resolution_m), crs=st.crs, transform=transform,
                               band_names=list(self.band_names),
                               attrs={"units": "reflectance (0-1)",
                                      "software": f"splatsr {__version__}",
                                      "psf_sigma_m": self.config.psf_sigma_m})

    def tags(self, *, resolution_m: float, ids: list[str]) -> dict[str, Any]:
        """The COG's metadata: software, sensor model, settings, product, observations
        (:func:`~splatsr.core.provenance.fit_tags`, the same as a tiled mosaic's)."""
        tags = dict(software=f"splatsr {__version__}", resolution_m=resolution_m,
                    observations=ids,
                    **fit_tags(self.config, band_names=self.band_names,
                               band_offsets_m=self.band_offsets_m,
                               anchored=self.anchor is not None,
                               observed=self.date_scene is not None))
        if self.psf_selection is not None:
            tags.update(selection_tags(self.psf_selection))
        return tags


def _with_overrides(config: FitConfig | None, overrides: dict[str, Any]) -> FitConfig:
    cfg = config or FitConfig()
    unknown = set(overrides) - {f.name for f in fields(FitConfig)}
    if unknown:
        raise ConfigError(f"unknown fit option(s): {', '.join(sorted(unknown))}")
    return replace(cfg, **overrides)


def fit(stack: Stack | str | os.PathLike, *, config: FitConfig | None = None,
        psf_sigma_m: float | Literal["auto"] | None = None,
        init_shifts: Literal["zeros", "phasecorr"] = "zeros",
        init_shifts_m: np.ndarray | None = None,
        resolution_m: float | None = None,
        uncertainty: bool | UncertaintyMode = False, **overrides: Any) -> StackFit:
    """Fit a stack directory (or a :class:`Stack`): the scene and the per-date shifts.

    Parameters
    ----------
    stack
        A stack directory path, a :class:`Stack` from :func:`read_stack`, or an
        ``xarray.DataArray`` (time, band, y, x) of reflectance on the native 10 m grid with its
        CRS (see :func:`splatsr.io.xarray.stack_from_xarray`).
    config
        Solver settings (default :class:`FitConfig()`).
    psf_sigma_m
        PSF width in metres, or ``"auto"``: chosen by held-out-date prediction error
        (:func:`splatsr.core.psf.select_psf_sigma`, 5 extra fits). Default: the config's.
    init_shifts
        ``"zeros"`` or ``"phasecorr"`` (start at phase-correlation estimates).
    init_shifts_m
        (T, 2) explicit starting shifts ``(dx_m, dy_m)``; overrides ``init_shifts``.
    resolution_m
        If given, checked against the stack extent before the fit (fail fast).
    uncertainty
        True/"full"/"fast": keep the data for ``.sigma()``; ``.save`` adds ``<stem>.sigma.tif``.
    **overrides
        Fields of :class:`FitConfig` to change, e.g. ``tv_weight=0.1``.

    Returns
    -------
    StackFit
        ``.render(resolution_m)``, ``.shifts_m``, ``.history``, ``.save(path)``.
    """
    if not isinstance(stack, (Stack, str, os.PathLike)):
        stack = stack_from_xarray(stack)  # an xarray.DataArray, or a clear ConfigError
    if not isinstance(stack, Stack):
        stack = read_stack(stack)
    if psf_sigma_m is not None and psf_sigma_m != "auto":
        overrides = dict(overrides, psf_sigma_m=float(psf_sigma_m))
    cfg = _with_overrides(config, overrides)
    if resolution_m is not None:
        output_shape((stack.height * stack.pixel_m, stack.width * stack.pixel_m), resolution_m)
    data = stack.load()
    if init_shifts_m is None and init_shifts == "phasecorr":
        from splatsr.evaluate.registration import phasecorr_seed

        init_shifts_m = phasecorr_seed(data, pixel_m=stack.pixel_m)
    elif init_shifts not in ("zeros", "phasecorr"):
        raise ConfigError(f"init_shifts must be 'zeros' or 'phasecorr', got {init_shifts!r}")
    cfg = resolve_prior(cfg, data, pixel_m=stack.pixel_m)  # prior="auto": few-date choice
    sel = None
    if psf_sigma_m == "auto":
        sel = choose_psf(data, pixel_m=stack.pixel_m, config=cfg, band_names=stack.bands)
        cfg = replace(cfg, psf_sigma_m=sel.psf_sigma_m, band_psf_sigma_m=None)
    res = fit_arrays(data, pixel_m=stack.pixel_m, config=cfg, band_names=stack.bands,
                     init_shifts_m=init_shifts_m, dates=[o.datetime for o in stack.observations])
    out = StackFit(**{f.name: getattr(res, f.name) for f in fields(FitResult)})
    out.stack, out.psf_selection, out.seed_shifts_m = stack, sel, init_shifts_m
    return _keep_for_sigma(out, uncertainty, data)


def _keep_for_sigma(out: StackFit, uncertainty: bool | str, data: np.ndarray) -> StackFit:
    """Set ``out.uncertainty`` and keep ``data`` when an uncertainty map is asked for."""
    if uncertainty:
        out.uncertainty = as_mode(uncertainty)
        out.data = data
    return out


def choose_psf(data: np.ndarray, *, pixel_m: float, config: FitConfig,
               band_names: tuple[str, ...] | None = None, n_holdout: int = 2
               ) -> PsfSelection:
    """:func:`select_psf_sigma` with as many held-out dates as the stack can spare (1 or 2)."""
    n_holdout = min(n_holdout, max(1, data.shape[0] - MIN_OBSERVATIONS))
    return select_psf_sigma(data, pixel_m=pixel_m, candidates_m=DEFAULT_CANDIDATES_M,
                            config=config, n_holdout=n_holdout, band_names=band_names)


def fit_auto_psf(stack: Stack | str | os.PathLike, *, config: FitConfig | None = None,
                 init_shifts_m: np.ndarray | None = None) -> tuple[StackFit, PsfSelection]:
    """``fit(stack, psf_sigma_m="auto")``, returning the selection beside the result."""
    res = fit(stack, config=config, psf_sigma_m="auto", init_shifts_m=init_shifts_m)
    assert res.psf_selection is not None  # set by psf_sigma_m="auto"
    return res, res.psf_selection


def psf_curve_path(out: str | os.PathLike) -> Path:
    """``sr.tif`` -> ``sr.psf.csv`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".psf.csv")


def write_psf_curve(path: str | os.PathLike, sel: PsfSelection,
                    band_names: Sequence[str] = ()) -> Path:
    """Write the selection curve as CSV: ``psf_sigma_m,heldout_rmse,fit_seconds,chosen``,
    then each band's own held-out error, ``heldout_rmse_<band>`` (``band_names``)."""
    bands = list(band_names)
    lines = [",".join(["psf_sigma_m,heldout_rmse,fit_seconds,chosen",
                       *(f"heldout_rmse_{b}" for b in bands)])]
    for r in sel.curve:
        cells = [f"{r['psf_sigma_m']:g}", f"{r['heldout_rmse']:.6g}", f"{r['fit_seconds']:.2f}",
                 f"{int(r['psf_sigma_m'] == sel.psf_sigma_m)}"]
        cells += [f"{r['band_heldout_rmse'][k]:.6g}" for k in range(len(bands))]
        lines.append(",".join(cells))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Path(path)
