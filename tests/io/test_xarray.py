"""xarray in and out: a (time, band, y, x) DataArray fits like a stack directory; the scene
comes back georeferenced."""

import numpy as np
import pytest

import splatsr
from splatsr.errors import ConfigError
from splatsr.io.xarray import stack_from_xarray

xr = pytest.importorskip("xarray")

FAST = dict(adam_steps=20, lbfgs_iters=8, coarse_levels=0)
CRS = "EPSG:32631"


def _dataarray(stack, *, pixel_m=10.0, origin=None, crs_attr=True, y_up=False):
    """The stack as rioxarray / odc-stac hold it: pixel-centre coords, a spatial_ref coord."""
    data = stack.load()
    T, B, H, W = data.shape
    x0, y0 = origin or (stack.transform.c, stack.transform.f)
    x = x0 + pixel_m * (np.arange(W) + 0.5)
    y = y0 - pixel_m * (np.arange(H) + 0.5)
    coords = {"time": np.array([o.datetime.rstrip("Z") for o in stack.observations],
                               "datetime64[ns]"),
              "band": list(stack.bands), "y": y, "x": x}
    if crs_attr:
        from rasterio.crs import CRS as RCRS
        coords["spatial_ref"] = xr.DataArray(0, attrs={"crs_wkt": RCRS.from_string(
            stack.crs).to_wkt()})
    da = xr.DataArray(data, dims=("time", "band", "y", "x"), coords=coords, name="s2")
    return da.isel(y=slice(None, None, -1)) if y_up else da


def test_stack_from_xarray_matches_the_stack(small_stack):
    da = _dataarray(small_stack, y_up=True).transpose("band", "time", "y", "x")
    st = stack_from_xarray(da)
    assert st.crs == small_stack.crs and st.transform == small_stack.transform
    assert (st.width, st.height, st.bands) == (small_stack.width, small_stack.height,
                                               small_stack.bands)
    np.testing.assert_array_equal(st.load(), small_stack.load())
    assert st.observations[0].datetime.endswith("Z")


@pytest.mark.parametrize("kw, match", [
    (dict(pixel_m=5.0), "not the native 10 m"),
    (dict(origin=(500003.0, 5000000.0)), "not on the 10 m pixel lattice"),
    (dict(crs_attr=False), "no CRS"),
])
def test_resampled_or_unreferenced_grids_are_refused(small_stack, kw, match):
    with pytest.raises(ConfigError, match=match):
        splatsr.fit(_dataarray(small_stack, **kw), **FAST)


def test_non_square_dims_and_dn_are_refused(small_stack):
    da = _dataarray(small_stack)
    stretched = da.assign_coords(y=da.y.values * 1.5)
    with pytest.raises(ConfigError, match="square pixels"):
        stack_from_xarray(stretched)
    with pytest.raises(ConfigError, match="dimensions time, band, y, x"):
        stack_from_xarray(da.isel(time=0))
    with pytest.raises(ConfigError, match="digital numbers"):
        stack_from_xarray(da * 10000 + 1000)
    with pytest.raises(ConfigError, match="xarray.DataArray"):
        splatsr.fit(object())


def test_fit_dataarray_and_back_to_xarray(small_stack, tmp_path):
    res = splatsr.fit(_dataarray(small_stack), **FAST)
    import rasterio

    with rasterio.open(res.save(tmp_path / "sr.tif", resolution_m=5.0)) as src:
        assert src.crs.to_string() == small_stack.crs and src.transform.c == small_stack.transform.c
    ref = splatsr.fit(small_stack, **FAST)
    np.testing.assert_allclose(res.shifts_m, ref.shifts_m, atol=1e-4)
    out = res.to_xarray(2.5)
    assert out.dims == ("band", "y", "x") and list(out.band.values) == list(small_stack.bands)
    t = small_stack.transform
    assert out.x.values[0] == pytest.approx(t.c + 1.25)
    assert out.y.values[0] == pytest.approx(t.f - 1.25)
    assert out.shape[1:] == (small_stack.height * 4, small_stack.width * 4)
    back = stack_from_xarray(out.expand_dims(time=[np.datetime64("2025-06-01")]),
                             native_pixel_m=None)
    assert back.crs == small_stack.crs and back.transform.a == 2.5
    np.testing.assert_allclose(back.load()[0], res.render(2.5))
    rio = pytest.importorskip("rioxarray")
    assert rio and out.rio.crs.to_string() == small_stack.crs
    assert out.rio.transform().almost_equals(type(t)(2.5, 0, t.c, 0, -2.5, t.f))


