"""Tiled fits on Dask distributed: the tile task and the drivers.

* :func:`fit_tile` -- the Dask task: read the tile's window of every observation from its source
  (a bounded number of tiles read at a time across the cluster), fit it with the ordinary
  solver, render it, store it under a key of source + window + parameters. Idempotent: a
  finished tile is never fitted again.
* :func:`fit_tiled` -- the driver: plan the tiles, submit the missing ones to a Dask cluster (a
  LocalCluster by default), retry failures, report tiles that still fail, then write the mosaic
  and the shift outputs (:mod:`splatsr.tiles.mosaic`).
* :func:`fit_aoi_tiled` -- the same for an AOI straight from STAC: the driver only searches and
  plans (:func:`splatsr.io.fetch.plan_scenes`); every task reads, signs and masks its own window
  of every scene (:class:`splatsr.tiles.sources.RemoteSource`). Nothing is fetched to disk.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm  # not tqdm.auto: its import warns in notebooks without ipywidgets

from splatsr.core.checks import MIN_OBSERVATIONS, integer_ratio
from splatsr.core.inputs import InputReport, InputWarning
from splatsr.core.solver import FitConfig, fit_arrays
from splatsr.core.products.uncertainty import sigma_map
from splatsr.errors import ConfigError, FetchError, StackError, TileError
from splatsr.io.atomic import write_text_atomic
from splatsr.io.export import sigma_path
from splatsr.io.fetch import plan_scenes, remote_gdal_env
from splatsr.io.query import SceneQuery, as_query, split_query
from splatsr.io.stack import Stack, read_stack
from splatsr.tiles.inputs import StackChoices, stack_choices, warn_shift_limit
from splatsr.tiles.mosaic import write_mosaic, write_shifts
from splatsr.tiles.plan import Tile, plan_tiles
from splatsr.tiles.sources import LocalSource, RemoteSource, TileSource, as_source
from splatsr.tiles.store import (
    STORE_FORMAT,
    default_store,
    entry_paths,
    json_nulls,
    load_entry,
    save_array,
    sigma_entry_path,
    tile_key,
)

CONNECT_TIMEOUT = "20s"  # how long to try to reach a --dask scheduler
LOCAL_READS = threading.BoundedSemaphore(4)  # bounds reads when no Dask semaphore is given


def fit_tile(source: TileSource, tile: Tile, *, config: dict[str, Any], resolution_m: float,
             store: str, entry_key: str, read_slots: Any = None,
             torch_threads: int | None = None, uncertainty: str | None = None,
             band_offsets_m: list[list[float]] | None = None) -> dict[str, Any]:
    """Fit one tile and store it (the Dask task). Returns the tile's metadata.

    Parameters
    ----------
    source
        Where the pixels are: a :class:`LocalSource` (a stack directory every worker can
        read) or a :class:`RemoteSource` (COGs read, signed and masked here, in the task).
    tile
        The window to fit.
    config
        :class:`FitConfig` fields as a dict.
    resolution_m
        Pixel size of the stored rendering.
    store, entry_key
        Tile store folder (shared with the client) and the tile's key (:func:`tile_key`).
    read_slots
        A ``distributed.Semaphore`` bounding concurrent reads across the cluster (None: a
        per-process bound of 4).
    torch_threads
        Set torch's intra-op threads in this worker first (None: leave as is).
    uncertainty
        ``"full"`` or ``"fast"``: also store the tile's 1-sigma map (:func:`sigma_entry_path`).
    band_offsets_m
        (B, 2) band offsets decided on the whole stack (None: the tile estimates its own).

    Returns
    -------
    dict
        ``status`` ("fitted" or "empty"), ``shifts_m`` ((T, 2), null for a date with no valid
        pixel in the tile: it is left out of the tile's fit), ``residual_rms``, ``seconds``,
        ... Empty tiles (fewer than two observations with valid pixels) store no image.
    """
    done = load_entry(store, tile, entry_key)
    if done is not None and has_sigma(done, uncertainty):
        return dict(done, reused=True)
    prepare_torch(config, torch_threads)
    with read_slots if read_slots is not None else LOCAL_READS:
        data = source.read(tile.window)  # (T, B, rows, cols)
    meta: dict[str, Any] = dict(format=STORE_FORMAT, tile=asdict(tile), key=entry_key,
                                ids=source.ids)
    seen = np.isfinite(data).reshape(len(data), -1).any(axis=1)  # (T,) dates with valid pixels
    n_obs = int(seen.sum())
    meta_path, img_path = entry_paths(Path(store), tile, entry_key)
    if n_obs < MIN_OBSERVATIONS:
        meta.update(status="empty", reason=f"{n_obs} observation(s) with valid pixels",
                    seconds=0.0)
    else:
        meta.update(_fit_and_store(source, data, seen, config=config,
                                   resolution_m=resolution_m, img_path=img_path,
                                   uncertainty=uncertainty, band_offsets_m=band_offsets_m))
    write_text_atomic(meta_path, json.dumps(meta) + "\n")
    return dict(meta, reused=False)


def prepare_torch(config: dict[str, Any], torch_threads: int | None) -> None:
    """Set this worker's torch threads and, unless the device is "cpu", its GPU (the first
    step of every tile task)."""
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    if config.get("device") != "cpu" and torch.cuda.is_available():
        _pick_gpu(torch)


def _fit_and_store(source: TileSource, data: np.ndarray, seen: np.ndarray, *,
                   config: dict[str, Any], resolution_m: float, img_path: Path,
                   uncertainty: str | None = None,
                   band_offsets_m: list[list[float]] | None = None) -> dict[str, Any]:
    """Fit the dates ``seen`` of a tile's ``data``, save the rendering (and its 1-sigma map
    with ``uncertainty``); the tile's metadata."""
    dates = np.asarray(source.datetimes, dtype=object)
    fitted = data if seen.all() else data[seen]
    with warnings.catch_warnings():  # the whole stack's findings are said by the driver
        warnings.simplefilter("ignore", InputWarning)
        result = fit_arrays(fitted, pixel_m=source.pixel_m, config=FitConfig(**config),
                            band_names=source.bands,
                            dates=dates if seen.all() else dates[seen],
                            band_offsets_m=None if band_offsets_m is None else
                            np.asarray(band_offsets_m, np.float64))
    image = result.render(resolution_m)  # (B, rows * f, cols * f)
    save_array(img_path, image)
    if uncertainty:
        save_array(sigma_entry_path(img_path), sigma_map(result, fitted, mode=uncertainty,
                                                        resolution_m=resolution_m, scene=image))
    shifts = np.full((len(data), 2), np.nan)
    rms = np.full(len(data), np.nan)
    shifts[seen], rms[seen] = result.reported_shifts_m(), result.residual_rms
    meta = dict(status="fitted", shifts_m=json_nulls(shifts), residual_rms=json_nulls(rms),
                seconds=result.seconds, sigma=uncertainty)
    if result.time_weight is not None:
        tw = np.full(len(data), np.nan)
        tw[seen] = result.time_weight
        meta["time_weight"] = json_nulls(tw)
    return meta


