"""Checks of user input shared by every layer: stack arrays and integer ratios.

One helper per check, so that the same mistake gets the same message wherever it is made.
No torch here: the I/O layer imports this module too.
"""

from __future__ import annotations

import numpy as np

from splatsr.errors import ConfigError, StackError

MIN_OBSERVATIONS = 2  # one global shift per date is only meaningful against other dates
RATIO_TOL = 1e-6  # relative tolerance of "a is an integer multiple of b"


def check_stack_array(data: np.ndarray, *, dtype: type = np.float32,
                      min_obs: int = MIN_OBSERVATIONS) -> np.ndarray:
    """``data`` as a (T, B, H, W) array of ``dtype`` with at least ``min_obs`` dates.

    Raises
    ------
    StackError
        If the array is not 4-D or holds fewer than ``min_obs`` observations.
    """
    data = np.asarray(data, dtype)
    if data.ndim != 4:
        raise StackError(f"data must be (T, B, H, W), got shape {data.shape}")
    if data.shape[0] < min_obs:
        raise StackError(f"the stack has {data.shape[0]} observation(s); multi-frame fitting "
                         f"needs at least {min_obs}")
    return data


def integer_ratio(a: float, b: float, *, what: str) -> int:
    """``a / b`` as an integer >= 1, or a :class:`ConfigError` that names ``what``.

    ``what`` completes the sentence "... must be an integer multiple of ...", e.g.
    ``"the pixel size 10 m / the resolution 3 m"``.
    """
    f = a / b if b > 0 else 0.0
    k = round(f)
    if k < 1 or abs(f - k) > RATIO_TOL * max(1.0, f):
        raise ConfigError(f"{what}: {a:g} m is not an integer multiple of {b:g} m")
    return k
