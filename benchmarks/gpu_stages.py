"""The measurements behind ``benchmarks/gpu.py``: one function per stage, and the worker.

``gpu.py`` starts a worker process (``python benchmarks/gpu.py --worker STAGES``) that runs the
stages in order and prints, as JSON lines, a ``start`` event (with the stage's time limit),
the rows as it measures them, and an ``end`` event. The parent kills the worker when a stage
overruns its limit (keeping the rows printed so far) and starts a fresh one for the stages
left, so a hang or a crash costs one stage, not the run.

Sizes: :data:`SIZES` ``"gpu"`` (the figures of the issue) and ``"smoke"`` (the same code at
tiny sizes on the CPU, to keep the script working where there is no GPU).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, TEXTURE_384, machine

B = 4  # bands of every simulated stack
PIXEL_M = 10.0
MIB = 2 ** 20

# (size px, dates, target seconds or None) per fit stage and the fit settings (smoke: fewer
# steps; the step count, not the size, is what a tiny fit costs); render (size px, dates)
# cases; copy size (MiB) of the bandwidth measurement; the series and max-stack shapes
SIZES: dict[str, dict] = {
    "gpu": dict(fit_small=(256, 32, 5.0), fit_large=(1000, 16, 60.0), fit_settings={},
                render=[(256, 32), (1000, 16)], copy_mib=2048, series=(256, 16),
                stack_dates=16, stack_step_px=256, stack_budget_px=None,
                compile=(256, 32), repeats=5),
    "smoke": dict(fit_small=(24, 6, None), fit_large=(32, 6, None),
                  fit_settings=dict(coarse_levels=0, adam_steps=10, lbfgs_iters=10),
                  render=[(24, 4), (32, 6)], copy_mib=16, series=(24, 6),
                  stack_dates=6, stack_step_px=16, stack_budget_px=48,
                  compile=None, repeats=2),
}

# seconds per stage: (GPU run, smoke run), in the order they run; the total budget leaves
# the start-up its share of the 6 minutes
BUDGET_S = dict(machine=(30, 20), tests=(90, 30), render=(30, 15), fit_small=(40, 15),
                fit_large=(120, 15), max_stack=(75, 8), series=(45, 15), compile=(60, 10))
TOTAL_S = (320, 80)
MIN_STAGE_S = 5.0  # a stage with less time left than this is skipped


def emit(row: dict) -> None:
    """Print one result row as a JSON line (the parent reads them, even from a killed stage)."""
    print(json.dumps(row, default=float), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def mib(n: float | None) -> float | None:
    return None if n is None else n / MIB


def simulated(size: int, n_obs: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truth (B, 4 size, 4 size) at 2.5 m, real S2 texture repeated with a period of up to
    384 px (as ``benchmarks/perf.py`` tiles it), and its simulated 10 m stack (T, B, size,
    size) with noise 0.003.

    The stack is simulated once over three periods; the middle period is exact for the
    infinite periodic truth (the PSF and shifts reach ~15 px of 2.5 m, far less than a
    period) and is repeated to ``size``: a 1000 px stack costs what a 288 px one does
    (simulating it directly takes about a minute of CPU).
    """
    import splatsr

    crops = np.load(TEXTURE_384)["crops"].astype(np.float32) / 1e4  # (4, 384, 384)
    hr = min(crops.shape[1], 4 * size)  # period at 2.5 m
    p = hr // 4  # period at 10 m
    period = crops[:B, :hr, :hr]
    data, _ = splatsr.simulate(np.tile(period, (1, 3, 3)), truth_pixel_m=2.5, n_obs=n_obs,
                               seed=seed, noise_sigma=0.0)
    reps = -(-size // p)
    data = np.tile(data[:, :, p: 2 * p, p: 2 * p], (1, 1, reps, reps))[:, :, :size, :size]
    rng = np.random.default_rng(seed)
    data += rng.standard_normal(data.shape, dtype=np.float32) * np.float32(0.003)
    return np.tile(period, (1, reps, reps))[:, : 4 * size, : 4 * size], data


def fit_plan_bytes(cfg, *, n_obs: int, size: int, change_cell_m: float | None) -> int:
    """:func:`splatsr.core.memory.plan_fit_memory` of a square (T, B, size, size) fit."""
    from splatsr.core.memory import plan_fit_memory

    return plan_fit_memory(n_obs=n_obs, n_bands=B, height=size, width=size, pixel_m=PIXEL_M,
                           spacing_m=cfg.splat_spacing_m, psf_sigma_m=cfg.widest_psf_m(),
                           lbfgs_history=cfg.lbfgs_history, change_cell_m=change_cell_m).total


def warm_up(device: torch.device) -> float:
    """A tiny fit, so that CUDA's start-up (context, kernels, cuBLAS) is not timed later."""
    from splatsr import FitConfig, fit_arrays

    t0 = time.perf_counter()
    _, data = simulated(16, 4, seed=1)
    fit_arrays(data, pixel_m=PIXEL_M, config=FitConfig(device=device.type, adam_steps=2,
                                                       lbfgs_iters=2, coarse_levels=0))
    sync(device)
    return time.perf_counter() - t0


def stage_machine(sz: dict, device: torch.device, deadline: float) -> None:
    """The record: machine, date, commit, and the card's name and memory."""
    info: dict = dict(machine())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(gpu=props.name, gpu_total_mib=total / MIB, gpu_free_mib=free / MIB)
    emit(dict(kind="machine", **info))


def stage_tests(sz: dict, device: torch.device, deadline: float) -> None:
    """The ``gpu``-marked tests (``pytest -m gpu`` on the files that have any), in a
    subprocess: one row per test, then the counts."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider",
           *files]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           timeout=max(1.0, deadline - time.perf_counter()))
        out, rc = r.stdout, r.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        rc = None
    for line in out.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|SKIPPED)\s+(?:\[\d+\]\s+)?(\S+)(.*)", line)
        if m:
            emit(dict(kind="test", outcome=m[1].lower(), test=m[2].rstrip(":"),
                      note=m[3].strip(" :-")[:120]))
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", out)}
    emit(dict(kind="tests", rc=rc, passed=counts.get("passed", 0),
              failed=counts.get("failed", 0), skipped=counts.get("skipped", 0),
              errors=counts.get("error", 0) + counts.get("errors", 0)))
    if rc != 0:
        raise RuntimeError("pytest stopped at the stage's limit" if rc is None else
                           f"pytest exit {rc}: {out.strip().splitlines()[-1] if out else ''}")


def stage_fit(sz: dict, device: torch.device, deadline: float, *, which: str) -> None:
    """One full default fit (``FitConfig()``; smoke: fewer steps) of a simulated stack, then
    its 2.5 m render."""
    from splatsr import FitConfig, fit_arrays
    from splatsr.core.memory import peak_allocated, reset_peak
    size, n_obs, target_s = sz[which]
    warm_s = warm_up(device) if device.type == "cuda" else None
    truth, data = simulated(size, n_obs)
    cfg = FitConfig(device=device.type, **sz["fit_settings"])
    resolved = cfg.with_change_cell(data, pixel_m=PIXEL_M)
    reset_peak(device)
    t0 = time.perf_counter()
    res = fit_arrays(data, pixel_m=PIXEL_M, config=cfg)
    sync(device)
    fit_s = time.perf_counter() - t0
    peak = peak_allocated(device)
    settings = ", ".join(f"{k} {v}" for k, v in sz["fit_settings"].items()) or "default"
    emit(dict(kind="fit", case=which, settings=settings, size=size, T=n_obs, B=B,
              fit_s=fit_s, solve_s=res.history[-1]["time_s"], steps=len(res.history),
              target_s=target_s, met=None if target_s is None else fit_s <= target_s,
              warmup_s=warm_s, peak_mib=mib(peak),
              plan_mib=mib(fit_plan_bytes(cfg, n_obs=n_obs, size=size,
                                          change_cell_m=resolved.change_cell())),
              route_plan_mib=mib(fit_plan_bytes(cfg, n_obs=n_obs, size=size,
                                                change_cell_m=cfg.finest_change_cell(
                                                    pixel_m=PIXEL_M)))))
    t0 = time.perf_counter()
    img = res.render(2.5)  # (B, 4 size, 4 size)
    render_s = time.perf_counter() - t0
    emit(dict(kind="fit_render", case=which, render_s=render_s,
              psnr_db=psnr_db(img, truth, border_px=8)))


def psnr_db(image: np.ndarray, truth: np.ndarray, *, border_px: int) -> float:
    """PSNR of (B, H, W) against the truth, each band's range as the peak, ``border_px`` left
    out at every edge, averaged over the bands (a sanity check of the fit, cheap at any
    size; ``splatsr.evaluate.metrics.cpsnr`` takes ~30 s at 4000 x 4000 px)."""
    e = np.s_[border_px:-border_px, border_px:-border_px]
    out = []
    for img, ref in zip(image, truth):  # (H, W) each: a band at a time, float32
        diff = img[e] - ref[e]
        mse = np.mean(diff * diff, dtype=np.float64)
        out.append(10 * math.log10(float(ref[e].max() - ref[e].min()) ** 2 / mse))
    return float(np.mean(out))


def render_inputs(size: int, n_obs: int, device: torch.device) -> dict:
    """Weights, shifts, target and axes of a default-spacing render of (T, B, size, size)."""
    from splatsr.core.model import SplatGrid

    g = SplatGrid.for_raster(height=size, width=size, pixel_m=PIXEL_M, spacing_m=2.0,
                             psf_sigma_m=4.0)
    ay, ax = g.axes(pixel_m=PIXEL_M, n_y=size, n_x=size)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(B, g.ny, g.nx, generator=gen).to(device).requires_grad_()
    s = (torch.randn(n_obs, 2, generator=gen) * 1.5).to(device).requires_grad_()
    y = torch.randn(n_obs, B, size, size, generator=gen).to(device)
    return dict(w=w, s=s, y=y, ay=ay, ax=ax, sigma=math.hypot(g.sigma_m, 4.0),
                splats=B * g.ny * g.nx)


def time_render(fn: Callable, inp: dict, device: torch.device, repeats: int
                ) -> tuple[float, float]:
    """(first call s, best of ``repeats`` s) of forward + backward of ``sum((fn - y)^2)``."""
    w, s = inp["w"], inp["s"]
    times = []
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        p = fn(w, ax_y=inp["ay"], ax_x=inp["ax"], sigma_m=inp["sigma"], dy_m=-s[:, 1],
               dx_m=s[:, 0], delta_max_m=30.0)
        ((p - inp["y"]) ** 2).sum().backward()
        sync(device)
        times.append(time.perf_counter() - t0)
        w.grad = s.grad = None
    return times[0], min(times[1:])


def stage_render(sz: dict, device: torch.device, deadline: float) -> None:
    """Copy bandwidth (a device-to-device clone), then render forward + backward against
    the bound: the compulsory bytes (read the weights and write their gradient, write the
    images and read their gradient: ``2 * 4 * (B Ky Kx + T B H W)``, as in perf.py) over
    that bandwidth."""
    from perf import copy_bandwidth
    from splatsr.core.render import render

    bw = copy_bandwidth(device, sz["copy_mib"])
    emit(dict(kind="bandwidth", copy_mib=sz["copy_mib"], GBps=bw / 1e9))
    for size, n_obs in sz["render"]:
        inp = render_inputs(size, n_obs, device)
        _, best = time_render(render, inp, device, sz["repeats"])
        nbytes = 2 * 4 * (inp["splats"] + n_obs * B * size * size)
        emit(dict(kind="render", size=size, T=n_obs, B=B, fwd_bwd_s=best, bytes=nbytes,
                  bound_s=nbytes / bw, ratio=best / (nbytes / bw)))
        del inp
        if time.perf_counter() > deadline:
            break


def stage_compile(sz: dict, device: torch.device, deadline: float) -> None:
    """``torch.compile`` of the renderer on and off (forward + backward, one size)."""
    from splatsr.core.render import render

    if sz["compile"] is None:
        emit(dict(kind="compile", status="not run at smoke sizes (compiling takes minutes "
                                         "on a CPU)"))
        return
    size, n_obs = sz["compile"]
    inp = render_inputs(size, n_obs, device)
    _, eager = time_render(render, inp, device, sz["repeats"])
    row = dict(kind="compile", size=size, T=n_obs, eager_s=eager)
    emit(dict(row, status="compiling (eager measured)"))  # kept if compiling overruns
    compiled = torch.compile(render)
    try:
        first, best = time_render(compiled, inp, device, sz["repeats"])
        with torch.no_grad():  # same values? (dynamo warns about the cached tap geometry)
            a, b = (f(inp["w"], ax_y=inp["ay"], ax_x=inp["ax"], sigma_m=inp["sigma"],
                      dy_m=-inp["s"][:, 1], dx_m=inp["s"][:, 0], delta_max_m=30.0)
                    for f in (render, compiled))
        rel = float((b - a).abs().max() / a.abs().max())
    except Exception as e:  # noqa: BLE001 -- any compiler failure is the finding
        emit(dict(row, status=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"))
        return
    emit(dict(row, compiled_s=best, first_call_s=first, speedup=eager / best,
              max_rel_diff=rel, status="ok"))


def short_fit_config(device: torch.device):
    """A fit that reaches the finest level's full L-BFGS history in a few seconds: the peak
    of a default fit without its CPU-side extras (anchor, band offsets, change layer)."""
    from splatsr import FitConfig

    return FitConfig(device=device.type, coarse_levels=0, adam_steps=2, lbfgs_iters=24,
                     median_anchor=False, band_offsets=False, change_cell_m=0.0)


def textured(size: int, n_obs: int) -> np.ndarray:
    """(T, B, size, size) 10 m stack: real texture tiled, plus noise (cheap at any size)."""
    crops = np.load(TEXTURE_384)["crops"].astype(np.float32)[:B, ::4, ::4] / 1e4
    reps = -(-size // crops.shape[1])
    base = np.tile(crops, (1, reps, reps))[:, :size, :size]
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((n_obs, B, 64, 64), dtype=np.float32) * 0.003
    reps = -(-size // 64)
    return base[None] + np.tile(noise, (1, 1, reps, reps))[:, :, :size, :size]


def stage_max_stack(sz: dict, device: torch.device, deadline: float) -> None:
    """The largest square stack (``stack_dates`` dates, 4 bands) the memory plan says fits
    the card's budget, a short fit at that size, then one at the size its measured peak
    extrapolates to the card's free memory (area-proportional; on the CPU one step larger):
    what really fits."""
    from splatsr import fit_arrays
    from splatsr.core.memory import device_budget_bytes, largest_tile, peak_allocated, reset_peak

    n_obs, step = sz["stack_dates"], sz["stack_step_px"]
    cfg = short_fit_config(device)
    if sz["stack_budget_px"]:  # smoke: a budget as small as the plan of a tiny stack
        budget = fit_plan_bytes(cfg, n_obs=n_obs, size=sz["stack_budget_px"], change_cell_m=None)
    else:
        budget = device_budget_bytes(device)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    side = largest_tile(n_obs=n_obs, n_bands=B, pixel_m=PIXEL_M, spacing_m=cfg.splat_spacing_m,
                        psf_sigma_m=cfg.psf_sigma_m, overlap=0, budget_bytes=budget,
                        lbfgs_history=cfg.lbfgs_history)
    emit(dict(kind="plan", T=n_obs, B=B, budget_mib=mib(budget), free_mib=mib(free),
              side=side))
    size = side or step
    for _ in range(3):
        plan = fit_plan_bytes(cfg, n_obs=n_obs, size=size, change_cell_m=None)
        data = textured(size, n_obs)
        reset_peak(device)
        t0 = time.perf_counter()
        try:
            fit_arrays(data, pixel_m=PIXEL_M, config=cfg)
            ran, note = True, ""
        except torch.cuda.OutOfMemoryError as e:
            ran, note = False, str(e).splitlines()[0][:160]
        took = time.perf_counter() - t0
        peak = peak_allocated(device)
        emit(dict(kind="try", size=size, T=n_obs, B=B, plan_mib=mib(plan),
                  plan_says=plan <= budget, ran=ran, peak_mib=mib(peak), seconds=took,
                  note=note))
        del data
        if device.type == "cuda":
            torch.cuda.empty_cache()
        nxt = size + step
        if ran and peak and free:
            nxt = max(nxt, step * int(size * math.sqrt(free / peak) / step))
        # a larger stack costs more than this one: try it only if it should end in time
        if not ran or time.perf_counter() + 2.5 * took * (nxt / size) ** 2 > deadline:
            break
        size = nxt


def stage_series(sz: dict, device: torch.device, deadline: float) -> None:
    """The every-date series product (``splatsr.fit_series``) against one default fit of
    the same stack, where this version has it."""
    import splatsr
    from affine import Affine

    if not hasattr(splatsr, "fit_series"):
        emit(dict(kind="series", status="not available (no splatsr.fit_series in this "
                                        "version)"))
        return
    size, n_obs = sz["series"]
    _, data = simulated(size, n_obs)
    day0 = dt.date(2025, 4, 1)
    with tempfile.TemporaryDirectory() as tmp:
        stack = splatsr.write_stack(
            Path(tmp) / "stack", data, crs="EPSG:32633",
            transform=Affine(PIXEL_M, 0, 5e5, 0, -PIXEL_M, 5e6),
            bands=["B02", "B03", "B04", "B08"], ids=[f"d{i:02d}" for i in range(n_obs)],
            datetimes=[str(day0 + dt.timedelta(days=5 * i)) for i in range(n_obs)])
        t0 = time.perf_counter()
        splatsr.fit(stack, device=device.type).render(2.5)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        splatsr.fit_series(stack, device=device.type).save(Path(tmp) / "series",
                                                           resolution_m=2.5)
        series_s = time.perf_counter() - t0
        files = sum(1 for p in (Path(tmp) / "series").rglob("*") if p.is_file())
    emit(dict(kind="series", status="ok", size=size, T=n_obs, B=B, fit_s=fit_s,
              series_s=series_s, files=files))


STAGES = dict(machine=stage_machine, tests=stage_tests, render=stage_render,
              fit_small=lambda sz, d, t: stage_fit(sz, d, t, which="fit_small"),
              fit_large=lambda sz, d, t: stage_fit(sz, d, t, which="fit_large"),
              max_stack=stage_max_stack, series=stage_series, compile=stage_compile)


def run_worker(names: list[str], *, smoke: bool, budget_s: float, t0_epoch: float) -> int:
    """Run ``names`` in order in this process (``gpu.py --worker``): events and rows go to
    stdout as JSON lines, tracebacks to stderr. ``t0_epoch`` is when the run started."""
    k = 1 if smoke else 0
    device = torch.device("cpu" if smoke else "cuda")
    for name in names:
        left = budget_s - (time.time() - t0_epoch)
        if left < MIN_STAGE_S:
            emit(dict(event="skip", stage=name, status="skipped: the run's time budget is spent"))
            continue
        limit = min(BUDGET_S[name][k], left)
        emit(dict(event="start", stage=name, limit_s=limit))
        t0, status = time.perf_counter(), "ok"
        try:
            STAGES[name](SIZES["smoke" if smoke else "gpu"], device, t0 + limit)
        except Exception as e:  # noqa: BLE001 -- a failed stage is a finding; go on
            traceback.print_exc()
            status = f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        emit(dict(event="end", stage=name, status=status, seconds=time.perf_counter() - t0))
    return 0