def has_sigma(meta: dict[str, Any] | None, uncertainty: str | None) -> bool:
    """Whether a stored tile serves a run that asks for ``uncertainty`` (None: no sigma).

    Empty tiles serve every run; fitted ones need a stored sigma of the same mode.
    """
    return (uncertainty is None or meta is None or meta.get("status") != "fitted"
            or meta.get("sigma") == uncertainty)


def _pick_gpu(torch: Any) -> None:
    """On a LocalCluster worker named 0, 1, ...: use GPU ``name % count`` (one per worker)."""
    try:
        from distributed import get_worker
        name = get_worker().name
    except (ImportError, ValueError):
        return
    if isinstance(name, int) and torch.cuda.device_count() > 1:
        torch.cuda.set_device(name % torch.cuda.device_count())


@dataclass
class TiledResult:
    """What a tiled fit wrote and how it went."""

    path: Path  # the mosaic COG
    tiles: list[Tile]  # every tile of the plan
    fitted: list[str] = field(default_factory=list)  # ids of tiles fitted in this run
    reused: list[str] = field(default_factory=list)  # ids of tiles found in the store
    empty: list[str] = field(default_factory=list)  # ids of tiles with too little data
    shifts_m: np.ndarray | None = None  # (n_tiles, T, 2) per-tile shifts, NaN when empty
    tile_shifts_csv: Path | None = None  # per-tile shift table
    shifts_tif: Path | None = None  # GeoTIFF of the shifts per date (one cell per tile)
    store: Path | None = None  # tile store folder
    seconds: float = 0.0  # wall time of the whole run
    observations: list[str] = field(default_factory=list)  # observation ids, in order
    uncertainty: str | None = None  # "full"/"fast" when the tiles' 1-sigma maps are made
    sigma_tif: Path | None = None  # the mosaic's 1-sigma map, with uncertainty
    dropped: list[dict[str, Any]] = field(default_factory=list)  # fit_aoi_tiled: unused items
    inputs: InputReport | None = None  # the input guard on the whole source
    band_offsets_m: np.ndarray | None = None  # (B, 2) decided on the whole stack, if it was


