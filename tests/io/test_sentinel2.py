"""Sentinel-2 product facts: processing baselines, harmonisation, CRS, the 60 m lattice, SCL."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from splatsr.errors import FetchError


def test_s2_helpers():
    import splatsr.io.sentinel2 as s2

    assert s2.offset_dn("02.12") == 0 and s2.offset_dn("03.01") == 0
    assert s2.offset_dn("04.00") == -1000 and s2.offset_dn("05.11") == -1000
    assert s2.parse_baseline("10.00") > s2.parse_baseline("09.99")
    assert s2.item_baseline({"s2:product_uri": "S2B_MSIL2A_20190629T212529_N0500_R043_"
                             "T06VVN_20230101T000000.SAFE"}) == "05.00"
    dn = np.array([[0, 500, 1000, 12000]], np.uint16)
    np.testing.assert_array_equal(s2.harmonise(dn, "05.00"),
                                  np.array([[np.nan, -0.05, 0.0, 1.1]], np.float32))
    np.testing.assert_array_equal(s2.harmonise(dn, "03.00"),
                                  np.array([[np.nan, 0.05, 0.1, 1.2]], np.float32))
    assert s2.item_crs({"proj:code": "EPSG:32633"}, {}) == "EPSG:32633"
    assert s2.item_crs({"proj:epsg": 32633}, {"proj:code": "EPSG:32632"}) == "EPSG:32632"
    origin = (499980.0, 9200020.0)
    assert s2.snap_bounds((500001.0, 9199001.0, 500119.0, 9199999.0), origin) == (
        499980.0, 9199000.0, 500160.0, 9200020.0)
    with pytest.raises(FetchError, match="lattice"):
        s2.pixel_window((500000.0, 9199000.0, 500060.0, 9199060.0),
                        Affine(20.0, 0, 499990.0, 0, -20.0, 9200020.0))
    scl = np.arange(4, dtype=np.uint8).reshape(2, 2)
    assert s2.upsample_repeat(scl, 2).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1],
                                                   [2, 2, 3, 3], [2, 2, 3, 3]]
