"""Areas larger than one GPU: overlapping tiles, each fitted alone, blended into one COG.

:mod:`~splatsr.tiles.plan` cuts the area and defines the blend weights; :mod:`~splatsr.tiles.
store` keeps finished tiles so reruns resume; :mod:`~splatsr.tiles.sources` reads a tile's
window from a stack directory or straight from STAC; :mod:`~splatsr.tiles.run` runs the tiles
on Dask (:mod:`~splatsr.tiles.series`: every date's scene, a mosaic per date);
:mod:`~splatsr.tiles.mosaic` blends them into the output COG and shift rasters.
"""

_HOMES = {"Tile": "splatsr.tiles.plan", "plan_tiles": "splatsr.tiles.plan",
          **dict.fromkeys(("TiledResult", "fit_aoi_tiled", "fit_tiled"), "splatsr.tiles.run"),
          "fit_series_tiled": "splatsr.tiles.series"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:  # lazy: importing the package stays cheap
    import importlib

    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
