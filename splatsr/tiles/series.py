"""Every acquisition of a large stack, in tiles: the series product on Dask.

The series (:mod:`splatsr.core.products.series`) tile by tile, with the whole-stack series'
decisions made once and shared by every tile, so neighbouring tiles fit one model:

* the segments (the dates each segment fit renders, from the whole stack's valid shares),
  the change layer and the band offsets (:func:`splatsr.tiles.inputs.stack_choices`);
* :func:`fit_series_tile` -- the Dask task: read the tile's window of every date, fit each
  segment (a segment whose dates are all clouded over the tile borrows the nearest dates in
  time that are not), render every date's observed-date scene one at a time into one stored
  (T, B, rows, cols) array (a memory map: memory flat in the number of dates), and its
  1-sigma map with ``uncertainty``;
* :func:`fit_series_tiled` -- the driver: the tiles on the cluster (reused when stored, as
  :func:`splatsr.tiles.run.fit_tiled`), then one blended mosaic COG per date, written one
  date at a time, ``shifts.csv`` (mean over tiles), ``tile_shifts.csv``, ``shifts.tif`` and
  last ``items.json``, the same folder as an untiled ``--every-date`` run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from splatsr.core.checks import MIN_OBSERVATIONS
from splatsr.core.config import FitConfig
from splatsr.core.inputs import InputWarning
from splatsr.core.products.series import SeriesPlan, fit_segments, series_plan
from splatsr.errors import StackError
from splatsr.io.atomic import atomic_path, write_text_atomic
from splatsr.io.export import sigma_path
from splatsr.io.series import ITEMS_NAME, SeriesGrid, series_item, series_name, write_items
from splatsr.io.stack import Stack
from splatsr.tiles.inputs import warn_shift_limit
from splatsr.tiles.mosaic import write_mosaic, write_shifts
from splatsr.tiles.plan import Tile, plan_tiles
from splatsr.tiles.run import (
    LOCAL_READS,
    TiledResult,
    has_sigma,
    open_store,
    prepare_torch,
    raise_failures,
    record_done,
    run_tiles,
    start_run,
)
from splatsr.tiles.sources import TileSource
from splatsr.tiles.store import (
    STORE_FORMAT,
    entry_paths,
    json_nulls,
    load_entry,
    sigma_entry_path,
)

SERIES_PRODUCT = "observed date scene"  # the product tag of every date's COG


def fit_series_tile(source: TileSource, tile: Tile, *, config: dict[str, Any],
                    groups: list[list[int]], resolution_m: float, store: str, entry_key: str,
                    read_slots: Any = None, torch_threads: int | None = None,
                    uncertainty: str | None = None,
                    band_offsets_m: list[list[float]] | None = None) -> dict[str, Any]:
    """Fit one tile's segments and store every date's scene (the Dask task).

    ``groups``: the stack dates each segment renders; ``config``, ``band_offsets_m``: the
    whole stack's; the rest as :func:`splatsr.tiles.run.fit_tile`. Returns the tile's
    metadata: ``status``, per date ``shifts_m`` ((T, 2), null where the tile has no valid
    pixel of that date), ``residual_rms``, ``date_weight`` and ``segment``.
    """
    done = load_entry(store, tile, entry_key)
    if done is not None and has_sigma(done, uncertainty):
        return dict(done, reused=True)
    prepare_torch(config, torch_threads)
    with read_slots if read_slots is not None else LOCAL_READS:
        data = source.read(tile.window)  # (T, B, rows, cols)
    meta: dict[str, Any] = dict(format=STORE_FORMAT, tile=asdict(tile), key=entry_key,
                                ids=source.ids, product="series")
    n_obs = int(np.isfinite(data).reshape(len(data), -1).any(axis=1).sum())
    meta_path, img_path = entry_paths(Path(store), tile, entry_key)
    if n_obs < MIN_OBSERVATIONS:
        meta.update(status="empty", reason=f"{n_obs} observation(s) with valid pixels",
                    seconds=0.0)
    else:
        plan = SeriesPlan(FitConfig(**config), tuple(np.asarray(g) for g in groups),
                          None if band_offsets_m is None else np.asarray(band_offsets_m))
        meta.update(_fit_and_store(source, data, plan, resolution_m=resolution_m,
                                   img_path=img_path, uncertainty=uncertainty))
    write_text_atomic(meta_path, json.dumps(meta) + "\n")
    return dict(meta, reused=False)


def _fit_and_store(source: TileSource, data: np.ndarray, plan: SeriesPlan, *,
                   resolution_m: float, img_path: Path, uncertainty: str | None
                   ) -> dict[str, Any]:
    """Fit the segments of a tile's (T, B, rows, cols) ``data``, store every date's scene
    (and 1-sigma map) as (T, B, rows f, cols f) float32; the tile's metadata."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # the whole stack's findings are said by the driver
        warnings.simplefilter("ignore", InputWarning)
        segments = fit_segments(data, pixel_m=source.pixel_m, plan=plan,
                                dates=list(source.datetimes), band_names=tuple(source.bands))
    T, B, rows, cols = data.shape
    f = round(source.pixel_m / resolution_m)
    seen = np.isfinite(data).reshape(T, -1).any(axis=1)  # (T,)
    per = dict(shifts_m=np.full((T, 2), np.nan), residual_rms=np.full(T, np.nan),
               date_weight=np.full(T, np.nan), segment=np.zeros(T, int))
    with contextlib.ExitStack() as es:
        images = [_open_array(es, img_path, (T, B, rows * f, cols * f))]
        if uncertainty:
            images.append(_open_array(es, sigma_entry_path(img_path), images[0].shape))
        for t in range(T):  # one date at a time
            k, seg = next((k, s) for k, s in enumerate(segments) if s.renders(t))
            i = seg.index_of(t)
            image = seg.scene(data, t, resolution_m)
            images[0][t] = image
            if uncertainty:
                images[1][t] = seg.sigma(data, t, resolution_m, mode=uncertainty, scene=image)
            per["segment"][t] = k
            if seen[t]:
                per["shifts_m"][t] = seg.shift_m(t)
                per["residual_rms"][t] = seg.fit.residual_rms[i]
                per["date_weight"][t] = seg.fit.obs_weights[i]
        for img in images:
            img.flush()
    return dict(status="fitted", seconds=time.perf_counter() - t0, sigma=uncertainty,
                **{k: json_nulls(v) for k, v in per.items()})


