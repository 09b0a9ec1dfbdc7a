"""splatsr: multi-frame super-resolution of Sentinel-2 by per-scene Gaussian-splat fitting.

The pieces, one module each: :mod:`~splatsr.render` (1-D pixel-integration operators, dense
reference and banded fast path), :mod:`~splatsr.model` (splat lattice, shifts, PSF),
:mod:`~splatsr.solver` (joint scene-and-shift fit), :mod:`~splatsr.stack` (the stack
directory), :mod:`~splatsr.export` (COG and shifts CSV), :mod:`~splatsr.simulate` (stacks with
known truth), :mod:`~splatsr.sample` (the bundled real sample).
"""

__version__ = "0.1.0"

from .errors import ConfigError, FetchError, SplatsrError, StackError  # noqa: E402
from .simulate import simulate, simulate_stack  # noqa: E402
from .solver import FitConfig, FitResult, fit, fit_arrays  # noqa: E402
from .stack import Observation, Stack, read_stack, write_stack  # noqa: E402

__all__ = [
    "ConfigError", "FetchError", "FitConfig", "FitResult", "Observation", "SplatsrError",
    "Stack", "StackError", "__version__", "fit", "fit_arrays", "read_stack", "simulate",
    "simulate_stack", "write_stack",
]