def fit_tiled(source: Stack | TileSource | str | os.PathLike, *, out: str | os.PathLike,
              tile_size: int, overlap: int, config: FitConfig | None = None,
              resolution_m: float = 2.5, client: Any = None, address: str | None = None,
              store: str | os.PathLike | None = None, n_workers: int | None = None,
              retries: int = 2, max_reads: int = 4, progress: bool = False,
              uncertainty: str | None = None) -> TiledResult:
    """Fit a stack tile by tile on Dask distributed and write one blended COG.

    Parameters
    ----------
    source
        A stack directory, a :class:`Stack`, or a :mod:`splatsr.tiles.sources` source.
    out
        The mosaic COG. Beside it: ``<stem>.shifts.csv`` (per date, mean over tiles),
        ``<stem>.tile_shifts.csv`` (per tile and date), ``<stem>.shifts.tif`` and, with
        ``uncertainty`` ("full"/"fast"), ``<stem>.sigma.tif`` (the tiles' sigma, blended).
    tile_size, overlap
        Tile side and least overlap in 10 m pixels (see :func:`plan_tiles`).
    config, resolution_m
        Solver settings of every tile; output pixel size (must divide the source's).
    client, address
        A ``distributed.Client`` to use (not closed), or else the scheduler address of a
        cluster; default: a LocalCluster on this machine, closed at the end.
    store
        Tile store folder (default ``<stem>.tiles`` beside ``out``); finished tiles found
        there are reused. Workers and client must both see it (and a stack directory).
    n_workers
        Workers of the default LocalCluster (default: one per GPU, else one per CPU core).
    retries, max_reads, progress, uncertainty
        Extra attempts of a failing tile; tiles reading their window at once (across the
        cluster); a progress bar over tiles on stderr; see ``out``.

    Returns
    -------
    TiledResult

    Raises
    ------
    TileError
        A tile still fails after its retries; finished tiles stay stored for a rerun.
    StackError
        No tile has valid pixels in at least two observations.
    """
    t0 = time.perf_counter()
    source, factor, choices = start_run(source, config, resolution_m)
    cfg = choices.config
    tiles = plan_tiles(height=source.height, width=source.width, tile_size=tile_size,
                       overlap=overlap)
    store, keys, metas = open_store(store, out, source, tiles, cfg, resolution_m, uncertainty)
    res = TiledResult(path=Path(out), tiles=tiles, store=store, observations=source.ids,
                      reused=[t.id for t in tiles if metas[t.id]], uncertainty=uncertainty,
                      inputs=choices.inputs, band_offsets_m=choices.band_offsets_m)
    if todo := [t for t in tiles if metas[t.id] is None]:
        common = dict(config=dict(asdict(cfg), progress=False), resolution_m=resolution_m,
                      store=str(store.resolve()), uncertainty=uncertainty,
                      band_offsets_m=None if res.band_offsets_m is None else
                      res.band_offsets_m.tolist())
        done, failures = run_tiles(fit_tile, source, todo, keys, common=common, cfg=cfg,
                                   client=client, address=address, n_workers=n_workers,
                                   retries=retries, max_reads=max_reads, progress=progress)
        record_done(done, metas, res)
        raise_failures(failures, n_tiles=len(tiles), retries=retries, store=store)
    _write_outputs(res, source, keys, metas, factor=factor, overlap=overlap, config=cfg)
    warn_shift_limit(res.shifts_m, choices.inputs.date_labels)
    res.seconds = time.perf_counter() - t0
    return res


def start_run(source: Stack | TileSource | str | os.PathLike, config: FitConfig | None,
              resolution_m: float) -> tuple[TileSource, int, StackChoices]:
    """The tile source, the output's pixels per 10 m pixel, and the whole stack's input
    findings (said here) and automatic choices, made once for every tile."""
    source = tile_source(source)
    (cfg := config or FitConfig()).validate()
    factor = output_factor(source.pixel_m, resolution_m)
    choices = stack_choices(source, cfg)
    choices.inputs.warn(stacklevel=3)
    return source, factor, choices


