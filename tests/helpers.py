"""Helpers shared by test modules (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
from click.testing import CliRunner, Result

from splatsr.cli import main


def run_cli(*args: object) -> Result:
    """Invoke the ``splatsr`` command in-process with ``args`` (each passed through ``str``)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def png_ok(path: object) -> None:
    """Assert that ``path`` is a real figure: an RGB(A) image over 100 px a side, not blank."""
    img = mpimg.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100 and np.ptp(img) > 0  # not blank
