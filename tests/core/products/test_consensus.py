"""The median-anchored consensus: the correction, its interpolation, and a fit that follows
the median of a changing stack."""

from __future__ import annotations

import numpy as np
import pytest

import splatsr
from splatsr.core.products.consensus import (
    MEDIAN_NOISE,
    BandSampler,
    DateMedianAnchor,
    date_median,
    target_correction,
)
from splatsr.core.products.cubic import cubic_matrix, keys_kernel, nearest_index, upsample
from splatsr.core.robust import weighted_median


def test_keys_kernel_interpolates():
    # 1 at 0, 0 at the other integers, weights of any position sum to 1
    np.testing.assert_allclose(keys_kernel(np.array([0.0, 1.0, 2.0, -1.0, 3.0])),
                               [1, 0, 0, 0, 0], atol=1e-15)
    t = np.linspace(0, 1, 11)
    total = sum(keys_kernel(t - k) for k in range(-1, 3))
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_cubic_matrix_identity_and_ramp():
    np.testing.assert_allclose(cubic_matrix(8, pixel_m=10.0, resolution_m=10.0,
                                            extent_m=80.0).toarray(), np.eye(8), atol=1e-12)
    # cubic convolution reproduces a linear ramp exactly away from the (replicated) edges
    m = cubic_matrix(16, pixel_m=10.0, resolution_m=2.5, extent_m=160.0, at_m=1.3)
    ramp = 10.0 * np.arange(16) + 5.0  # value = position of the pixel centre in metres
    fine = (np.arange(64) + 0.5) * 2.5 + 1.3  # where each output pixel samples
    inner = slice(8, -8)
    np.testing.assert_allclose((m @ ramp)[inner], fine[inner], atol=1e-9)
    np.testing.assert_allclose(np.asarray(m.sum(1)).ravel(), 1.0, atol=1e-12)


def test_upsample_follows_the_band_offset():
    """A band whose content sits 3 m east and 2 m north is sampled there."""
    H = W = 12
    yy, xx = np.mgrid[:H, :W]
    ramp = (10.0 * xx + 5.0 - 0.5 * (10.0 * yy + 5.0))[None]  # linear in x (east), y (south)
    off = np.array([[3.0, 2.0]])
    up = upsample(ramp, pixel_m=10.0, resolution_m=5.0, band_offsets_m=off)[0]
    fy, fx = np.mgrid[:24, :24]
    x, y = (fx + 0.5) * 5.0 + 3.0, (fy + 0.5) * 5.0 - 2.0  # north = up = smaller row
    np.testing.assert_allclose(up[4:-4, 4:-4], (x - 0.5 * y)[4:-4, 4:-4], atol=1e-6)


def median_at_pixels(data: np.ndarray, seen: np.ndarray, noise: float) -> np.ndarray:
    """The consensus anchor at the pixel grid itself (interpolation is the identity)."""
    return DateMedianAnchor((data - seen[None]).astype(np.float32), np.array([noise]),
                            10.0).at(10.0)


def test_median_anchor_thresholds_at_the_noise_of_the_median():
    T, H, W = 9, 6, 6
    data = np.zeros((T, 1, H, W))
    data[:, 0, 2, 3] = np.arange(T)  # median 4
    data[:2, 0, 0, 0] = np.nan  # 7 valid dates, median 0
    seen = np.zeros((1, H, W))
    c = median_at_pixels(data, seen, 1.0)
    tau = MEDIAN_NOISE / np.sqrt(T)
    assert c[0, 2, 3] == pytest.approx(4.0 - tau, rel=1e-6)
    assert np.count_nonzero(c) == 1  # agreement elsewhere, the constant level removed
    # no valid date: no correction
    data[:, 0, 5, 5] = np.nan
    assert median_at_pixels(data, seen, 1.0)[0, 5, 5] == 0.0


