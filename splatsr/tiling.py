"""Tiled fits over large areas: plan tiles, fit them on Dask distributed, blend them seamlessly.

One global shift per date holds only over a few km of flat ground, and a full Sentinel-2 tile
does not fit one GPU. So a large stack is cut into overlapping tiles, each fitted on its own
(its own scene *and* its own shifts, together a coarse deformation field), and the tiles are
blended with smooth weights into one mosaic:

* :func:`plan_tiles` -- overlapping windows of ``tile_size`` 10 m pixels, spread evenly so that
  neighbours overlap by at least ``overlap`` pixels.
* :func:`fit_tile` -- the Dask task: read the tile's window of every observation (a bounded
  number of reads at a time), fit it, render it, store it under a key of tile + parameters.
  Idempotent: a finished tile is never fitted again.
* :func:`fit_tiled` -- the driver: submit the missing tiles to a Dask cluster (a LocalCluster
  by default), retry failures, report tiles that still fail, then write the mosaic window by
  window (a tiled GTiff converted to a COG and renamed), a per-tile shift table and a GeoTIFF
  of the shifts per date.

Blending: along each axis a tile's weight rises as ``sin^2`` from 0 at an inner tile edge to 1
at ``overlap`` pixels from it (edges on the stack border keep weight 1). Where two neighbours
overlap by exactly ``overlap`` pixels the weights sum to one (``sin^2 + cos^2``); elsewhere the
mosaic divides by the summed weight. The weight is ~0 at a tile edge, where a fit is least
constrained, so the mosaic has no seams.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window
from tqdm.auto import tqdm

from . import __version__
from ._atomic import atomic_path, write_text_atomic
from .errors import ConfigError, SplatsrError, StackError
from .export import band_order, write_shifts_csv
from .solver import FitConfig, fit_arrays, shifts_path
from .stack import MIN_OBSERVATIONS, Stack, read_stack

STORE_FORMAT = "splatsr-tile/1"  # bump to invalidate every stored tile
MIN_TILE_PX = 8  # smaller tiles hold too few pixels to fit shifts
CONNECT_TIMEOUT = "20s"  # how long to try to reach a --dask scheduler
MOSAIC_BLOCK_PX = 2048  # output pixels per side of one mosaic window (a multiple of 512)
_KEY_IGNORES = ("device", "progress")  # FitConfig fields that do not change a tile's result


class TileError(SplatsrError):
    """One or more tiles failed (after retries); finished tiles are kept for a rerun."""


@dataclass(frozen=True)
class Tile:
    """One window of the stack, in stack pixels, and its place in the tile grid."""

    row: int  # tile-grid row (0 = north)
    col: int  # tile-grid column (0 = west)
    row0: int  # first stack row of the window
    col0: int  # first stack column of the window
    rows: int  # window height (pixels)
    cols: int  # window width (pixels)
    top: bool = False  # the window's north edge is the stack's
    bottom: bool = False  # ... south edge
    left: bool = False  # ... west edge
    right: bool = False  # ... east edge

    @property
    def id(self) -> str:
        """``r001c002`` style identifier."""
        return f"r{self.row:03d}c{self.col:03d}"

    @property
    def window(self) -> Window:
        """The rasterio window of the tile in the stack grid."""
        return Window(self.col0, self.row0, self.cols, self.rows)


def _starts(n: int, size: int, overlap: int) -> list[int]:
    """Evenly spread starts of windows of ``size`` over ``n`` with overlaps >= ``overlap``."""
    if n <= size:
        return [0]
    count = math.ceil((n - size) / (size - overlap)) + 1
    return [round(k * (n - size) / (count - 1)) for k in range(count)]


def plan_tiles(*, height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering a ``height x width`` raster, row-major from the north-west.

    Parameters
    ----------
    height, width
        Raster size in pixels.
    tile_size
        Tile side in pixels (smaller along an axis shorter than this).
    overlap
        Smallest overlap between neighbouring tiles, in pixels; also the width of the blend
        ramp. Between 0 and ``tile_size / 2``.

    Returns
    -------
    list of Tile
    """
    if tile_size < MIN_TILE_PX:
        raise ConfigError(f"tile size must be at least {MIN_TILE_PX} pixels, got {tile_size}")
    if overlap < 0 or 2 * overlap > tile_size:
        raise ConfigError(f"overlap must be between 0 and half the tile size "
                          f"({tile_size // 2} px), got {overlap}")
    rows, cols = _starts(height, tile_size, overlap), _starts(width, tile_size, overlap)
    h, w = min(tile_size, height), min(tile_size, width)
    return [Tile(i, j, r, c, h, w, top=r == 0, bottom=r + h == height, left=c == 0,
                 right=c + w == width)
            for i, r in enumerate(rows) for j, c in enumerate(cols)]