# A fresh interpreter that never imports rioxarray by hand: the scene answers .rio all the same
# (the xarray extra's rioxarray is imported by splatsr), NaN is its no-data value, and
# rio.to_raster writes the stack's band names as the band descriptions.
_FRESH = """
import sys, numpy as np, rasterio, splatsr
res = splatsr.fit(splatsr.sample_stack(), adam_steps=10, lbfgs_iters=5, coarse_levels=0)
assert "rioxarray" not in sys.modules
da = res.to_xarray(5.0)
assert da.rio.crs.to_string() == res.stack.crs, da.rio.crs
assert np.isnan(da.rio.nodata), da.rio.nodata
da.rio.to_raster(sys.argv[1])
with rasterio.open(sys.argv[1]) as src:
    print(src.descriptions, src.nodata, src.crs.to_string(), src.res)
"""


def test_to_xarray_is_ready_for_rioxarray_without_importing_it(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("rioxarray")
    out = tmp_path / "scene.tif"
    run = subprocess.run([sys.executable, "-c", _FRESH, str(out)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    import rasterio

    stack = splatsr.sample_stack()
    with rasterio.open(out) as src:
        assert src.descriptions == stack.bands == ("B02", "B03", "B04", "B08")
        assert np.isnan(src.nodata) and src.crs.to_string() == stack.crs
        assert src.res == (5.0, 5.0) and (src.width, src.height) == (200, 202)


def _stackstac_like(stack):
    """As ``stackstac.stack`` gives it: float64, pixel *corner* coordinates (its default
    ``xy_coords="topleft"``), ``crs``/``transform`` attributes, per-time and per-band
    coordinates, a scalar ``epsg`` coordinate."""
    da = _dataarray(stack, crs_attr=False).astype(np.float64)
    t, epsg = stack.transform, int(stack.crs.split(":")[1])
    da = da.assign_coords(x=da.x.values - t.a / 2, y=da.y.values - t.e / 2,
                          id=("time", [o.id for o in stack.observations]),
                          common_name=("band", [f"c{b}" for b in stack.bands]), epsg=epsg)
    da.attrs.update(crs=f"epsg:{epsg}", transform=t, resolution=t.a)
    return da


def test_inputs_as_stackstac_odc_stac_and_rioxarray_give_them(small_stack):
    """The loaders' usual outputs read as the same stack: the grid, bands, dates, pixels."""
    ref = stack_from_xarray(_dataarray(small_stack))
    da = _dataarray(small_stack)
    ds = da.copy(deep=True).to_dataset("band")  # odc.stac.load: a (time, y, x) variable per band
    # ds.to_array() (xarray's, also odc-stac's advice) keeps no variable's nodata attribute
    variable = ds.to_array().transpose("time", "variable", "y", "x")
    for name in ds.data_vars:
        ds[name].attrs["nodata"] = -9.0
    ds[small_stack.bands[0]][0, 0, 0] = -9.0  # one no-data pixel
    numbered = da.assign_coords(band=np.arange(1, len(small_stack.bands) + 1))
    numbered.attrs["long_name"] = tuple(small_stack.bands)  # rioxarray.open_rasterio's names
    cases = {"stackstac": _stackstac_like(small_stack), "odc-stac": ds,
             "to_array()": variable,
             "open_rasterio": numbered}
    for name, obj in cases.items():
        st = stack_from_xarray(obj)
        assert (st.crs, st.transform, st.bands) == (small_stack.crs, small_stack.transform,
                                                     small_stack.bands), name
        assert [o.datetime for o in st.observations] == \
            [o.datetime for o in ref.observations], name
        data, want = st.load(), ref.load().copy()
        if name == "odc-stac":
            assert np.isnan(data[0, 0, 0, 0]), name  # the variable's nodata as NaN
            want[0, 0, 0, 0] = np.nan
        np.testing.assert_array_equal(data, want, err_msg=name)
    ids = [o.id for o in stack_from_xarray(cases["stackstac"]).observations]
    assert ids == [o.id for o in small_stack.observations]  # stackstac's item ids kept


def test_every_date_to_xarray_is_a_time_cube(small_stack):
    import splatsr

    series = splatsr.fit_series(small_stack.root, adam_steps=20, lbfgs_iters=10,
                                coarse_levels=0)
    cube = series.to_xarray(5.0)
    T = len(small_stack.observations)
    assert cube.dims == ("time", "band", "y", "x") and cube.shape == (T, 2, 64, 64)
    assert list(cube.observation.values) == [o.id for o in small_stack.observations]
    assert str(cube.time.values[0])[:10] == small_stack.observations[0].datetime[:10]
    np.testing.assert_array_equal(cube.values[3], series.render_date(3, 5.0))
    assert cube.rio.crs.to_string() == small_stack.crs
