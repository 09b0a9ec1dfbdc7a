"""The ``splatsr`` command: one module per command, each a thin layer over one library call.

:mod:`splatsr.cli.group` holds the group (exit codes, one-line errors, Ctrl-C);
:mod:`splatsr.cli.options` the shared options and the table of solver flags generated from
:class:`~splatsr.FitConfig`. ``fit`` calls :func:`splatsr.pipeline.run_fit`, ``fetch``
:func:`splatsr.io.fetch.fetch_stack`, ``simulate`` :func:`splatsr.simulate_stack`,
``validate`` :func:`splatsr.evaluate.registration.validate_shifts` and ``sweep``
:func:`splatsr.evaluate.sweep.run_sweep`.
"""

from splatsr.cli import fetch, fit, simulate, sweep, validate  # noqa: F401  (registers them)
from splatsr.cli.group import main

__all__ = ["main"]
