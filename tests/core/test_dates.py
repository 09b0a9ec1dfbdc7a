"""Observation dates and target-date weights."""

from __future__ import annotations

import numpy as np
import pytest

from splatsr.core.dates import (
    day_numbers,
    parse_target_date,
    target_time_weights,
    time_weights,
)
from splatsr.errors import ConfigError


def test_day_numbers_read_iso_text_and_datetime64():
    d = day_numbers(["1970-01-02", "1970-01-02T12:00:00Z", "1970-01-02T14:00:00+02:00"])
    np.testing.assert_allclose(d, [1.0, 1.5, 1.5])
    np.testing.assert_allclose(day_numbers(np.array(["1970-01-03"], "datetime64[D]")), [2.0])


@pytest.mark.parametrize("bad", ["2019-13-01", "2019-6-1", "yesterday", "2019-06-01T00:00"])
def test_bad_target_date_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_target_date(bad)


def test_gaussian_weights_peak_at_the_nearest_date():
    """Target between dates: the nearest weighs 1, the others exp(-(d^2 - d_min^2)/(2 w^2))."""
    days = np.array([0.0, 10.0, 40.0])
    w = time_weights(days, target_day=12.0, window_days=10.0)
    np.testing.assert_allclose(w, [np.exp(-(144 - 4) / 200), 1.0, np.exp(-(784 - 4) / 200)])
    far = time_weights(days, target_day=1000.0, window_days=10.0)  # far from every date
    assert far.max() == 1.0 and far.argmax() == 2


def test_target_needs_dates_and_one_per_observation():
    assert target_time_weights(None, n_obs=3, target_date=None, window_days=30) is None
    with pytest.raises(ConfigError, match="dates="):
        target_time_weights(None, n_obs=3, target_date="2019-06-01", window_days=30)
    with pytest.raises(ConfigError, match="one date per observation"):
        target_time_weights(["2019-06-01"], n_obs=3, target_date=None, window_days=30)
