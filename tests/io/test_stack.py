"""The stack directory contract: round trip and every way it can be wrong."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from affine import Affine

import splatsr
from splatsr.io.stack import read_stack, write_observation, write_stack

T0 = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)


def _stack(tmp_path, n=3, shape=(2, 6, 5)):
    data = np.random.default_rng(0).random((n, *shape)).astype(np.float32)
    data[0, 0, 0, 0] = np.nan
    return write_stack(tmp_path / "s", data, crs="EPSG:32633", transform=T0,
                       bands=["B02", "B03"], ids=[f"o{i}" for i in range(n)],
                       datetimes=["2025-06-01T10:00:00Z"] * n, note="extra"), data


def test_round_trip(tmp_path):
    stack, data = _stack(tmp_path)
    assert stack.bands == ("B02", "B03") and stack.width == 5 and stack.height == 6
    assert stack.meta == {"note": "extra"} and stack.pixel_m == 10.0
    assert stack.bounds == (500000.0, 4999940.0, 500050.0, 5000000.0)
    np.testing.assert_array_equal(stack.load(), data)  # NaN preserved (equal_nan default)


def _edit(stack, **changes):
    spec = json.loads((stack.root / "stack.json").read_text())
    spec.update(changes)
    (stack.root / "stack.json").write_text(json.dumps(spec))


@pytest.mark.parametrize("change,message", [
    (dict(format="other/1"), "'format' must be"),
    (dict(crs="EPSG:4326"), "geographic"),
    (dict(crs="nonsense"), "not a CRS"),
    (dict(transform=[10, 0, 0, 0, 10, 0]), "north-up"),
    (dict(transform=[10, 0, 0, 0, -20, 0]), "square"),
    (dict(width=0), "positive integer"),
    (dict(bands=[]), "non-empty"),
    (dict(observations=[{"id": "x"}]), "needs keys"),
    (dict(width=7), "the stack grid is 7x6"),
    (dict(bands=["B02"]), "has 2 bands"),
    (dict(transform=[10, 0, 500010.0, 0, -10, 5000000.0]), "not on the declared grid"),
])
def test_invalid_stack_json(tmp_path, change, message):
    stack, _ = _stack(tmp_path)
    _edit(stack, **change)
    with pytest.raises(splatsr.StackError, match=message):
        read_stack(stack.root)


def test_missing_and_malformed(tmp_path):
    with pytest.raises(splatsr.StackError, match="no such stack directory"):
        read_stack(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(splatsr.StackError, match="no stack.json"):
        read_stack(tmp_path / "empty")
    stack, _ = _stack(tmp_path)
    (stack.root / "stack.json").write_text("{not json")
    with pytest.raises(splatsr.StackError, match="not valid JSON"):
        read_stack(stack.root)


def test_missing_observation_file_and_wrong_crs(tmp_path):
    stack, data = _stack(tmp_path)
    obs = stack.observations[1]
    write_observation(stack.root / obs.path, data[1], crs="EPSG:32632", transform=T0,
                      bands=stack.bands)
    with pytest.raises(splatsr.StackError, match="is in EPSG:32632"):
        read_stack(stack.root)
    (stack.root / obs.path).unlink()
    with pytest.raises(splatsr.StackError, match="file is missing"):
        read_stack(stack.root)


def test_no_valid_pixels(tmp_path):
    data = np.full((2, 1, 4, 4), np.nan, np.float32)
    stack = write_stack(tmp_path / "s", data, crs="EPSG:32633", transform=T0, bands=["B02"],
                        ids=["a", "b"], datetimes=["2025", "2025"])
    with pytest.raises(splatsr.StackError, match="no valid pixels"):
        stack.load()


def test_stack_json_path_accepted_and_files_not_left_behind(tmp_path):
    stack, _ = _stack(tmp_path)
    assert read_stack(stack.root / "stack.json").root == stack.root
    leftovers = [p for p in stack.root.rglob("*") if ".part" in p.name]
    assert leftovers == []
    shutil.rmtree(stack.root)