def open_store(store: str | os.PathLike | None, out: str | os.PathLike, source: TileSource,
               tiles: list[Tile], cfg: FitConfig, resolution_m: float,
               uncertainty: str | None = None, series: list[list[int]] | None = None
               ) -> tuple[Path, dict[str, str], dict[str, dict | None]]:
    """The store folder (made), each tile's key (:func:`tile_key`; ``series``: the series'
    segments) and its finished entry (None if not yet, or if it lacks the 1-sigma map that
    ``uncertainty`` asks for)."""
    store = Path(store) if store is not None else default_store(out)
    store.mkdir(parents=True, exist_ok=True)
    fp = source.fingerprint()
    keys = {t.id: tile_key(fingerprint=fp, tile=t, config=cfg, resolution_m=resolution_m,
                           series=series) for t in tiles}
    metas = {t.id: load_entry(store, t, keys[t.id]) for t in tiles}
    return store, keys, {k: m if has_sigma(m, uncertainty) else None for k, m in metas.items()}


def _write_outputs(res: TiledResult, source: TileSource, keys: dict[str, str],
                   metas: dict[str, dict], *, factor: int, overlap: int,
                   config: FitConfig) -> None:
    """Write the mosaic and the shift outputs of a finished run; record them in ``res``."""
    tiles = res.tiles
    res.empty = [t.id for t in tiles if metas[t.id]["status"] == "empty"]
    if len(res.empty) == len(tiles):
        raise StackError(f"{source.name}: no tile has valid pixels in at least "
                         f"{MIN_OBSERVATIONS} observations; nothing to mosaic")
    write_mosaic(source, tiles, keys, metas, out=res.path, store=res.store, factor=factor,
                 overlap=overlap, config=config, band_offsets_m=res.band_offsets_m)
    if res.uncertainty:
        res.sigma_tif = write_mosaic(source, tiles, keys, metas, out=sigma_path(res.path),
                                     store=res.store, factor=factor, overlap=overlap,
                                     config=config, sigma=res.uncertainty,
                                     band_offsets_m=res.band_offsets_m)
    res.shifts_m, res.tile_shifts_csv, res.shifts_tif = write_shifts(source, tiles, metas,
                                                                     out=res.path)


def tile_source(source: Stack | TileSource | str | os.PathLike) -> TileSource:
    """A tile source for a stack directory, a :class:`Stack` or a source (as is)."""
    if isinstance(source, (str, os.PathLike)):
        source = read_stack(source)
    if isinstance(source, Stack):  # workers open the files by absolute path
        source = LocalSource(replace(source, root=source.root.resolve()))
    return as_source(source)