def blend_weights(n: int, *, factor: int, ramp_px: int, start_open: bool,
                  end_open: bool) -> np.ndarray:
    """1-D blend weights (n * factor,) of a tile axis of ``n`` pixels at ``factor`` samples/px.

    The weight is ``sin^2(pi/2 * d / ramp)`` at distance ``d`` from an *open* (inner) edge,
    1 beyond ``ramp_px`` pixels and along closed edges (the stack border).
    """
    u = (np.arange(n * factor) + 0.5) / factor  # sample centres in pixels from the start
    w = np.ones(n * factor)
    if ramp_px > 0:
        for open_, d in ((start_open, u), (end_open, n - u)):
            if open_:
                w *= np.sin(0.5 * np.pi * np.clip(d / ramp_px, 0.0, 1.0)) ** 2
    return w


def seam_step(error: np.ndarray, tiles: Sequence[Tile], *, factor: int,
              border_px: int = 2) -> float:
    """How much the error jumps across inner tile edges, relative to elsewhere (~1: no seams).

    Parameters
    ----------
    error
        (B, H*f, W*f) mosaic minus truth on the output grid.
    tiles
        The tile plan (in stack pixels).
    factor
        Output pixels per stack pixel.
    border_px
        Stack pixels at the image border left out of the reference statistic.

    Returns
    -------
    float
        Mean ``|e[j] - e[j-1]|`` over output-pixel pairs straddling an inner tile edge
        (edges not on the stack border), divided by the median of the same over all
        neighbouring pairs. Compare it with the same number for an untiled fit.
    """
    e = np.asarray(error, np.float64)
    dx = np.abs(np.diff(e, axis=2)).mean(axis=(0, 1))  # step from column j to j + 1
    dy = np.abs(np.diff(e, axis=1)).mean(axis=(0, 2))
    cols = {t.col0 * factor for t in tiles if not t.left} | \
        {(t.col0 + t.cols) * factor for t in tiles if not t.right}
    rows = {t.row0 * factor for t in tiles if not t.top} | \
        {(t.row0 + t.rows) * factor for t in tiles if not t.bottom}
    if not cols and not rows:
        return 1.0
    at_seams = np.mean([dx[c - 1] for c in cols] + [dy[r - 1] for r in rows])
    b = border_px * factor
    return float(at_seams / np.median(np.r_[dx[b:len(dx) - b], dy[b:len(dy) - b]]))


# ----------------------------------------------------------------------------- tile store