def test_date_median_leaves_out_the_dates_not_seen_under_an_output_pixel():
    # three dates 0, 0.05, 0.1 everywhere: median 0.05; the third is masked over a block,
    # where the median of the other two is 0.025
    H = W = 12
    resid = np.stack([np.full((H, W), v) for v in (0.0, 0.05, 0.1)])
    resid[2, 4:8, 4:8] = np.nan
    op = BandSampler.build((H, W), pixel_m=10.0, resolution_m=5.0, offset_m=(0.0, 0.0))
    med, n = date_median(resid, op)
    np.testing.assert_allclose(med[8:16, 8:16], 0.025, atol=1e-12)
    np.testing.assert_array_equal(n[8:16, 8:16], 2)
    assert n.sum() == 3 * 24 * 24 - 8 * 8
    np.testing.assert_allclose(med[:4], 0.05, atol=1e-12)  # far from the block


def test_date_median_matches_a_date_by_date_reference():
    """The blocked fast path equals: each date (invalid pixels 0) upsampled with
    :func:`upsample`, NaN where its pixel under the output pixel is invalid, nanmedian."""
    rng = np.random.default_rng(4)
    T, H, W = 5, 9, 11
    resid = rng.normal(0, 1, (T, H, W))
    resid[rng.random((T, H, W)) < 0.2] = np.nan
    resid[:, 0, 0] = np.nan  # no valid date
    off = (3.0, -4.0)
    op = BandSampler.build((H, W), pixel_m=10.0, resolution_m=2.5, offset_m=off)
    up = upsample(np.nan_to_num(resid), pixel_m=10.0, resolution_m=2.5,
                  band_offsets_m=np.array([off] * T)).astype(np.float64)
    ny = nearest_index(H, pixel_m=10.0, resolution_m=2.5, extent_m=H * 10.0, at_m=-off[1])
    nx = nearest_index(W, pixel_m=10.0, resolution_m=2.5, extent_m=W * 10.0, at_m=off[0])
    valid = np.isfinite(resid)[:, ny][:, :, nx]
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanmedian(np.where(valid, up, np.nan), axis=0)
    for chunk in (1, 7 * T * len(nx), 1 << 22):  # one row per block, a few, all at once
        med, n = date_median(resid, op, chunk_values=chunk)
        np.testing.assert_allclose(med, np.nan_to_num(ref), atol=1e-5)  # float32 upsample
        np.testing.assert_array_equal(n, valid.sum(0))
    assert (n == 0).any() and (med[n == 0] == 0).all()


@pytest.fixture(scope="module")
def changing(texture):
    """7 dates of one texture; a 60 m field whose reflectance climbs date by date."""
    truth = np.array(texture[0:1, :96, :96], dtype=np.float64)
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=7, noise_sigma=0.002, seed=5)
    level = np.array([0.02, 0.05, 0.08, 0.11, 0.14, 0.17, 0.20])  # median 0.11
    data[:, 0, 6:12, 6:12] += level[:, None, None]
    return truth, data.astype(np.float32)


def test_consensus_follows_the_median_of_a_changing_field(changing):
    truth, data = changing
    anchored = splatsr.fit_arrays(data, pixel_m=10.0)
    plain = splatsr.fit_arrays(data, pixel_m=10.0, config=splatsr.FitConfig(
        median_anchor=False, change_cell_m=0.0))  # the change layer would absorb some
    ref = truth[0].reshape(48, 2, 48, 2).mean((1, 3))  # the texture at 5 m
    inside = (slice(16, 20), slice(16, 20))  # 5 m pixels well inside the field
    lift = {k: float(np.median((r.render(5.0)[0] - ref)[inside]))
            for k, r in (("anchored", anchored), ("plain", plain))}
    # the median date's lift is 0.11; measured: anchored 0.111 (with the automatic 40 m
    # change layer; 0.112 without), the fit alone 0.131 (0.124 with the layer)
    assert lift["anchored"] == pytest.approx(0.11, abs=0.01), lift
    assert abs(lift["plain"] - 0.11) > 0.015, lift
    assert anchored.anchor is not None and plain.anchor is None


