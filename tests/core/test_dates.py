"""Observation dates and target-date weights."""

from __future__ import annotations

import numpy as np
import pytest

from splatsr.core.config import FitConfig
from splatsr.core.dates import (
    auto_window_days,
    day_numbers,
    effective_dates,
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


def test_automatic_window_is_three_times_the_nearest_clear_date():
    """3 x the distance to the nearest date with >= 90 % valid pixels, within 10-40 days."""
    days = np.array([0.0, 5.0, 20.0, 60.0])
    valid = np.array([1.0, 0.5, 1.0, 1.0])
    assert auto_window_days(days, valid, target_day=4.0) == 12.0  # day 0; day 5 is cloudy
    assert auto_window_days(days, np.ones(4), target_day=4.0) == 10.0  # 3 days, at the floor
    assert auto_window_days(days, valid, target_day=40.0) == 40.0  # 20 days: at the ceiling
    assert auto_window_days(days, np.full(4, 0.5), target_day=8.0) == 10.0  # none clear: nearest


def test_fit_config_resolves_the_window_from_the_stack():
    data = np.zeros((3, 1, 4, 4))
    data[1, :, :2] = np.nan  # half masked: not clear
    dates = ["2019-06-01", "2019-06-06", "2019-06-21"]
    cfg = FitConfig(target_date="2019-06-05").with_time_window(data, dates=dates)
    assert cfg.time_window_days == 13.5  # 4.5 d (target at noon) from 06-01; 06-06 half masked
    given = FitConfig(target_date="2019-06-05", time_window_days=30.0)
    assert given.with_time_window(data, dates=dates) is given
    consensus = FitConfig()
    assert consensus.with_time_window(data, dates=dates).time_window_days is None
    # without one date per observation the fit raises (target_time_weights), not this
    assert FitConfig(target_date="2019-06-05").with_time_window(
        data, dates=dates[:2]).time_window_days is None
    with pytest.raises(ConfigError, match="time_window_days"):
        FitConfig(time_window_days=0.0).validate()


def test_effective_dates_count_the_dates_that_carry_the_fit():
    """(sum w)^2 / sum w^2: T equal weights are T dates, one weight alone is one date, and
    scaling every weight changes nothing."""
    assert effective_dates([1.0, 1.0, 1.0]) == pytest.approx(3.0)
    assert effective_dates([0.2, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_dates(np.zeros(4)) == 0.0
    # the bundled sample with --target-date 2015-08-30: time x robust weights of its 3 dates
    w = np.array([0.611592, 1.0, 3.57472e-06 * 0.166927])
    assert effective_dates(w) == pytest.approx(1.611592 ** 2 / (1 + 0.611592 ** 2), rel=1e-5)
    assert effective_dates(7.0 * w) == pytest.approx(effective_dates(w))


def test_own_date_factor_is_the_ratio_of_the_windows_where_the_date_is_seen():
    from splatsr.core.dates import GAP_PX, own_date_factor

    days = np.array([0.0, 5.0, 10.0, 20.0])
    valid = np.ones((4, 2, 12, 12), bool)
    valid[1, :, :, :6] = False  # a cloud over the western half of the observed date
    valid[1, 1, 10, 10] = False  # and a one-pixel gap in its second band
    f = own_date_factor(valid, own=1,
                        wide=time_weights(days, target_day=5.0, window_days=10.0),
                        narrow=time_weights(days, target_day=5.0, window_days=1.0))
    assert f.shape == valid.shape and f.dtype == np.float32
    d = np.abs(days - 5.0)
    ratio = np.exp(-d ** 2 / 2.0) / np.exp(-d ** 2 / 200.0)  # narrow over wide Gaussian
    far = int(6 - GAP_PX) - 1  # a column further than GAP_PX into the cloud
    np.testing.assert_allclose(f[:, 0, 0, 11], ratio, rtol=1e-6, atol=1e-12)  # seen: the own window
    np.testing.assert_allclose(f[:, 0, 0, far], 1.0)  # deep in the cloud: the wide window
    np.testing.assert_allclose(f[:, 1, 0, far], 1.0)
    # within GAP_PX of a seen pixel the date bridges its gap itself
    np.testing.assert_allclose(f[:, 0, 0, 5], ratio, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(f[:, 1, 10, 10], ratio, rtol=1e-6, atol=1e-12)
    assert f[1].min() == 1.0  # the date itself always weighs 1


def test_own_date_factor_of_a_date_masked_everywhere_is_one():
    from splatsr.core.dates import own_date_factor

    valid = np.ones((3, 1, 8, 8), bool)
    valid[0] = False
    days = np.array([0.0, 5.0, 10.0])
    f = own_date_factor(valid, own=0, wide=time_weights(days, target_day=0.0, window_days=10.0),
                        narrow=time_weights(days, target_day=0.0, window_days=1.0))
    np.testing.assert_array_equal(f, 1.0)
