"""Output file names and the sigma COG's band order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from splatsr.io.export import shifts_path, sigma_path, write_sigma_cog


def test_sigma_and_shifts_paths_sit_beside_the_cog():
    assert sigma_path("out/sr.tif") == Path("out/sr.sigma.tif")
    assert sigma_path("sr.tiff") == Path("sr.sigma.tiff")
    assert sigma_path("sr") == Path("sr.sigma.tif")
    assert shifts_path("out/sr.tif") == Path("out/sr.shifts.csv")


def test_sigma_cog_has_the_cog_band_order_and_says_what_it_is(tmp_path):
    sigma = np.stack([np.full((16, 16), v, np.float32) for v in (0.01, 0.02, 0.03)])
    sigma[0, 0, 0] = np.nan
    path = write_sigma_cog(tmp_path / "s.tif", sigma, crs="EPSG:32633",
                           transform=Affine(2.5, 0, 0, 0, -2.5, 0),
                           band_names=["B02", "B08", "B04"])
    with rasterio.open(path) as src:
        assert src.descriptions == ("B04 sigma", "B02 sigma", "B08 sigma")
        np.testing.assert_allclose(src.read()[:, 1, 1], [0.03, 0.01, 0.02], rtol=1e-6)
        assert np.isnan(src.read(2)[0, 0])
        assert "1-sigma" in src.tags()["units"] and "NaN" in src.tags()["content"]