def test_anchor_leaves_a_static_stack_alone(texture):
    truth = np.array(texture[1:2, :96, :96], dtype=np.float64)
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=8, noise_sigma=0.002, seed=6)
    res = splatsr.fit_arrays(data, pixel_m=10.0)
    anchor = res.anchor.at(5.0)
    moved = anchor[np.abs(anchor) > 0]
    # the median of 8 dates has a noise of 1.2533 x 0.002 / sqrt(8) = 0.0009; measured at
    # 5 m: 8 % of the pixels move (edges, where the median of shifted dates is blurred), by
    # at most 0.0014
    assert np.abs(anchor).max() < 0.003, np.abs(moved).max()
    # a target-date fit of the same stack: its anchor is as small
    dates = [f"2024-06-{d:02d}" for d in range(1, len(data) + 1)]
    target = splatsr.fit_arrays(data, pixel_m=10.0, dates=dates,
                                config=splatsr.FitConfig(target_date="2024-06-03",
                                                         observed_date=False))
    assert target.anchor is not None and np.abs(target.anchor.at(5.0)).max() < 0.003
    # the observed-date scene of that acquisition: on a static stack its own observation
    # moves the shared scene by less than the noise of one date (0.002)
    own = splatsr.fit_arrays(data, pixel_m=10.0, dates=dates,
                             config=splatsr.FitConfig(target_date="2024-06-03"))
    shared = own.render(5.0) if own.date_scene is None else None
    assert shared is None and own.anchor is None
    ds, k = own.date_scene, 2
    base = own.weights * own.gains[k][:, None, None]
    moved = (ds.weights - base)[:, 20:-20, 20:-20]  # splat weights over the raster
    assert ds.index == k and np.sqrt(np.mean(moved ** 2)) < 0.002


def test_target_correction_follows_the_weighted_majority():
    # 5 dates; the 3 near the target (weights 1) show a square 0.05 brighter than predicted,
    # the 2 far ones (weights 0.2) do not: the weighted median is the square
    rng = np.random.default_rng(3)
    pred = np.full((5, 1, 16, 16), 0.2)
    data = pred + rng.normal(0, 0.001, pred.shape)
    gains = np.array([[1.0], [1.0], [2.0], [1.0], [1.0]])
    square = np.zeros((16, 16))
    square[4:12, 4:12] = 0.05
    near = [1, 2, 3]
    data[near, 0] += square * gains[near, 0, None, None]  # in each date's radiometry
    weights = np.array([0.2, 1.0, 1.0, 1.0, 0.2])
    corr = target_correction(data, pred, gains=gains, date_weights=weights,
                             noise_level=np.array([0.001]))
    # demeaned (the per-band median is 0 here: 64 of 256 pixels in the square)
    np.testing.assert_allclose(corr[0], square, atol=0.002)
    # a gain near 0 (a date the fit could not use) is clipped at 0.5, not divided by
    gains[2] = 1e-4
    data[2, 0] = pred[2, 0] + 0.01 * (square > 0)
    only = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    corr = target_correction(data, pred, gains=gains, date_weights=only,
                             noise_level=np.array([0.0]))
    np.testing.assert_allclose(corr[0], 0.02 * (square > 0), atol=1e-6)


def test_target_correction_leaves_pixels_only_low_weight_dates_see():
    # 4 dates; where the 3 with weight 1 are masked only a bright date of weight 0.005 (a
    # cloud the fit down-weighted) is valid: its residual alone would be the location there
    pred = np.full((4, 1, 8, 8), 0.2)
    data = pred.copy()
    data[3, 0, 2:4, 2:4] += 0.5  # the cloud
    data[:3, 0, 2:4, 2:4] = np.nan
    weights = np.array([1.0, 1.0, 1.0, 0.005])
    corr = target_correction(data, pred, gains=None, date_weights=weights,
                             noise_level=np.array([0.001]))
    np.testing.assert_array_equal(corr, 0.0)
    # with weight 1 (a quarter of the typical pixel's 4) that date counts
    weights[3] = 1.0
    corr = target_correction(data, pred, gains=None, date_weights=weights,
                             noise_level=np.array([0.0]))
    np.testing.assert_allclose(corr[0, 2:4, 2:4], 0.5)


