"""benchmarks/field_metrics.py: the adapter of our arrays to opensr-test's metrics.

The input preparation needs no opensr-test; the two analytic cases of the full metric run only
where the ``[eval]`` extra is installed (``pytest.importorskip``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import field_metrics as fm  # noqa: E402

# opensr-test's per-pixel shares when one of its three scores is 0 and the other two are 1:
# softmin at temperature 0.25 -> 1 / (1 + 2 e^-4) for the winner, e^-4 / (1 + 2 e^-4) each
WIN = 1 / (1 + 2 * math.exp(-4))
LOSE = math.exp(-4) / (1 + 2 * math.exp(-4))


def triple(seed: int = 0, B: int = 4, h: int = 16, scale: int = 2):
    rng = np.random.default_rng(seed)
    hr = (0.1 + 0.05 * rng.random((B, h * scale, h * scale))).astype(np.float32)
    lr = hr.reshape(B, h, scale, h, scale).mean((2, 4))
    return lr, hr.copy(), hr


def test_prepare_crops_to_valid_box_and_fills_holes_equally():
    lr, sr, hr = triple()
    lr[:, :3] = np.nan  # 3 masked rows at the top: cropped away
    lr[1, 8, 5] = np.nan  # one band of one pixel inside: filled
    sr[0, 30, 31] = np.nan  # one sr pixel -> its lr pixel (15, 15) invalid: last column
    t = fm.prepare(lr, sr, hr, scale=2)
    assert t.crop_lr_px == (3, 16, 0, 16)
    assert t.lr.shape == (4, 13, 16) and t.sr.shape == t.hr.shape == (4, 26, 32)
    assert np.isfinite(t.lr).all() and np.isfinite(t.sr).all() and np.isfinite(t.hr).all()
    assert t.filled_frac == pytest.approx(2 / (13 * 16))
    for r, c in ((8 - 3, 5), (15 - 3, 15)):  # the filled pixels: same value in all three
        block = np.s_[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2]
        np.testing.assert_array_equal(t.sr[block], t.hr[block])
        np.testing.assert_array_equal(t.sr[block], np.broadcast_to(t.lr[:, r, c, None, None],
                                                                   (4, 2, 2)))
    np.testing.assert_array_equal(t.hr[:, :2, :2], hr[:, 6:8, :2])  # valid data untouched


def test_prepare_replicates_one_band_and_maps_an_index():
    lr, sr, hr = triple(B=1)
    ndvi = [2 * a - 1 for a in (lr, sr, hr)]  # in [-1, 1]
    t = fm.prepare(*ndvi, scale=2, index=True)
    assert t.replicated and t.lr.shape == (3, 16, 16)
    np.testing.assert_allclose(t.hr[2], hr[0], atol=1e-6)  # (x + 1) / 2 undoes 2a - 1
    four = fm.prepare(*triple(B=4), scale=2)
    assert not four.replicated and four.lr.shape == (4, 16, 16)


def test_prepare_and_metrics_reject_bad_input():
    lr, sr, hr = triple()
    with pytest.raises(ValueError, match="h\\*scale"):
        fm.prepare(lr, sr[:, :-2], hr, scale=2)
    with pytest.raises(ValueError, match="no pixel is valid"):
        fm.prepare(np.full_like(lr, np.nan), sr, hr, scale=2)
    with pytest.raises(ValueError, match="multiple of scale"):  # before opensr-test is needed
        fm.opensr_metrics(lr, sr, hr, scale=4, border_px=2)


def test_rgb_is_b04_b03_b02():
    assert fm.rgb_indices(["B02", "B03", "B04", "B08"], 4) == [2, 1, 0]
    assert fm.rgb_indices(None, 3) == [0, 1, 2]


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensr_test", None)  # import opensr_test fails
    with pytest.raises(ImportError, match=r'pip install -e "\.\[eval\]"'):
        fm.load_opensr_test()


def test_sr_equal_hr_is_improvement_and_keeps_the_rng():
    """sr == hr: histogram matching and the phase-correlation shift leave it as hr, so
    d_im = 0 and d_om = d_ref; the relative distances are a = 0, b = 1, hence H = a + b - 1
    = 0, improvement score I = a + b (1 - e^(-0.05 H)) = 0, omission O = b + ... = 1,
    hallucination Q = e^(-0.05 a b) = 1; softmin (T = 0.25) -> (WIN, LOSE, LOSE) at every
    scored pixel."""
    pytest.importorskip("opensr_test")
    lr, sr, hr = triple(B=4, h=24)
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    m = fm.opensr_metrics(lr, sr, hr, scale=2, bands=["B02", "B03", "B04", "B08"])
    assert torch.rand(1) == expected  # opensr-test's seed(42) undone
    assert m["improvement"] == pytest.approx(WIN, abs=1e-5)
    assert m["omission"] == pytest.approx(LOSE, abs=1e-5)
    assert m["hallucination"] == pytest.approx(LOSE, abs=1e-5)
    assert m["improvement"] + m["omission"] + m["hallucination"] == pytest.approx(1, abs=1e-5)
    assert fm.score_against(hr, sr, lr, scale=2) == fm.opensr_metrics(lr, sr, hr, scale=2)


def test_interpolated_lr_is_omission():
    """sr = opensr-test's own upsampling of lr (bilinear, antialiased), no harmonisation:
    d_im = d_ref, d_om = 0, so a = 1, b = 0, H = 0: I = 1, O = 0, Q = 1 -> omission WIN."""
    pytest.importorskip("opensr_test")
    lr, _, hr = triple(B=4, h=24)
    up = torch.nn.functional.interpolate(torch.from_numpy(lr)[None], scale_factor=2,
                                         mode="bilinear", antialias=True)[0].numpy()
    m = fm.opensr_metrics(lr, up, hr, scale=2, border_px=0, harm_apply_spectral=False,
                          harm_apply_spatial=False)
    assert m["omission"] == pytest.approx(WIN, abs=1e-5)
    assert m["improvement"] == pytest.approx(LOSE, abs=1e-5)
    assert m["hallucination"] == pytest.approx(LOSE, abs=1e-5)
    assert m["synthesis"] == pytest.approx(0, abs=1e-6)  # nothing added to the interpolation
