"""The geometry of a north-up raster grid, shared by stacks and STAC grids."""

from __future__ import annotations

from typing import Any

from affine import Affine


class RasterGrid:
    """Geometry of a north-up grid: a mixin for (frozen) dataclasses with grid fields.

    A class that mixes this in declares ``crs``, ``transform``, ``width`` and ``height``
    (as :class:`splatsr.io.stack.Stack` does); this class adds what follows from them.
    """

    crs: str  # e.g. "EPSG:32633"
    transform: Affine  # north-up, square pixels
    width: int  # pixels (columns)
    height: int  # pixels (rows)

    @property
    def pixel_m(self) -> float:
        """Pixel size in metres (CRS units)."""
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in CRS units."""
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    def output_transform(self, resolution_m: float) -> Affine:
        """The transform of a grid of ``resolution_m`` pixels over the same extent."""
        t = self.transform
        return Affine(resolution_m, 0, t.c, 0, -resolution_m, t.f)

    def key(self) -> dict[str, Any]:
        """The grid as JSON-ready values (for cache keys and ``stack.json``)."""
        return {"crs": self.crs, "transform": list(tuple(self.transform)[:6]),
                "width": self.width, "height": self.height}
