"""Text helpers shared by every writer: file-name-safe ids and table cells."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SAFE_CHARS = "-_."  # kept as they are in a file name, besides letters and digits


def safe_name(name: str, *, max_len: int = 120) -> str:
    """A file-name-safe form of ``name`` (e.g. a STAC item id), at most ``max_len`` characters.

    Letters, digits and ``-_.`` are kept; every other character becomes ``_``.
    """
    return "".join(c if c.isalnum() or c in SAFE_CHARS else "_" for c in name)[:max_len]


def format_cell(value: Any, *, nan: str = "") -> str:
    """One CSV cell: floats with 6 significant digits, NaN as ``nan``, anything else ``str``."""
    if isinstance(value, (float, np.floating)):
        return nan if math.isnan(value) else f"{value:.6g}"
    return str(value)
