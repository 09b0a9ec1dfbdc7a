"""The input guard (splatsr.core.inputs): what it finds and how it says it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from splatsr.core.inputs import InputWarning, inspect_stack, shift_limit_lines


def test_inspect_finds_empty_bands_dates_and_far_target():
    data = np.ones((4, 3, 5, 5), np.float32)
    data[:, 2] = np.nan
    data[1] = np.nan
    dates = ["2019-06-01", "2019-06-05", "2019-06-09", "2019-06-13T10:00:00Z"]
    rep = inspect_stack(data, band_names=("B02", "B03", "B04"), dates=dates,
                        target_date="2019-05-02")
    assert rep.empty_bands.tolist() == [False, False, True]
    assert rep.empty_dates.tolist() == [False, True, False, False]
    assert rep.target_gap_days == pytest.approx(-30.0, abs=0.6)
    lines = rep.lines()
    assert len(lines) == 3 and "B04" in lines[0] and "2019-06-05" in lines[1]
    assert "30 days before the first observation (2019-06-01)" in lines[2]
    with pytest.warns(InputWarning) as caught:
        rep.warn()
    assert [str(w.message) for w in caught] == lines


def test_a_normal_stack_says_nothing():
    data = np.ones((3, 2, 4, 4), np.float32)
    data[0, :, :2] = np.nan  # partly masked is normal
    rep = inspect_stack(data, dates=["2019-06-01", "2019-06-02", "2019-06-03"],
                        target_date="2019-06-02")
    assert not rep.degenerate and rep.lines() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep.warn()


def test_shift_limit_lines():
    s = np.array([[0.5, -1.0], [29.6, 0.0], [0.0, -35.0]])
    line, = shift_limit_lines(s, limit_m=30.0, labels=["a", "b", "c"])
    assert "b, c reached the search limit of 30 m" in line
    assert shift_limit_lines(s[:1], limit_m=30.0) == []
