"""The per-level steps of a fit: the coarse-to-fine schedule, Adam warm-up, then L-BFGS.

:func:`level_schedule` lists the levels (spacing and budgets); :func:`fit_level` runs one on
an :class:`~splatsr.core.objective.Objective`; :class:`FitLog` records every loss evaluation
and drives the progress bar.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm  # not tqdm.auto: its import warns in notebooks without ipywidgets

from splatsr.core.config import FitConfig
from splatsr.core.model import SplatGrid, resample_weights
from splatsr.core.objective import DIVERGED, Objective
from splatsr.core.robust import bright_dates
from splatsr.errors import ConfigError

# Loss evaluations per L-BFGS iteration, on average (torch's default budget). In noise units
# the unit step is nearly always accepted at once; the strong-Wolfe search spends the rest
# where it is not. L-BFGS stops early if the budget runs out or the line search finds no
# decrease (at the finest level typically after 5-30 iterations: converged to float32).
LBFGS_EVALS_PER_ITER = 1.25


@dataclass(frozen=True)
class Level:
    """One level of the coarse-to-fine schedule."""

    index: int  # 0 = the coarsest
    grid: SplatGrid  # its splat lattice
    adam_steps: int
    lbfgs_iters: int
    last: bool  # the finest level


def level_schedule(cfg: FitConfig, *, height: int, width: int, pixel_m: float) -> list[Level]:
    """The levels, coarsest first: each coarse level doubles the spacing, half the budget."""
    n = cfg.coarse_levels
    levels = []
    for k, j in enumerate(range(n, -1, -1)):
        spacing = cfg.splat_spacing_m * 2 ** j
        sigma = None if cfg.splat_sigma_m is None else \
            cfg.splat_sigma_m * spacing / cfg.splat_spacing_m
        grid = SplatGrid.for_raster(height=height, width=width, pixel_m=pixel_m,
                                    spacing_m=spacing, sigma_m=sigma,
                                    psf_sigma_m=cfg.widest_psf_m())
        adam, lbfgs = (cfg.adam_steps, cfg.lbfgs_iters) if j == 0 else \
            (cfg.adam_steps // 2, cfg.lbfgs_iters // 2)
        levels.append(Level(k, grid, adam, lbfgs, last=j == 0))
    return levels


def start_weights(obj: Objective, level: Level, y: np.ndarray, valid: np.ndarray
                  ) -> torch.Tensor:
    """(B, Ky, Kx) starting weights of ``level``: the median composite on the first level,
    the previous level's scene resampled on the others."""
    if obj.w is None:
        w0 = initial_weights(y, valid, level.grid)
        return torch.from_numpy(w0).to(obj.y.device, torch.float32)
    with torch.no_grad():
        return resample_weights(obj.w.detach(), src=obj.grid, dst=level.grid)


def initial_weights(y: np.ndarray, valid: np.ndarray, grid: SplatGrid) -> np.ndarray:
    """(B, Ky, Kx): each splat takes the median of the observations under its centre, bright
    outlier dates (:func:`~splatsr.core.robust.bright_dates`) left out."""
    data = np.where(valid, y, np.nan)  # (T, B, H, W)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels become 0 below
        comp = np.nanmedian(data, axis=0)  # (B, H, W)
        bright = bright_dates(data, comp)
        if bright.any():
            comp = np.nanmedian(data[~bright], axis=0)
    comp = np.nan_to_num(comp, nan=0.0)
    rows = np.clip(np.floor(grid.centres_m(grid.ny).numpy() / grid.pixel_m).astype(int), 0,
                   grid.height - 1)
    cols = np.clip(np.floor(grid.centres_m(grid.nx).numpy() / grid.pixel_m).astype(int), 0,
                   grid.width - 1)
    return comp[:, rows][:, :, cols]


