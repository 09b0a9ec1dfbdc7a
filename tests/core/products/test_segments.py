"""Segments of the series: consecutive dates in time, about SEGMENT_DATES effective dates each."""

from __future__ import annotations

import numpy as np

from splatsr.core.products.series import SEGMENT_DATES, segment_dates


def test_clear_dates_split_into_consecutive_groups_of_four():
    days = np.array([50.0, 10, 30, 20, 80, 60, 70, 40])  # not in time order
    groups = segment_dates(days, np.ones(8))
    assert SEGMENT_DATES == 4.0 and len(groups) == 2
    assert [sorted(days[g].tolist()) for g in groups] == [[10, 20, 30, 40], [50, 60, 70, 80]]


def test_partly_valid_dates_count_by_their_valid_share():
    days = np.arange(10.0)
    # 10 dates, 8 of them half valid: 6 effective dates, one segment
    vf = np.array([1, 1] + [0.5] * 8)
    assert [g.tolist() for g in segment_dates(days, vf)] == [list(range(10))]
    # 12 clear dates: 3 segments of 4; every date in exactly one
    groups = segment_dates(np.arange(12.0), np.ones(12))
    assert [len(g) for g in groups] == [4, 4, 4]
    assert sorted(np.concatenate(groups).tolist()) == list(range(12))


def test_few_dates_keep_one_fit():
    assert [g.tolist() for g in segment_dates(np.arange(7.0), np.ones(7))] == [list(range(7))]
