"""Scores against a reference: cPSNR (gain, offset and shift search)."""

from __future__ import annotations

import numpy as np
import pytest

from splatsr.errors import ConfigError
from splatsr.evaluate.metrics import cpsnr


def test_cpsnr_undoes_gain_offset_and_integer_shift():
    rng = np.random.default_rng(0)
    ref = rng.random((2, 40, 40))
    moved = 3.0 * np.roll(ref, (1, -2), axis=(1, 2)) + 1.0
    assert cpsnr(moved, ref) > 200  # exact up to rounding
    noisy = moved + rng.normal(0, 0.03, moved.shape)  # noise 0.01 after the gain of 3
    # peak = range of U(0, 1) over 30 x 30 px ~ 1: PSNR ~ 20 log10(1 / 0.01) = 40 dB
    assert cpsnr(noisy, ref) == pytest.approx(40.0, abs=0.3)
    assert cpsnr(moved, ref, search_px=0) < 15  # without the shift search the 2 px offset costs
    with pytest.raises(ConfigError, match="same grid"):
        cpsnr(ref[:, :-1], ref)
    with pytest.raises(ConfigError, match="too small"):
        cpsnr(ref[:, :8, :8], ref[:, :8, :8])
