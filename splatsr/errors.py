"""Error classes.

Every error a user can cause by their input is a :class:`SplatsrError`; the CLI prints its
message on one line and exits non-zero. Like rasterio, the input errors also subclass
``ValueError`` so library callers can catch them generically.
"""

from __future__ import annotations


class SplatsrError(Exception):
    """Base class of every error splatsr raises on purpose."""


class StackError(SplatsrError, ValueError):
    """A stack directory is missing, malformed or inconsistent with its ``stack.json``."""


class ConfigError(SplatsrError, ValueError):
    """An option value is out of range or inconsistent with the data."""


class FetchError(SplatsrError):
    """A STAC search or a raster read failed, or found nothing usable."""


class TileError(SplatsrError):
    """One or more tiles failed (after retries); finished tiles are kept for a rerun."""
