"""Segments of the series: consecutive dates in time, about SEGMENT_DATES effective dates each."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from splatsr.core.inputs import InputWarning

from splatsr.core.products.series import SEGMENT_DATES, segment_dates, with_seen_dates


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


def test_a_group_clouded_over_borrows_the_nearest_seen_dates():
    days = np.arange(8.0)
    seen = np.array([True, True, True, True, False, False, True, True])
    group = np.array([3, 4, 5])  # only date 3 is seen: it borrows the nearest seen date
    assert with_seen_dates(group, seen, days).tolist() == [2, 3, 4, 5]
    assert with_seen_dates(np.array([4, 5]), seen, days).tolist() == [3, 4, 5, 6]
    assert with_seen_dates(np.array([0, 1, 2]), seen, days).tolist() == [0, 1, 2]


def test_segments_render_their_own_dates_where_a_group_is_clouded(texture):
    from splatsr import FitConfig
    from splatsr.core.products.series import fit_segments, plan_from_data
    from splatsr.evaluate.simulate import simulate

    data = simulate(texture[:1, :64, :64], truth_pixel_m=2.5, n_obs=8, seed=2)[0]  # (8,1,16,16)
    dates = [f"2020-01-{d + 1:02d}" for d in range(8)]
    plan = plan_from_data(data, pixel_m=10.0, config=FitConfig(adam_steps=20, lbfgs_iters=5,
                                                              coarse_levels=0), dates=dates)
    assert [g.tolist() for g in plan.groups] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    data[4:7] = np.nan  # the second group has one date with valid pixels left
    with pytest.warns(InputWarning, match="no valid pixel"):
        segs = fit_segments(data, pixel_m=10.0, plan=plan, dates=dates)
    assert segs[0].dates.tolist() == [0, 1, 2, 3] and segs[0].shows is None
    assert segs[1].dates.tolist() == [3, 4, 5, 6, 7] and segs[1].shows.tolist() == [4, 5, 6, 7]
    assert not segs[0].renders(4) and segs[1].renders(4) and not segs[1].renders(3)
    # a clouded date's scene is its segment's scene, filled from the seen dates
    img = segs[1].scene(data, 5, 5.0)
    assert img.shape == (1, 32, 32) and np.isfinite(img).all()


def test_segments_are_tied_into_one_frame(texture):
    """Two segments whose dates lie on either side of the ground (east 2 m, west 2 m): each
    fit's frame is the mean of its own dates, 2-3 m apart; the tie date brings every date's
    scene into the mean frame of all dates, where the truth is, and the shifts with it."""
    from splatsr import FitConfig
    from splatsr.core.products.series import fit_segments, plan_from_data
    from splatsr.evaluate.simulate import simulate
    from scipy.ndimage import gaussian_filter
    from skimage.registration import phase_cross_correlation

    truth = texture[:1, :96, :96].astype(np.float64)
    rng = np.random.default_rng(4)
    shifts = rng.normal(0.0, 0.5, (8, 2))
    shifts[:4, 0] += 2.0
    shifts[4:, 0] -= 2.0
    shifts -= shifts.mean(axis=0)  # the truth sits in the mean frame of the dates
    data, _ = simulate(truth, truth_pixel_m=2.5, shifts_m=shifts, noise_sigma=0.002, seed=4)
    dates = [f"2020-01-{d + 1:02d}" for d in range(8)]
    plan = plan_from_data(data, pixel_m=10.0, dates=dates, config=FitConfig(
        adam_steps=40, lbfgs_iters=40, coarse_levels=0, change_cell_m=0.0))
    segs = fit_segments(data, pixel_m=10.0, plan=plan, dates=dates)
    assert [s.dates.tolist() for s in segs] == [[0, 1, 2, 3], [3, 4, 5, 6, 7]]
    # as they came the fits' frames are apart by the difference of their dates' means
    apart = shifts[:4].mean(axis=0) - shifts[3:].mean(axis=0)
    assert np.hypot(*apart) > 2.0
    # tied: every date's shift in the series' frame is its true shift, to the fit's precision
    got = np.array([next(s for s in segs if s.renders(t)).shift_m(t) for t in range(8)])
    np.testing.assert_allclose(got, shifts, atol=0.3)
    # ... and every scene lies where the truth does, where as they came they were 1.3 and
    # 2.1 m off (cross-correlation at 2.5 m of the images smoothed by 1.5 px, which finds
    # a little less: 1.1 and 1.6 m)
    def offset_m(img):
        a, b = (gaussian_filter(x[0], 1.5)[8:-8, 8:-8] for x in (truth, img))
        return 2.5 * np.hypot(*phase_cross_correlation(a - a.mean(), b - b.mean(),
                                                       upsample_factor=20,
                                                       normalization=None)[0])

    for t in (1, 6):
        seg = next(s for s in segs if s.renders(t))
        assert offset_m(seg.scene(data, t, 2.5)) < 0.5
        assert offset_m(replace(seg, frame_shift_m=(0.0, 0.0)).scene(data, t, 2.5)) > 1.0