@dataclass
class FitLog:
    """History rows (one per loss evaluation) and the progress bar of a fit.

    On a GPU the losses are kept as tensors and read in one go when :attr:`history` is
    asked for, so recording a step does not wait for the device. On the CPU they are read
    at once: there is nothing to wait for, and a small tensor kept per step between the
    step's large temporaries fragments the heap (the resident memory grew by ~4 MB per
    Adam step on the sample stack: 2.9 GB after 600 steps, 0.48 GB with floats).
    """

    total: int  # optimiser steps in the whole fit (bar length)
    progress: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.bar = tqdm(total=self.total, disable=not self.progress, desc="fit", unit="it",
                        leave=False)

    def record(self, level: Level, stage: str, step: int, loss: torch.Tensor,
               data_term: torch.Tensor) -> None:
        """Append one row: level, spacing, stage, step, loss, data term, elapsed time."""
        if loss.device.type == "cpu":
            loss, data_term = float(loss), float(data_term)
        self.rows.append(dict(level=level.index, spacing_m=level.grid.spacing_m,
                              stage=stage, step=step, loss=loss, data_loss=data_term,
                              time_s=time.perf_counter() - self.t0))

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows with the losses as floats (one host read for all pending ones)."""
        pending = [r for r in self.rows if isinstance(r["loss"], torch.Tensor)]
        if pending:
            values = torch.stack([torch.stack([r["loss"], r["data_loss"]])
                                  for r in pending]).double().cpu().tolist()
            for r, (loss, data) in zip(pending, values):
                r["loss"], r["data_loss"] = loss, data
        return self.rows

    def close(self) -> None:
        self.bar.close()


def segments(n: int, restart: int) -> list[tuple[int, int]]:
    """L-BFGS iterations ``[0, n)`` split at ``restart`` (when 0 < restart < n)."""
    cuts = [0] + ([restart] if 0 < restart < n else []) + [n]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def run_lbfgs(params: list[torch.Tensor],
              loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]], *, n_iter: int,
              history: int, log: Callable[[int, torch.Tensor, torch.Tensor], None],
              bar: Any) -> None:
    """``n_iter`` L-BFGS iterations (strong Wolfe) in one optimiser call.

    One call, not ``n_iter`` calls of one iteration: each call re-evaluates the loss at its
    starting point (two evaluations per iteration instead of about 1.15). ``log(iteration,
    loss, data_term)`` is called at every evaluation; the bar advances by iterations.
    """
    lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=n_iter,
                              max_eval=math.ceil(LBFGS_EVALS_PER_ITER * n_iter) + 1,
                              history_size=history, tolerance_grad=0.0, tolerance_change=0.0,
                              line_search_fn="strong_wolfe")
    state = lbfgs.state[params[0]]
    done = [0]

    def closure() -> torch.Tensor:
        lbfgs.zero_grad(set_to_none=True)
        loss, data_term = loss_fn()
        check_finite(loss)  # L-BFGS reads the loss anyway
        loss.backward()
        it = state.get("n_iter", 0)  # iterations begun so far
        log(it, loss.detach(), data_term.detach())
        bar.update(it - done[0])
        done[0] = it
        return loss

    lbfgs.step(closure)
    bar.update(n_iter - done[0])


# Adam steps between host reads: the shifts' extent (it sizes the renderer's band, with
# room for this many steps) and the divergence check. Nothing else in a step waits for the
# device.
ADAM_STEPS_PER_READ = 10
# How far one Adam step can move a parameter, in units of its step size: |m| / sqrt(v) <=
# (1 - beta1) / sqrt(1 - beta2) ~ 3.2 with torch's defaults (~1 in practice).
ADAM_MAX_STEP = 3.2


def run_adam(obj: Objective, level: Level, log: FitLog) -> None:
    """Adam warm-up of one level; on the first level the loss scale narrows half-way."""
    opt = torch.optim.Adam(obj.adam_groups(), fused=True)  # one kernel for all parameters
    reach = ADAM_STEPS_PER_READ * ADAM_MAX_STEP * obj.cfg.adam_lr_shifts_m
    loss = None
    for step in range(level.adam_steps):
        if step % ADAM_STEPS_PER_READ == 0:
            check_finite(loss)
            obj.bound_shifts(reach if obj.cfg.fit_shifts else 0.0)
        if level.index == 0 and step == level.adam_steps // 2:
            obj.update_robust(first=True, weights=False)  # narrow the loss early
        opt.zero_grad(set_to_none=True)
        loss, data_term = obj.loss()
        loss.backward()
        opt.step()
        log.record(level, "adam", step, loss.detach(), data_term.detach())
        log.bar.update(1)
    check_finite(loss)
    obj.delta_max_m = None  # L-BFGS and the robust updates read the shifts themselves


def check_finite(loss: torch.Tensor | None) -> None:
    """Raise :class:`ConfigError` if ``loss`` (a 0-d tensor) is not finite (a host read)."""
    if loss is not None and not math.isfinite(float(loss.detach())):
        raise ConfigError(DIVERGED)


def fit_level(obj: Objective, level: Level, log: FitLog) -> None:
    """Adam, robust update, then L-BFGS on ``obj``'s current level.

    On the last level with date reweighting, the date weights are re-estimated half-way
    through L-BFGS (the shifts have converged by then) and L-BFGS restarts for the changed
    objective.
    """
    cfg = obj.cfg
    if level.index == 0:
        obj.widen_loss_scale()
    if level.adam_steps:
        run_adam(obj, level, log)
    obj.update_robust(first=level.index == 0)
    n = level.lbfgs_iters
    restart = n // 2 if cfg.reweight and level.last else -1
    for start, stop in segments(n, restart):
        if start:
            obj.update_robust(first=False)
        run_lbfgs(obj.params(), obj.loss, n_iter=stop - start, history=cfg.lbfgs_history,
                  log=lambda it, loss, dt, s0=start: log.record(level, "lbfgs", s0 + it, loss,
                                                                dt),
                  bar=log.bar)
