"""The provenance tags of a fitted product, shared by a whole-stack COG and a tiled mosaic.

Both routes describe the same model (sensor, splats, the automatic choices resolved on the
whole stack, the product), so a tiled run's mosaic carries the same tags as a whole-stack
run's COG; the routes add their own (the PSF selection, the tiling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from splatsr.core.config import FitConfig
from splatsr.core.model import SIGMA_PER_SPACING


def fit_tags(config: FitConfig, *, band_names: Sequence[str],
             band_offsets_m: np.ndarray | None, anchored: bool,
             observed: bool = False) -> dict[str, Any]:
    """The model and product tags of a fit with the resolved ``config``.

    ``band_offsets_m`` (B, 2) as fitted (None or all zero: the bands line up, no tag);
    ``anchored``: the product is median-anchored (:mod:`splatsr.core.products.consensus`);
    ``observed``: the target date is an acquisition whose own observation sets the scene
    (:mod:`splatsr.core.products.observed`).
    """
    cfg = config
    sigma = cfg.splat_sigma_m if cfg.splat_sigma_m is not None else \
        SIGMA_PER_SPACING * cfg.splat_spacing_m
    tags: dict[str, Any] = dict(psf_sigma_m=cfg.psf_sigma_m,
                                splat_spacing_m=cfg.splat_spacing_m, splat_sigma_m=sigma,
                                config=asdict(cfg), units="reflectance (0-1)",
                                change_cell_m=cfg.change_cell() or 0.0)
    suffix = ", median-anchored" if anchored else ""
    if cfg.target_date is not None:
        tags.update(product="observed date scene" if observed else
                    "scene at target date" + suffix, target_date=cfg.target_date,
                    time_window_days=cfg.time_window_days)
    else:
        tags["product"] = "consensus" + suffix
    if band_offsets_m is not None and np.any(band_offsets_m):
        tags["band_offsets_m"] = {b: [round(float(v), 4) for v in o]
                                  for b, o in zip(band_names, band_offsets_m)}
    if cfg.band_psf_sigma_m is not None:
        tags["band_psf_sigma_m"] = {b: float(v) for b, v in
                                    zip(band_names, cfg.band_psf_sigma_m)}
    return tags