def stack_fingerprint(stack: Stack) -> str:
    """Hash of ``stack.json`` and the size and time of every observation file."""
    h = hashlib.sha256((stack.root / "stack.json").read_bytes())
    for obs in stack.observations:
        st = (stack.root / obs.path).stat()
        h.update(f"{obs.path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def tile_key(*, fingerprint: str, tile: Tile, config: FitConfig, resolution_m: float) -> str:
    """Key of a tile result: stack, window, solver settings and output resolution."""
    cfg = {k: v for k, v in asdict(config).items() if k not in _KEY_IGNORES}
    spec = dict(format=STORE_FORMAT, stack=fingerprint, resolution_m=float(resolution_m),
                window=[tile.row0, tile.col0, tile.rows, tile.cols], config=cfg)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _entry(store: Path, tile: Tile, key: str) -> tuple[Path, Path]:
    """(meta JSON, image .npy) paths of a stored tile; the JSON is written last."""
    stem = store / f"{tile.id}-{key}"
    return stem.with_suffix(".json"), stem.with_suffix(".npy")


def load_entry(store: str | os.PathLike, tile: Tile, key: str) -> dict[str, Any] | None:
    """The stored metadata of a finished tile, or None when it is not (completely) stored."""
    meta_path, img_path = _entry(Path(store), tile, key)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("status") == "fitted" and not img_path.is_file():
        return None
    return meta


_LOCAL_READS = threading.BoundedSemaphore(4)  # bounds reads when no Dask semaphore is given


def fit_tile(stack_root: str, tile: Tile, *, config: dict[str, Any], resolution_m: float,
             store: str, entry_key: str, read_slots: Any = None,
             torch_threads: int | None = None) -> dict[str, Any]:
    """Fit one tile and store it (the Dask task). Returns the tile's metadata.

    Parameters
    ----------
    stack_root
        The stack directory (a path every worker can read).
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

    Returns
    -------
    dict
        ``status`` ("fitted" or "empty"), ``shifts_m``, ``residual_rms``, ``seconds``, ...
        Empty tiles (fewer than two observations with valid pixels) store no image.
    """
    key = entry_key
    done = load_entry(store, tile, key)
    if done is not None:
        return dict(done, reused=True)
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    if config.get("device") != "cpu" and torch.cuda.is_available():
        _pick_gpu(torch)
    stack = read_stack(stack_root)
    with read_slots if read_slots is not None else _LOCAL_READS:
        data = _read_window(stack, tile.window)  # (T, B, rows, cols)
    meta: dict[str, Any] = dict(format=STORE_FORMAT, tile=asdict(tile), key=key,
                                ids=[o.id for o in stack.observations])
    n_obs = int(np.isfinite(data).reshape(len(data), -1).any(axis=1).sum())
    meta_path, img_path = _entry(Path(store), tile, key)
    if n_obs < MIN_OBSERVATIONS:
        meta.update(status="empty", reason=f"{n_obs} observation(s) with valid pixels",
                    seconds=0.0)
    else:
        result = fit_arrays(data, pixel_m=stack.pixel_m, config=FitConfig(**config),
                            band_names=stack.bands)
        image = result.render(resolution_m)  # (B, rows * f, cols * f)
        with atomic_path(img_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, image.astype(np.float32))
        meta.update(status="fitted", shifts_m=result.shifts_m.tolist(),
                    residual_rms=[float(v) for v in result.residual_rms],
                    seconds=result.seconds)
    write_text_atomic(meta_path, json.dumps(meta) + "\n")
    return dict(meta, reused=False)


def _pick_gpu(torch: Any) -> None:
    """On a LocalCluster worker named 0, 1, ...: use GPU ``name % count`` (one per worker)."""
    try:
        from distributed import get_worker
        name = get_worker().name
    except (ImportError, ValueError):
        return
    if isinstance(name, int) and torch.cuda.device_count() > 1:
        torch.cuda.set_device(name % torch.cuda.device_count())


def _read_window(stack: Stack, window: Window) -> np.ndarray:
    out = np.empty((len(stack.observations), len(stack.bands), int(window.height),
                    int(window.width)), np.float32)
    for i, obs in enumerate(stack.observations):
        with rasterio.open(stack.root / obs.path) as src:
            arr = src.read(window=window, out_dtype=np.float32, masked=True).filled(np.nan)
        arr[~np.isfinite(arr)] = np.nan
        out[i] = arr
    return out


# ----------------------------------------------------------------------------- driver

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


def default_store(out: str | os.PathLike) -> Path:
    """``sr.tif`` -> ``sr.tiles/`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".tiles")


def fit_tiled(stack: Stack | str | os.PathLike, *, out: str | os.PathLike, tile_size: int,
              overlap: int, config: FitConfig | None = None, resolution_m: float = 2.5,
              client: Any = None, address: str | None = None,
              store: str | os.PathLike | None = None, n_workers: int | None = None,
              retries: int = 2, max_reads: int = 4, progress: bool = False) -> TiledResult:
    """Fit a stack tile by tile on Dask distributed and write one blended COG.

    Parameters
    ----------
    stack
        A stack directory or :class:`Stack`.
    out
        The mosaic COG. Beside it: ``<stem>.shifts.csv`` (per date, mean over tiles),
        ``<stem>.tile_shifts.csv`` (per tile and date) and ``<stem>.shifts.tif``.
    tile_size, overlap
        Tile side and least overlap in 10 m pixels (see :func:`plan_tiles`).
    config
        Solver settings used for every tile.
    resolution_m
        Output pixel size; must divide the stack's pixel size.
    client
        A ``distributed.Client`` to use (not closed).
    address
        Scheduler address of an existing cluster (when no ``client``); default: a
        LocalCluster on this machine, closed at the end.
    store
        Tile store folder (default ``<stem>.tiles`` beside ``out``); finished tiles found
        there are reused. Workers and client must both see it.
    n_workers
        Workers of the default LocalCluster (default: one per GPU when torch sees CUDA and
        the device is not "cpu", else one per CPU core; at most the tiles to fit).
    retries
        Extra attempts of a failing tile.
    max_reads
        Tiles reading their window at the same time, across the cluster.
    progress
        Progress bar over tiles on stderr.

    Raises
    ------
    TileError
        If a tile still fails after its retries (listed with its error); the other tiles stay
        stored, so rerunning the same call fits only the missing ones.
    """
    t0 = time.perf_counter()
    if not isinstance(stack, Stack):
        stack = read_stack(stack)
    cfg = config or FitConfig()
    cfg.validate()
    factor = _factor(stack.pixel_m, resolution_m)
    tiles = plan_tiles(height=stack.height, width=stack.width, tile_size=tile_size,
                       overlap=overlap)
    store = Path(store) if store is not None else default_store(out)
    store.mkdir(parents=True, exist_ok=True)
    fp = stack_fingerprint(stack)
    keys = {t.id: tile_key(fingerprint=fp, tile=t, config=cfg, resolution_m=resolution_m)
            for t in tiles}
    metas = {t.id: load_entry(store, t, keys[t.id]) for t in tiles}
    todo = [t for t in tiles if metas[t.id] is None]
    res = TiledResult(path=Path(out), tiles=tiles, store=store,
                      reused=[t.id for t in tiles if metas[t.id] is not None])
    if todo:
        failures = _run_tiles(stack, todo, keys, metas, res, cfg=cfg, resolution_m=resolution_m,
                              store=store, client=client, address=address,
                              n_workers=n_workers, retries=retries, max_reads=max_reads,
                              progress=progress)
        if failures:
            listed = "; ".join(f"{tid}: {msg}" for tid, msg in failures[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            raise TileError(f"{len(failures)} of {len(tiles)} tiles failed after {retries} "
                            f"retries: {listed}{more}; the {len(tiles) - len(failures)} "
                            f"finished tiles are kept in {store}, rerun to fit only the rest")
    res.empty = [t.id for t in tiles if metas[t.id]["status"] == "empty"]
    if len(res.empty) == len(tiles):
        raise StackError(f"{stack.root}: no tile has valid pixels in at least "
                         f"{MIN_OBSERVATIONS} observations; nothing to mosaic")
    write_mosaic(stack, tiles, keys, metas, out=out, store=store, factor=factor,
                 overlap=overlap, config=cfg)
    res.shifts_m = _write_shifts(stack, tiles, metas, out=out, res=res)
    res.seconds = time.perf_counter() - t0
    return res


def _factor(pixel_m: float, resolution_m: float) -> int:
    f = pixel_m / resolution_m if resolution_m > 0 else 0.0
    if f < 1 - 1e-9 or abs(f - round(f)) > 1e-6:
        raise ConfigError(f"tiled fits need a resolution that divides the pixel size "
                          f"{pixel_m:g} m (e.g. {pixel_m / 4:g} or {pixel_m / 5:g} m), "
                          f"got {resolution_m:g} m")
    return round(f)


def _run_tiles(stack: Stack, todo: list[Tile], keys: dict[str, str],
               metas: dict[str, dict | None], res: TiledResult, *, cfg: FitConfig,
               resolution_m: float, store: Path, client: Any, address: str | None,
               n_workers: int | None, retries: int, max_reads: int,
               progress: bool) -> list[tuple[str, str]]:
    """Fit ``todo`` on the cluster; fill ``metas``/``res``; return (tile id, error) failures."""
    from distributed import Client, LocalCluster, Semaphore, as_completed

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
        slots = Semaphore(max_leases=max_reads, name=f"splatsr-reads-{os.getpid()}-{id(res)}",
                          scheduler_rpc=client.scheduler, loop=client.loop)
        tile_cfg = dict(asdict(cfg), progress=False)  # the progress bar is over tiles
        by_future = {}
        for t in todo:
            fut = client.submit(fit_tile, str(stack.root.resolve()), t, config=tile_cfg,
                                resolution_m=resolution_m, store=str(store.resolve()),
                                entry_key=keys[t.id], read_slots=slots,
                                torch_threads=torch_threads, retries=retries, pure=False,
                                resources={"GPU": 1} if gpu else None)
            by_future[fut] = t
        bar = tqdm(total=len(todo), disable=not progress, desc="tiles", unit="tile")
        for fut in as_completed(by_future):
            t = by_future[fut]
            if fut.status == "error":
                exc = fut.exception()
                failures.append((t.id, f"{type(exc).__name__}: {exc}"))
            else:
                meta = fut.result()
                metas[t.id] = meta
                (res.reused if meta.get("reused") else res.fitted).append(t.id)
            bar.update(1)
            bar.set_postfix(failed=len(failures))
        bar.close()
    order = {t.id: i for i, t in enumerate(todo)}
    failures.sort(key=lambda f: order[f[0]])
    return failures


# ----------------------------------------------------------------------------- outputs

def write_mosaic(stack: Stack, tiles: Sequence[Tile], keys: dict[str, str],
                 metas: dict[str, dict], *, out: str | os.PathLike, store: Path, factor: int,
                 overlap: int, config: FitConfig) -> Path:
    """Blend the stored tiles into a COG at ``out``, one window at a time.

    The mosaic is written window by window (``MOSAIC_BLOCK_PX`` output pixels a side) into a
    tiled, ZSTD-compressed GTiff beside ``out``; GDAL's COG driver then copies it (adding
    overviews) to a second temporary file, which is renamed onto ``out``. Tile images are
    memory-mapped, so peak memory is about two windows (``2 x B x 2048^2 x 8`` bytes: 256 MB
    for 4 bands) plus GDAL's block cache during the COG copy.
    """
    out = Path(out)
    B, f = len(stack.bands), factor
    H, W = stack.height * f, stack.width * f
    res_m = stack.pixel_m / f
    transform = Affine(res_m, 0, stack.transform.c, 0, -res_m, stack.transform.f)
    order = band_order(list(stack.bands))
    names = [stack.bands[i] for i in order]
    tags = dict(software=f"splatsr {__version__}", psf_sigma_m=config.psf_sigma_m,
                splat_spacing_m=config.splat_spacing_m, resolution_m=res_m,
                observations=[o.id for o in stack.observations], config=asdict(config),
                units="reflectance (0-1)",
                tiling=dict(tiles=len(tiles), tile_size=max(t.rows for t in tiles),
                            overlap=overlap))
    tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}
    live = [t for t in tiles if metas[t.id]["status"] == "fitted"]
    cog_block = next(b for b in (256, 128, 64, 16) if min(H, W) >= b or b == 16)
    weights = {t.id: (blend_weights(t.rows, factor=f, ramp_px=overlap, start_open=not t.top,
                                    end_open=not t.bottom),
                      blend_weights(t.cols, factor=f, ramp_px=overlap, start_open=not t.left,
                                    end_open=not t.right)) for t in live}
    profile = dict(driver="GTiff", width=W, height=H, count=B, dtype="float32",
                   crs=stack.crs, transform=transform, nodata=float("nan"), tiled=True,
                   blockxsize=512, blockysize=512, compress="ZSTD", zstd_level=1,
                   predictor=3, BIGTIFF="IF_SAFER", num_threads="ALL_CPUS")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".mosaic.tif",
                                    dir=out.parent)
    os.close(fd)
    gtiff = Path(tmp_name)
    try:
        with rasterio.open(gtiff, "w", **profile) as dst:
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**tags)
            for r0 in range(0, H, MOSAIC_BLOCK_PX):
                for c0 in range(0, W, MOSAIC_BLOCK_PX):
                    h, w = min(MOSAIC_BLOCK_PX, H - r0), min(MOSAIC_BLOCK_PX, W - c0)
                    acc = np.zeros((B, h, w))
                    wsum = np.zeros((h, w))
                    for t in live:
                        _accumulate(acc, wsum, t, weights[t.id], store, keys[t.id], f, r0,
                                    c0, order)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        block = np.where(wsum > 0, acc / wsum, np.nan).astype(np.float32)
                    dst.write(block, window=Window(c0, r0, w, h))
        with atomic_path(out) as tmp:
            rasterio.shutil.copy(gtiff, tmp, driver="COG", COMPRESS="DEFLATE",
                                 PREDICTOR="FLOATING_POINT", BLOCKSIZE=cog_block,
                                 OVERVIEW_RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER",
                                 NUM_THREADS="ALL_CPUS")
    finally:
        gtiff.unlink(missing_ok=True)
    return out


def _accumulate(acc: np.ndarray, wsum: np.ndarray, t: Tile, w: tuple[np.ndarray, np.ndarray],
                store: Path, key: str, f: int, r0: int, c0: int, order: list[int]) -> None:
    """Add tile ``t``'s weighted image to the window at (r0, c0) of the output grid."""
    h, w_ = wsum.shape
    tr0, tc0 = t.row0 * f, t.col0 * f
    a0, a1 = max(r0, tr0), min(r0 + h, tr0 + t.rows * f)
    b0, b1 = max(c0, tc0), min(c0 + w_, tc0 + t.cols * f)
    if a0 >= a1 or b0 >= b1:
        return
    img = np.load(_entry(store, t, key)[1], mmap_mode="r")  # (B, rows * f, cols * f)
    part = np.asarray(img[:, a0 - tr0:a1 - tr0, b0 - tc0:b1 - tc0], np.float64)[order]
    ww = np.outer(w[0][a0 - tr0:a1 - tr0], w[1][b0 - tc0:b1 - tc0])
    ok = np.isfinite(part).all(axis=0)
    ww = np.where(ok, ww, 0.0)
    acc[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] += np.where(ok, part, 0.0) * ww
    wsum[a0 - r0:a1 - r0, b0 - c0:b1 - c0] += ww


