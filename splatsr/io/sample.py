"""The small real stack shipped inside the package (``splatsr fit --sample``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from splatsr.io.stack import Stack, read_stack


def sample_path() -> Path:
    """Folder of the bundled sample stack (3 clear Sentinel-2 dates, 4 bands, 100 x 101 px)."""
    return Path(str(files("splatsr.data") / "sample"))


def sample_stack() -> Stack:
    """The bundled sample, read and validated."""
    return read_stack(sample_path())
