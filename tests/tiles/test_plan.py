"""The tile plan and the blend weights of tiled fits (no fitting)."""

from __future__ import annotations

import numpy as np
import pytest

import splatsr
from splatsr.tiles.plan import blend_weights, plan_tiles


def test_plan_covers_with_overlap():
    tiles = plan_tiles(height=100, width=61, tile_size=32, overlap=8)
    cover = np.zeros((100, 61), int)
    for t in tiles:
        cover[t.row0:t.row0 + t.rows, t.col0:t.col0 + t.cols] += 1
        assert (t.rows, t.cols) == (32, 32)
    assert cover.min() >= 1
    for axis, n in (("row0", 100), ("col0", 61)):
        starts = sorted({getattr(t, axis) for t in tiles})
        assert starts[0] == 0 and starts[-1] + 32 == n
        assert all(32 - (b - a) >= 8 for a, b in zip(starts, starts[1:]))  # overlap >= 8
    assert [t.id for t in tiles][:2] == ["r000c000", "r000c001"]
    assert plan_tiles(height=20, width=20, tile_size=32, overlap=8)[0].rows == 20


@pytest.mark.parametrize("size,overlap,msg", [(4, 0, "at least 8"), (32, 17, "half"),
                                              (32, -1, "between 0")])
def test_plan_rejects_bad_options(size, overlap, msg):
    with pytest.raises(splatsr.ConfigError, match=msg):
        plan_tiles(height=64, width=64, tile_size=size, overlap=overlap)


def test_blend_weights_sum_to_one_where_tiles_meet():
    # two 32 px tiles overlapping by exactly the ramp (8 px), 4 samples per pixel
    a = blend_weights(32, factor=4, ramp_px=8, start_open=False, end_open=True)
    b = blend_weights(32, factor=4, ramp_px=8, start_open=True, end_open=False)
    total = np.zeros(56 * 4)
    total[:128] += a
    total[24 * 4:] += b
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert a[0] == 1.0 and a[-1] < 0.01 and b[0] < 0.01  # ~0 at the inner edges
