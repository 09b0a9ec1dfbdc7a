"""Files and the network: what goes into a fit and what comes out of it.

:mod:`~splatsr.io.stack` is the stack directory (the input contract); :mod:`~splatsr.io.export`
writes the COG and the shifts CSV; :mod:`~splatsr.io.fetch` builds a stack from a STAC API
for a :class:`~splatsr.io.query.SceneQuery` (:mod:`~splatsr.io.stac` for the search and the
windowed COG reads,
:mod:`~splatsr.io.sentinel2` for the product's facts: baselines, SCL, grids);
:mod:`~splatsr.io.xarray` turns a (time, band, y, x) DataArray into a stack and a scene
into a DataArray; :mod:`~splatsr.io.sample` is the small real stack shipped with the package;
:mod:`~splatsr.io.atomic` writes every file through a temporary name and a rename;
:mod:`~splatsr.io.grid` is the geometry of a north-up raster grid (:class:`RasterGrid`) and
:mod:`~splatsr.io.text` the file-name-safe ids and CSV cells every writer uses.
"""

from splatsr.io.export import read_shifts_csv, shifts_path, write_cog, write_shifts_csv
from splatsr.io.sample import sample_path, sample_stack
from splatsr.io.stack import (
           Observation,
           Stack,
           read_stack,
           write_observation,
           write_stack,
)

__all__ = ["Observation", "Stack", "read_shifts_csv", "read_stack", "sample_path",
           "sample_stack", "shifts_path", "write_cog", "write_observation", "write_shifts_csv",
           "write_stack"]
