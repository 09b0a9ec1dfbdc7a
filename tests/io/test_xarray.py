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
