"""The numerical core: arrays in, arrays out, no files.

:mod:`~splatsr.core.render` integrates Gaussians over pixels along one axis (a dense reference
and a banded fast path with a hand-written backward); :mod:`~splatsr.core.model` is the splat
lattice and the forward model of one observation (shift, PSF, 10 m pixel); :mod:`~splatsr.core.
robust` holds the robust loss, date weights and radiometry; :mod:`~splatsr.core.solver` fits
scene and shifts jointly (Adam, then L-BFGS, coarse to fine) from its pieces --
:mod:`~splatsr.core.config`, :mod:`~splatsr.core.scaling`, :mod:`~splatsr.core.prior`,
:mod:`~splatsr.core.objective`, :mod:`~splatsr.core.levels`, :mod:`~splatsr.core.result`,
with :mod:`~splatsr.core.dates` (target-date weights), :mod:`~splatsr.core.change` (coarse
change layer) and :mod:`~splatsr.core.bands` (per-band offsets); :mod:`~splatsr.core.psf`
chooses the PSF width from held-out dates; :mod:`~splatsr.core.checks` validates user arrays.
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

__all__ = ["MIN_OBSERVATIONS", "PLAIN", "FitConfig", "FitResult", "PsfSelection", "SplatGrid",
           "check_stack_array", "fit_arrays", "heldout_error", "integer_ratio", "noise_sigma",
           "pick_psf_sigma", "render_latent", "render_observations", "select_psf_sigma"]
