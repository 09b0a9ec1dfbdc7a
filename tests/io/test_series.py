"""The series output: one COG per date and a STAC ItemCollection that odc-stac loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from splatsr.io.series import ITEMS_NAME, SeriesGrid, read_series, write_series

BANDS = ("B02", "B03", "B04", "B08")


def _series(tmp_path, n=3, sigma=False):
    grid = SeriesGrid("EPSG:32631", Affine(2.5, 0, 574680.0, 0, -2.5, 5622440.0), (24, 20),
                      BANDS)
    rng = np.random.default_rng(0)
    images = [rng.uniform(0.0, 0.3, (4, 24, 20)).astype(np.float32) for _ in range(n)]
    images[1][:, :3, :3] = np.nan
    when = [f"2019-0{k + 4}-16T10:30:00Z" for k in range(n)]
    path = write_series(tmp_path / "series", ((f"d{k}", when[k], images[k], {"product": "x"},
                                               0.1 * images[k] if sigma else None)
                                              for k in range(n)), grid=grid)
    return path, images, when


def test_series_folder_holds_a_cog_per_date_and_an_item_collection(tmp_path):
    path, images, when = _series(tmp_path)
    assert path.name == ITEMS_NAME
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    item = doc["features"][1]
    assert item["properties"]["datetime"].startswith("2019-05-16T10:30:00")
    assert item["properties"]["proj:code"] == "EPSG:32631"
    asset = item["assets"]["data"]
    assert asset["href"] == "d1.tif"  # relative to the folder
    assert [b["name"] for b in asset["eo:bands"]] == ["B04", "B03", "B02", "B08"]
    with rasterio.open(path.parent / "d1.tif") as src:
        assert src.crs.to_epsg() == 32631 and src.res == (2.5, 2.5)
        assert src.descriptions == ("B04", "B03", "B02", "B08")
        np.testing.assert_array_equal(src.read(3), images[1][0])  # B02, NaN included


def test_odc_stac_loads_the_series_as_a_cube(tmp_path):
    odc_stac = pytest.importorskip("odc.stac")
    path, images, _ = _series(tmp_path)
    ds = odc_stac.load(read_series(path.parent))  # the native grid: no resampling
    assert list(ds.data_vars) == ["B04", "B03", "B02", "B08"]
    assert ds.odc.geobox.crs.epsg == 32631 and ds.odc.geobox.resolution.x == 2.5
    cube = ds[list(BANDS)].to_array("band").transpose("time", "band", "y", "x")
    assert cube.shape == (3, 4, 24, 20)
    for t in range(3):
        np.testing.assert_array_equal(cube.values[t], images[t])


def test_a_series_with_uncertainty_has_a_sigma_asset_per_item(tmp_path):
    path, images, _ = _series(tmp_path, sigma=True)
    item = json.loads(path.read_text())["features"][1]
    assert item["assets"]["sigma"]["href"] == "d1.sigma.tif"
    assert item["assets"]["sigma"]["roles"] == ["uncertainty"]
    with rasterio.open(path.parent / "d1.tif") as a, \
            rasterio.open(path.parent / "d1.sigma.tif") as s:
        assert a.transform == s.transform and a.crs == s.crs and a.shape == s.shape
        assert s.descriptions == ("B04 sigma", "B03 sigma", "B02 sigma", "B08 sigma")
        np.testing.assert_allclose(s.read(3), 0.1 * images[1][0])  # B02, NaN included
    assert not read_series(path.parent)[0].assets["sigma"].href.startswith("d0")  # absolute
