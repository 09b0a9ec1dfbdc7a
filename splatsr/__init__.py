"""splatsr: multi-frame super-resolution of Sentinel-2 by per-scene Gaussian-splat fitting.

The layers, lowest first (a layer imports only from layers above it in this list):

- :mod:`splatsr.core` -- the numerical core, arrays in and arrays out: the pixel-integration
  renderer, the splat scene model, the robust loss, the solver, the PSF choice.
- :mod:`splatsr.io` -- files and the network: the stack directory, COG/CSV outputs, the STAC
  fetcher, Sentinel-2 product facts, the bundled sample.
- :mod:`splatsr.evaluate` -- evidence: simulation with known truth, phase-correlation
  registration, metrics, sweeps, report figures.
- :mod:`splatsr.tiles` -- large areas: tile plans, the tile store, sources, Dask runs, mosaics.
- :mod:`splatsr.workflow` -- one fit of a stack start to finish (``splatsr.fit``);
  :mod:`splatsr.series` -- every date of a stack sharpened (``splatsr.fit_series``).
- :mod:`splatsr.pipeline` -- what ``splatsr fit`` runs: input, route (whole or tiled), outputs.
- :mod:`splatsr.cli` -- the ``splatsr`` command, a thin layer over the above.
"""

__version__ = "0.1.0"

from splatsr import compat  # noqa: E402,F401  (old module names -> new homes)
from splatsr.core.solver import FitConfig, FitResult, fit_arrays  # noqa: E402
from splatsr.errors import ConfigError, FetchError, SplatsrError, StackError  # noqa: E402
from splatsr.evaluate.simulate import simulate, simulate_stack  # noqa: E402
from splatsr.io.sample import sample_path, sample_stack  # noqa: E402
from splatsr.io.stack import Observation, Stack, read_stack, write_stack  # noqa: E402
from splatsr.series import SeriesFit, fit_series  # noqa: E402
from splatsr.workflow import StackFit, fit  # noqa: E402

__all__ = [
    "ConfigError", "FetchError", "FitConfig", "FitResult", "Observation", "SplatsrError",
    "SeriesFit", "Stack", "StackError", "StackFit", "__version__", "fit", "fit_arrays",
    "fit_series", "read_stack",
    "sample_path", "sample_stack", "simulate", "simulate_stack", "write_stack",
]