def test_weighted_median_matches_nanmedian_and_drops_zero_weights():
    rng = np.random.default_rng(0)
    x = rng.random((9, 2, 5, 5))
    x[rng.random(x.shape) < 0.3] = np.nan
    for T in (9, 8, 2):  # odd and even counts of valid dates
        np.testing.assert_allclose(weighted_median(x[:T], np.ones(T), mean_of_middle=True),
                                   np.nanmedian(x[:T], axis=0), atol=1e-12)
    w = np.ones(9)
    w[[0, 3]] = 0.0
    np.testing.assert_allclose(weighted_median(x, w, mean_of_middle=True),
                               np.nanmedian(x[w > 0], axis=0))
    # without the flag: the lower of the two middle values (what regauge uses)
    full = rng.random((8, 3))
    np.testing.assert_allclose(weighted_median(full, np.ones(8)), np.sort(full, axis=0)[3])


def test_median_weights_only_when_bright_outliers_are_half_the_dates():
    from splatsr.core.products.consensus import median_weights
    data = np.zeros((4, 2, 4, 4))
    data[:2] += 0.3  # two dates brighter in both bands, down-weighted by the fit
    robust = np.array([0.0, 0.05, 1.0, 1.0])
    noise = np.array([0.01, 0.01])
    np.testing.assert_allclose(median_weights(data, obs_weights=robust, noise_level=noise),
                               [0.0, 0.0, 1.0, 1.0])
    # a fifth, clear date: the bright ones are a minority, the median rejects them itself
    data5 = np.concatenate([data, np.zeros((1, 2, 4, 4))])
    np.testing.assert_allclose(median_weights(data5, obs_weights=np.r_[robust, 1.0],
                                              noise_level=noise), 1.0)
    # brighter in one band, darker in the other (a change of the ground): not an outlier
    data[:2, 1] -= 0.6
    np.testing.assert_allclose(median_weights(data, obs_weights=robust, noise_level=noise),
                               1.0)


def test_median_weights_measure_brightness_against_the_trusted_dates():
    """Thin haze (+0.02, kept at weight 0.7 by the fit) beside a thick cloud: brighter than
    the two clear dates by 1.5 noise units in both bands, so both are left out, although the
    haze is no brighter than the mean of the four dates (0.08)."""
    from splatsr.core.products.consensus import median_weights
    data = np.zeros((4, 2, 4, 4))
    data[1] += 0.005  # the two clear dates differ a little
    data[2] += 0.02
    data[3] += 0.3
    weights = median_weights(data, obs_weights=np.array([1.0, 1.0, 0.7, 0.0]),
                             noise_level=np.array([0.01, 0.01]))
    np.testing.assert_allclose(weights, [1.0, 1.0, 0.0, 0.0])


def test_m_estimate_rejects_an_outlier_and_beats_the_median_on_gaussian_dates():
    from splatsr.core.robust import weighted_m_estimate

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (7, 2, 100, 100))  # 7 dates, 2 bands, 10^4 pixels each
    w = np.ones(7)
    # Gaussian dates: the median's variance is ~1.4 x the mean's (efficiency ~0.7 at n = 7);
    # a Cauchy M-estimate at 3 robust spreads is within a few % of the mean's
    v_mean, v_med = x.mean(0).var(), np.median(x, axis=0).var()
    v_m = weighted_m_estimate(x, w).var()
    assert v_med > 1.3 * v_mean and v_m < 1.08 * v_mean
    # one date 50 sigma off (an unmasked cloud) barely moves it; the mean moves by ~7
    y = x.copy()
    y[3] += 50.0
    assert np.abs(weighted_m_estimate(y, w) - weighted_m_estimate(np.delete(x, 3, 0),
                                                                  np.ones(6))).mean() < 0.05
    # zero weight and NaN are ignored; no weighted date gives NaN
    z = x.copy()
    z[0] = np.nan
    np.testing.assert_allclose(weighted_m_estimate(z, w), weighted_m_estimate(x[1:], w[1:]))
    np.testing.assert_allclose(weighted_m_estimate(x, np.r_[0.0, w[1:]]),
                               weighted_m_estimate(x[1:], w[1:]))
    assert np.isnan(weighted_m_estimate(np.full((3, 1, 2, 2), np.nan), np.ones(3))).all()
