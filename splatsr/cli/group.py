"""The ``splatsr`` command group: exit codes, one-line errors and warnings, Ctrl-C.

Exit status: 0 on success; 1 for a bad stack, a failed fetch or failed tiles (any other
:class:`~splatsr.errors.SplatsrError`); 2 for a bad option value -- a usage error found by
click, or a :class:`~splatsr.errors.ConfigError` the library finds after reading the data
(e.g. a resolution that does not divide the stack); 130 on Ctrl-C. Errors are one line
``Error: ...`` on stderr, warnings from splatsr one line ``Warning: ...``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import click

from splatsr import __version__
from splatsr.errors import ConfigError, SplatsrError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# loggers that print tracebacks while a Dask cluster is torn down by Ctrl-C
_NOISY_LOGGERS = ("distributed", "tornado", "asyncio")


def _silence_shutdown_noise() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: silence the Dask shutdown chatter first, then interrupt as usual."""
    _silence_shutdown_noise()
    raise KeyboardInterrupt


@contextlib.contextmanager
def _console() -> Iterator[None]:
    """Warnings as ``Warning: ...`` lines and a quiet Ctrl-C while a command runs."""
    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        click.echo(f"Warning: {message}", err=True)

    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if ours:  # leave an ignored or custom SIGINT alone
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        with warnings.catch_warnings():
            # other packages' deprecations are for their callers' developers, not users
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("always", category=UserWarning, module=r"splatsr\b")
            warnings.showwarning = show
            yield
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


class SplatsrGroup(click.Group):
    """Maps errors to one line and an exit status (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _console():
                return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(EXIT_USAGE) from None
        except SplatsrError as exc:
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.group(cls=SplatsrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="splatsr")
def main() -> None:
    """splatsr: multi-frame super-resolution of Sentinel-2 by Gaussian-splat fitting.

    Exit status: 0 done, 1 bad stack or failed fetch/tiles, 2 bad option value, 130 Ctrl-C.
    """