def _write_shifts(stack: Stack, tiles: Sequence[Tile], metas: dict[str, dict], *,
                  out: str | os.PathLike, res: TiledResult) -> np.ndarray:
    """Per-date mean shifts CSV, per-tile shift table CSV and a shifts-per-date GeoTIFF."""
    out = Path(out)
    T = len(stack.observations)
    ids = [o.id for o in stack.observations]
    dts = [o.datetime for o in stack.observations]
    shifts = np.full((len(tiles), T, 2), np.nan)
    rms = np.full((len(tiles), T), np.nan)
    for i, t in enumerate(tiles):
        m = metas[t.id]
        if m["status"] == "fitted":
            shifts[i] = np.asarray(m["shifts_m"])
            rms[i] = np.asarray(m["residual_rms"])
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(shifts, axis=0)
    write_shifts_csv(shifts_path(out), ids=ids, datetimes=dts, shifts_m=mean,
                     extra={"tiles": [int(np.isfinite(shifts[:, k, 0]).sum())
                                      for k in range(T)]})
    tr = stack.transform
    lines = ["tile,row0,col0,rows,cols,x_centre,y_centre,status,id,datetime,dx_m,dy_m,"
             "residual_rms"]
    for i, t in enumerate(tiles):
        xc, yc = tr @ (t.col0 + t.cols / 2, t.row0 + t.rows / 2)
        for k in range(T):
            lines.append(f"{t.id},{t.row0},{t.col0},{t.rows},{t.cols},{xc:.3f},{yc:.3f},"
                         f"{metas[t.id]['status']},{ids[k]},{dts[k]},{shifts[i, k, 0]:.4f},"
                         f"{shifts[i, k, 1]:.4f},{rms[i, k]:.6g}")
    res.tile_shifts_csv = out.with_name(out.stem + ".tile_shifts.csv")
    write_text_atomic(res.tile_shifts_csv, "\n".join(lines) + "\n")

    # one cell per tile; cells split the stack extent evenly (a cell's centre lies within
    # half a tile step of its tile's centre; exact centres are in the CSV)
    ny, nx = max(t.row for t in tiles) + 1, max(t.col for t in tiles) + 1
    grid = shifts.reshape(ny, nx, T, 2).transpose(2, 3, 0, 1).reshape(2 * T, ny, nx)
    cell = Affine(stack.width * tr.a / nx, 0, tr.c, 0, stack.height * tr.e / ny, tr.f)
    res.shifts_tif = out.with_name(out.stem + ".shifts.tif")
    with atomic_path(res.shifts_tif) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=nx, height=ny, count=2 * T,
                           dtype="float32", crs=stack.crs, transform=cell,
                           nodata=float("nan")) as dst:
            dst.write(grid.astype(np.float32))
            for k in range(T):
                dst.set_band_description(2 * k + 1, f"dx_m {ids[k]} {dts[k]}")
                dst.set_band_description(2 * k + 2, f"dy_m {ids[k]} {dts[k]}")
            dst.update_tags(units="metres; content displacement, east and north positive",
                            layout="bands: dx_m, dy_m per observation in stack order")
    return shifts
