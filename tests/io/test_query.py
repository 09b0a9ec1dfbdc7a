"""SceneQuery: one validated query for fetch, cache keys and tiled fits."""

import dataclasses
import datetime as dt

import pytest

from splatsr.errors import ConfigError
from splatsr.io.fetch import cache_key
from splatsr.io.query import SceneQuery, as_query, split_query

AOI = (5.10, 52.05, 5.14, 52.08)


def test_forms_normalise_to_one_value():
    a = SceneQuery(aoi="5.10,52.05,5.14,52.08", start=dt.date(2025, 4, 1), end="2025-10-31",
                   bands="b04, B08", stac_url="https://example.org/stac/")
    b = as_query(aoi=AOI, start="2025-04-01", end="2025-10-31", bands=("B04", "B08"),
                 stac_url="https://example.org/stac")
    assert a == b and hash(a) == hash(b)
    assert a.aoi == AOI and a.bands == ("B04", "B08") and a.host == "example.org"
    assert a.datetime == "2025-04-01T00:00:00Z/2025-10-31T23:59:59Z"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.start = "2025-01-01"  # type: ignore[misc]


def test_cache_key_is_that_of_earlier_versions():
    """The keys of existing cache folders stay valid (value from the keyword-only version)."""
    q = SceneQuery(aoi=AOI, start="2025-04-01", end="2025-10-31")
    assert q.cache_key() == cache_key(aoi=AOI, start="2025-04-01", end="2025-10-31") \
        == cache_key(q) == "baad01ade3c97500"
    other = dataclasses.replace(q, max_tile_cloud_pct=50)
    assert other.cache_key() != q.cache_key()  # the pre-filter changes the stack


@pytest.mark.parametrize("kw, match", [
    (dict(start="2025-05-01", end="2025-04-01"), "after end"),
    (dict(max_cloud=1.5), "max_cloud must be a fraction"),
    (dict(min_coverage="x"), "min_coverage must be a number"),
    (dict(max_tile_cloud_pct=120), "percentage"),
    (dict(stac_url="ftp://x"), "http"),
    (dict(bands="B05"), "unknown band"),
    (dict(aoi=(1, 2, 3)), "west, south, east, north"),
    (dict(aoi="10,50,9,51"), "empty or inverted"),
])
def test_invalid_fields_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        SceneQuery(**{**dict(aoi=AOI, start="2025-04-01", end="2025-10-31"), **kw})


def test_as_query_refuses_mixed_missing_and_unknown():
    q = SceneQuery(aoi=AOI, start="2025-04-01", end="2025-10-31")
    assert as_query(q) is q and as_query(q, bands=None) is q
    with pytest.raises(ConfigError, match="not both"):
        as_query(q, start="2025-01-01")
    with pytest.raises(ConfigError, match="needs end"):
        as_query(aoi=AOI, start="2025-04-01")
    with pytest.raises(ConfigError, match="unknown query field"):
        as_query(aoi=AOI, start="2025-04-01", end="2025-10-31", colour="red")
    assert split_query({"aoi": AOI, "out": "x"}) == ({"aoi": AOI}, {"out": "x"})