def _open_array(es: contextlib.ExitStack, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 .npy memory map of ``shape`` written under a temporary name and renamed
    onto ``path`` when ``es`` closes without an error."""
    tmp = es.enter_context(atomic_path(path))
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)


def fit_series_tiled(source: Stack | TileSource | str | os.PathLike, *,
                     out_dir: str | os.PathLike, tile_size: int, overlap: int,
                     config: FitConfig | None = None, resolution_m: float = 2.5,
                     client: Any = None, address: str | None = None,
                     store: str | os.PathLike | None = None, n_workers: int | None = None,
                     retries: int = 2, max_reads: int = 4, progress: bool = False,
                     uncertainty: str | None = None) -> TiledResult:
    """Every date's observed-date scene of a stack, fitted tile by tile on Dask distributed.

    Writes in ``out_dir`` what ``splatsr fit STACK --every-date`` writes (one COG per date,
    ``<id>.tif``, each a blended mosaic of the tiles; with ``uncertainty`` its
    ``<id>.sigma.tif``; ``shifts.csv``, the mean over tiles; ``items.json``, written last)
    and the tiles' shifts, ``tile_shifts.csv`` and ``shifts.tif``. The other parameters
    are :func:`splatsr.tiles.run.fit_tiled`'s; the tile store defaults to
    ``<out_dir>.tiles`` beside ``out_dir``.

    Returns
    -------
    TiledResult
        ``path`` is the ``items.json``.

    Raises
    ------
    ConfigError
        A target date (the series renders every date).
    TileError, StackError
        As :func:`splatsr.tiles.run.fit_tiled`.
    """
    t0 = time.perf_counter()
    source, factor, choices = start_run(source, config, resolution_m)
    valid = choices.valid_fraction
    plan = series_plan(choices.config, dates=source.datetimes,
                       valid_fraction=np.ones(len(source.ids)) if valid is None else valid,
                       band_offsets_m=choices.band_offsets_m)
    groups = [g.tolist() for g in plan.groups]
    out_dir = Path(out_dir)
    tiles = plan_tiles(height=source.height, width=source.width, tile_size=tile_size,
                       overlap=overlap)
    store, keys, metas = open_store(store, out_dir, source, tiles, plan.config, resolution_m,
                                    uncertainty, series=groups)
    res = TiledResult(path=out_dir / ITEMS_NAME, tiles=tiles, store=store,
                      observations=source.ids, reused=[t.id for t in tiles if metas[t.id]],
                      uncertainty=uncertainty, inputs=choices.inputs,
                      band_offsets_m=plan.band_offsets_m)
    if todo := [t for t in tiles if metas[t.id] is None]:
        common = dict(config=dict(asdict(plan.config), progress=False), groups=groups,
                      resolution_m=resolution_m, store=str(store.resolve()),
                      uncertainty=uncertainty, band_offsets_m=None if res.band_offsets_m is None
                      else res.band_offsets_m.tolist())
        done, failures = run_tiles(fit_series_tile, source, todo, keys, common=common,
                                   cfg=plan.config, client=client, address=address,
                                   n_workers=n_workers, retries=retries, max_reads=max_reads,
                                   progress=progress)
        record_done(done, metas, res)
        raise_failures(failures, n_tiles=len(tiles), retries=retries, store=store)
    res.empty = [t.id for t in tiles if metas[t.id]["status"] == "empty"]
    if len(res.empty) == len(tiles):
        raise StackError(f"{source.name}: no tile has valid pixels in at least "
                         f"{MIN_OBSERVATIONS} observations; nothing to mosaic")
    res.shifts_m, res.tile_shifts_csv, res.shifts_tif = write_shifts(
        source, tiles, metas, out=out_dir, in_folder=True)
    _write_dates(res, source, keys, metas, plan, factor=factor, overlap=overlap)
    warn_shift_limit(res.shifts_m, choices.inputs.date_labels)
    res.seconds = time.perf_counter() - t0
    return res


def _write_dates(res: TiledResult, source: TileSource, keys: dict[str, str],
                 metas: dict[str, dict], plan: SeriesPlan, *, factor: int,
                 overlap: int) -> Path:
    """One mosaic COG per date (and its sigma), one date at a time, then ``items.json``."""
    out_dir = res.path.parent
    grid = SeriesGrid(source.crs, source.raster().output_transform(source.pixel_m / factor),
                      (source.height * factor, source.width * factor), tuple(source.bands))
    weights = np.array([[np.nan if w is None else w for w in m["date_weight"]]
                        for m in metas.values() if m["status"] == "fitted"], float)
    items = []
    for t, (obs_id, when) in enumerate(zip(source.ids, source.datetimes)):
        group = next(g for g in plan.groups if t in g)
        with warnings.catch_warnings():  # a date no tile saw: no weight
            warnings.simplefilter("ignore", RuntimeWarning)
            weight = float(np.nanmean(weights[:, t]))
        tags = dict(product=SERIES_PRODUCT, observation=obs_id, datetime=when,
                    observations=[source.ids[k] for k in group],
                    date_weight=None if np.isnan(weight) else weight)
        name = series_name(obs_id)
        kw = dict(store=res.store, factor=factor, overlap=overlap, config=plan.config,
                  band_offsets_m=plan.band_offsets_m, date=t, extra_tags=tags)
        write_mosaic(source, res.tiles, keys, metas, out=out_dir / name, **kw)
        sig = None if not res.uncertainty else write_mosaic(
            source, res.tiles, keys, metas, out=sigma_path(out_dir / name),
            sigma=res.uncertainty, **kw)
        items.append(series_item(obs_id, when, href=name, grid=grid, product=SERIES_PRODUCT,
                                 sigma_href=None if sig is None else sig.name))
    return write_items(out_dir, items)