def raise_failures(failures: list[tuple[str, str]], *, n_tiles: int, retries: int,
                    store: Path) -> None:
    """Raise a :class:`TileError` listing the first failed tiles, if any failed."""
    if not failures:
        return
    listed = "; ".join(f"{tid}: {msg}" for tid, msg in failures[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    raise TileError(f"{len(failures)} of {n_tiles} tiles failed after {retries} "
                    f"retries: {listed}{more}; the {n_tiles - len(failures)} "
                    f"finished tiles are kept in {store}, rerun to fit only the rest")


def fit_aoi_tiled(query: SceneQuery | None = None, *, out: str | os.PathLike,
                  tile_size: int, overlap: int, http_retries: int = 5,
                  http_backoff_s: float = 1.0, **kwargs: Any) -> TiledResult:
    """Tiled fit of an AOI read straight from STAC: no stack on disk, reads inside the tasks.

    The driver searches and plans exactly as :func:`splatsr.io.fetch.fetch_stack` does (tile and
    60 m-snapped grid for the AOI, reprocessed copies deduplicated, the ``eo:cloud_cover``
    pre-filter) and reads no pixel. Each tile task reads its own window of every scene from
    the COGs, signing the hrefs just before (and again after an HTTP 403), and masks it with
    the scene classification layer. Scenes are not screened by their cloud fraction over the
    AOI (that needs every pixel): cloudy pixels are NaN in each tile, and a date without any
    valid pixel in a tile is left out of that tile's fit.

    Parameters
    ----------
    query
        What to read (:class:`splatsr.io.query.SceneQuery`); or give its fields (``aoi``,
        ``start``, ``end``, ``bands``, ``stac_url``, ``collection``, ``max_tile_cloud_pct``)
        as keywords. Its ``max_cloud`` and ``min_coverage`` are not used (see above).
    http_retries, http_backoff_s
        As for :func:`splatsr.io.fetch.fetch_stack`.
    out, tile_size, overlap
        As for :func:`fit_tiled`.
    **kwargs
        Further keywords for :func:`fit_tiled` (``config``, ``resolution_m``, ``client``,
        ``address``, ``store``, ``max_reads`` (remote reads at once), ...).

    Returns
    -------
    TiledResult
        With ``dropped``: the items found but not used, and why.

    Raises
    ------
    ConfigError
        Invalid AOI, dates or bands; AOI not inside one tile.
    FetchError
        The search fails, or fewer than two scenes pass the pre-filter.
    """
    query_kw, kwargs = split_query(kwargs)
    q = as_query(query, **query_kw)
    plan = plan_scenes(q, http_retries=http_retries,
                       http_backoff_s=http_backoff_s, progress=kwargs.get("progress", False))
    if len(plan.scenes) < MIN_OBSERVATIONS:
        raise FetchError(f"{len(plan.scenes)} scene(s) of tile {plan.grid.tile} between "
                         f"{plan.start} and {plan.end} pass the tile cloud cover pre-filter "
                         f"({q.max_tile_cloud_pct:g} %); a fit needs at least {MIN_OBSERVATIONS}")
    env = remote_gdal_env(http_retries, http_backoff_s)
    source = RemoteSource(grid=plan.grid, scenes=plan.scenes, band_names=plan.bands,
                          gdal_env=tuple(sorted(env.items())))
    res = fit_tiled(source, out=out, tile_size=tile_size, overlap=overlap, **kwargs)
    res.dropped = list(plan.dropped)
    return res


def output_factor(pixel_m: float, resolution_m: float) -> int:
    return integer_ratio(pixel_m, resolution_m,
                         what=f"tiled fits need a resolution that divides the pixel size "
                              f"(e.g. {pixel_m / 4:g} or {pixel_m / 5:g} m)")


def record_done(done: dict[str, dict], metas: dict[str, dict | None], res: Any) -> None:
    """Put the finished tiles' metadata into ``metas`` and their ids into ``res.fitted`` or
    ``res.reused``."""
    for tid, meta in done.items():
        metas[tid] = meta
        (res.reused if meta.get("reused") else res.fitted).append(tid)


def run_tiles(task: Any, source: TileSource, todo: list[Tile], keys: dict[str, str], *,
              common: dict[str, Any], cfg: FitConfig, client: Any, address: str | None,
              n_workers: int | None, retries: int, max_reads: int, progress: bool
              ) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Run ``task(source, tile, entry_key=..., read_slots=..., torch_threads=..., **common)``
    for every tile of ``todo`` on the cluster (see :func:`fit_tiled` for ``client``,
    ``address``, ``n_workers``); the finished tiles' metadata by tile id, and the (tile id,
    error) of the tiles that failed after ``retries``, in ``todo``'s order."""
    from distributed import Client, LocalCluster, Semaphore, as_completed

    done: dict[str, dict] = {}
    failures: list[tuple[str, str]] = []
    with ExitStack() as es:
        torch_threads = None
        if client is None and address:
            try:
                client = es.enter_context(Client(address, timeout=CONNECT_TIMEOUT))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {address!r} ({exc}); "
                                  "check the address given to --dask") from None
        elif client is None:
            import torch

            cores = os.cpu_count() or 1
            gpus = torch.cuda.device_count() if cfg.device != "cpu" else 0
            n = max(1, min(n_workers or gpus or cores, len(todo)))  # one worker per GPU
            torch_threads = max(1, cores // n)
            extra = {"resources": {"GPU": 1}} if gpus else {}
            cluster = es.enter_context(LocalCluster(n_workers=n, threads_per_worker=1,
                                                    processes=True, dashboard_address=None,
                                                    **extra))
            client = es.enter_context(Client(cluster))
        gpu = any("GPU" in w.get("resources", {})
                  for w in client.scheduler_info().get("workers", {}).values())
        slots = Semaphore(max_leases=max_reads, name=f"splatsr-reads-{os.getpid()}-{id(done)}",
                          scheduler_rpc=client.scheduler, loop=client.loop)
        by_future = {client.submit(task, source, t, entry_key=keys[t.id], read_slots=slots,
                                   torch_threads=torch_threads, **common, retries=retries,
                                   pure=False, resources={"GPU": 1} if gpu else None): t
                     for t in todo}
        bar = tqdm(total=len(todo), disable=not progress, desc="tiles", unit="tile")
        for fut in as_completed(by_future):
            t = by_future[fut]
            if fut.status == "error":
                exc = fut.exception()
                failures.append((t.id, f"{type(exc).__name__}: {exc}"))
            else:
                done[t.id] = fut.result()
            bar.update(1)
            bar.set_postfix(failed=len(failures))
        bar.close()
    order = {t.id: i for i, t in enumerate(todo)}
    failures.sort(key=lambda f: order[f[0]])
    return done, failures
