"""The numerical core: arrays in, arrays out, no files.

:mod:`~splatsr.core.render` integrates Gaussians over pixels along one axis (a dense reference
and a fast path with a fixed number of operator calls); :mod:`~splatsr.core.model` is the splat
lattice and the forward model (shift, PSF, 10 m pixel); :mod:`~splatsr.core.solver` fits scene
and shifts jointly (Adam, then L-BFGS, coarse to fine) from :mod:`~splatsr.core.config`,
:mod:`~splatsr.core.scaling`, :mod:`~splatsr.core.robust`, :mod:`~splatsr.core.prior`,
:mod:`~splatsr.core.dates`, :mod:`~splatsr.core.change`, :mod:`~splatsr.core.bands`,
:mod:`~splatsr.core.objective`, :mod:`~splatsr.core.levels` and :mod:`~splatsr.core.result`;
:mod:`~splatsr.core.products.consensus` anchors the consensus and target-date scenes to the dates
(interpolated by :mod:`~splatsr.core.products.cubic`); :mod:`~splatsr.core.psf` chooses the PSF width
from held-out dates; :mod:`~splatsr.core.products.uncertainty` gives the per-pixel 1-sigma map;
:mod:`~splatsr.core.memory` plans a fit's memory; :mod:`~splatsr.core.checks` validates user
arrays.
"""

from splatsr.core.checks import MIN_OBSERVATIONS, check_stack_array, integer_ratio
from splatsr.core.model import SplatGrid, render_latent, render_observations
from splatsr.core.psf import (
           PsfSelection,
           heldout_error,
           pick_psf_sigma,
           select_psf_sigma,
)
from splatsr.core.solver import PLAIN, FitConfig, FitResult, fit_arrays, noise_sigma
from splatsr.core.products.uncertainty import sigma_map

__all__ = ["MIN_OBSERVATIONS", "PLAIN", "FitConfig", "FitResult", "PsfSelection", "SplatGrid",
           "check_stack_array", "fit_arrays", "heldout_error", "integer_ratio", "noise_sigma",
           "pick_psf_sigma", "render_latent", "render_observations", "select_psf_sigma",
           "sigma_map"]
