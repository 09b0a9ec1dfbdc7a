"""The store of finished tiles: one JSON (written last) and one .npy per tile and key.

A tile's key hashes the source's content fingerprint, the window, the solver settings and the
output resolution, so a rerun reuses exactly the tiles whose inputs did not change.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from splatsr.core.solver import FitConfig
from splatsr.io.atomic import atomic_path
from splatsr.tiles.plan import Tile

STORE_FORMAT = "splatsr-tile/2"  # bump to invalidate every stored tile
KEY_IGNORES = ("device", "progress")  # FitConfig fields that do not change a tile's result


def tile_key(*, fingerprint: str, tile: Tile, config: FitConfig, resolution_m: float,
             series: list[list[int]] | None = None) -> str:
    """Key of a tile result: source (its fingerprint), window, solver settings, resolution
    and, for the series product, its segments (the dates of each)."""
    cfg = {k: v for k, v in asdict(config).items() if k not in KEY_IGNORES}
    spec = dict(format=STORE_FORMAT, stack=fingerprint, resolution_m=float(resolution_m),
                window=[tile.row0, tile.col0, tile.rows, tile.cols], config=cfg)
    if series is not None:
        spec["series"] = series
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def entry_paths(store: Path, tile: Tile, key: str) -> tuple[Path, Path]:
    """(meta JSON, image .npy) paths of a stored tile; the JSON is written last."""
    stem = store / f"{tile.id}-{key}"
    return stem.with_suffix(".json"), stem.with_suffix(".npy")


def sigma_entry_path(image_path: Path) -> Path:
    """The stored 1-sigma map beside a tile's image: ``<tile>-<key>.sigma.npy``."""
    return image_path.with_name(image_path.stem + ".sigma.npy")


def load_entry(store: str | os.PathLike, tile: Tile, key: str) -> dict[str, Any] | None:
    """The stored metadata of a finished tile, or None when it is not (completely) stored."""
    meta_path, img_path = entry_paths(Path(store), tile, key)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("status") == "fitted" and not img_path.is_file():
        return None
    return meta


def default_store(out: str | os.PathLike) -> Path:
    """``sr.tif`` -> ``sr.tiles/`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".tiles")


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as float32 .npy at ``path`` (to a temporary name, then renamed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array.astype(np.float32))


def json_nulls(a: np.ndarray) -> list[Any]:
    """``a.tolist()`` with None for NaN (valid JSON)."""
    return np.where(np.isfinite(a), a, None).tolist()
