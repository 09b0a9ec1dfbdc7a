"""The objective of a fit: parameters, robust state, residuals and loss, in noise units.

One :class:`Objective` holds everything the optimisers change -- the splat weights of the
current level, the per-observation shifts, the per-(observation, band) log-gains and offsets
-- and the robust state the solver re-estimates between stages (noise level, loss scale,
observation weights). Every evaluation renders all dates and bands in one call; the data
term, the prior and the radiometry are single tensor expressions (no per-date or per-band
Python loops).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from splatsr.core.change import ChangeGrid, centred, roughness, upsample
from splatsr.core.config import FitConfig
from splatsr.core.model import SplatGrid, render_observations
from splatsr.core.prior import prior_penalty
from splatsr.core.robust import (
    MAX_SIGMA,
    MIN_SIGMA,
    apply_radiometry,
    observation_weights,
    rho,
    robust_sigma,
)
from splatsr.errors import ConfigError

CHANGE_RIDGE = 1e-3  # a small pull of the change layer to zero: its constant goes to the offset
DIVERGED = ("the fit diverged (non-finite loss or shifts); try a smaller adam_lr or a "
            "positive tv_weight")


class Objective:
    """Robust data term plus prior of a stack held as normalised tensors.

    Parameters
    ----------
    y
        (T, B, H, W) normalised data, 0 where invalid.
    valid
        (T, B, H, W) boolean validity mask.
    config
        The fit's settings.
    device
        Where the tensors live.
    init_shifts_m
        (T, 2) starting shifts ``(dx_m, dy_m)``; default zeros.
    time_weight
        (T,) weight of each date's data term (target-date fits); None = all 1.
    pixel_m
        Pixel size of ``y`` (places the change layer's lattice).
    band_offsets_m
        (B, 2) fixed ``(dx_m, dy_m)`` of each band's content, added to the date shifts;
        None (or all zero) = the bands line up.
    """

    def __init__(self, y: np.ndarray, valid: np.ndarray, *, config: FitConfig,
                 device: torch.device, init_shifts_m: np.ndarray | None = None,
                 time_weight: np.ndarray | None = None, pixel_m: float = 10.0,
                 band_offsets_m: np.ndarray | None = None) -> None:
        T, B = y.shape[:2]
        dt = torch.float32
        self.cfg = config
        self.y = torch.from_numpy(y.astype(np.float32)).to(device)  # (T, B, H, W)
        self.mask = torch.from_numpy(valid.astype(np.float32)).to(device)  # (T, B, H, W)
        self.n_valid = float(valid.sum())
        self.theta = self._initial_shifts(init_shifts_m, T, device).requires_grad_(
            config.fit_shifts)  # (T, 2) m
        # log-gain and offset per (observation, band), mean-zero over observations when used
        self.log_gain = torch.zeros(T, B, dtype=dt, device=device,
                                    requires_grad=config.radiometry)
        self.offset = torch.zeros(T, B, dtype=dt, device=device,
                                  requires_grad=config.radiometry)
        # robust state: noise level (normalised units), loss scale, observation weights
        self.sigma = 1.0
        self.c = float("inf")
        self.obs_w = torch.ones(T, dtype=dt, device=device)  # (T,)
        self.time_w = None if time_weight is None else \
            torch.as_tensor(time_weight, dtype=dt, device=device)  # (T,) fixed
        self.w: torch.Tensor | None = None  # (B, Ky, Kx) weights of the current level
        self.band_off = None if band_offsets_m is None or not np.any(band_offsets_m) else \
            torch.as_tensor(band_offsets_m, dtype=dt, device=device)  # (B, 2) fixed
        self.change_grid, self.change = None, None  # (T, B, ny, nx) node values when on
        if config.change_cell_m is not None:
            H, W = y.shape[2:]
            self.change_grid = ChangeGrid(H * pixel_m, W * pixel_m, config.change_cell_m)
            self.uy, self.ux = self.change_grid.matrices(pixel_m, device=device)
            self.change = torch.zeros(T, B, self.change_grid.ny, self.change_grid.nx,
                                      dtype=dt, device=device, requires_grad=True)
            # a rough change costs like a difference over the cell's pixels
            self.change_scale = config.change_weight * (config.change_cell_m / pixel_m) ** 2
        self.grid: SplatGrid | None = None

    @staticmethod
    def _initial_shifts(init: np.ndarray | None, T: int, device: torch.device) -> torch.Tensor:
        if init is None:
            return torch.zeros(T, 2, dtype=torch.float32, device=device)
        init = np.asarray(init, np.float64)
        if init.shape != (T, 2) or not np.isfinite(init).all():
            raise ConfigError(f"initial shifts must be a finite (T={T}, 2) array, "
                              f"got shape {init.shape}")
        return torch.from_numpy(init - init.mean(0)).to(device, torch.float32)

    def set_level(self, w: torch.Tensor, grid: SplatGrid) -> None:
        """Start a level: ``w`` (B, Ky, Kx) on ``grid`` becomes the scene being fitted."""
        self.w = w.contiguous().clone().requires_grad_(True)
        self.grid = grid

    def params(self) -> list[torch.Tensor]:
        """The tensors the optimisers update: weights first, then shifts and radiometry."""
        return [self.w] + ([self.theta] if self.cfg.fit_shifts else []) + \
            ([self.log_gain, self.offset] if self.cfg.radiometry else []) + \
            ([self.change] if self.change is not None else [])

    def adam_groups(self) -> list[dict]:
        """Adam parameter groups: scene and change (noise units), then shifts and radiometry."""
        cfg = self.cfg
        first = [self.w] + ([self.change] if self.change is not None else [])
        rest = ([self.theta] if cfg.fit_shifts else []) + \
            ([self.log_gain, self.offset] if cfg.radiometry else [])
        return [dict(params=first, lr=cfg.adam_lr)] + \
            ([dict(params=rest, lr=cfg.adam_lr_shifts_m)] if rest else [])

    def shifts(self) -> torch.Tensor:
        """(T, 2) shifts in the mean-zero gauge."""
        return self.theta - self.theta.mean(0)

    def residuals(self) -> torch.Tensor:
        """(T, B, H, W) masked residuals ``prediction - data``, normalised units."""
        if not bool(torch.isfinite(self.theta).all()):
            raise ConfigError(DIVERGED)
        shifts = self.shifts()  # (T, 2)
        if self.band_off is not None:
            shifts = shifts[:, None, :] + self.band_off[None]  # (T, B, 2)
        pred = render_observations(self.w, shifts, grid=self.grid,
                                   psf_sigma_m=self.cfg.psf_sigma_m)
        if self.cfg.radiometry:
            pred = apply_radiometry(pred, self.log_gain, self.offset)
        if self.change is not None:
            pred = pred + upsample(centred(self.change), self.uy, self.ux)
        return (pred - self.y) * self.mask

    def loss(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, data term): robust weighted data term plus the prior, per valid pixel."""
        r = self.residuals()
        s = self.sigma
        pen = rho(r / s, loss=self.cfg.loss, scale=self.c) * (s * s)
        date_w = self.obs_w if self.time_w is None else self.obs_w * self.time_w  # (T,)
        data_term = (pen * date_w[:, None, None, None]).sum() / self.n_valid
        tv = self.cfg.tv_weight
        loss = data_term + tv * s * prior_penalty(self.w, self.cfg.prior) / self.n_valid \
            if tv else data_term
        if self.change is not None:
            c = centred(self.change)
            pen = roughness(c) + CHANGE_RIDGE * (c * c).sum()
            loss = loss + self.change_scale * s * s * pen / self.n_valid
        if not math.isfinite(float(loss.detach())):
            raise ConfigError(DIVERGED)
        return loss, data_term

    def widen_loss_scale(self) -> None:
        """Loss scale for the initial (blocky) scene: wide, narrowed once the scene forms."""
        if self.cfg.loss == "l2":
            return
        with torch.no_grad():
            self.c = max(self.cfg.robust_scale,
                         self.cfg.robust_scale * float(robust_sigma(self.residuals(), self.mask)))

    def update_robust(self, *, first: bool, weights: bool = True) -> None:
        """Re-estimate the noise level (``first`` only), the loss scale and the date weights."""
        with torch.no_grad():
            r = self.residuals()
            if first and self.cfg.noise_from_residuals:
                self.sigma = min(max(float(robust_sigma(r, self.mask)), MIN_SIGMA), MAX_SIGMA)
            if self.cfg.loss != "l2":
                self.c = self.cfg.robust_scale
            if self.cfg.reweight and weights:
                self.obs_w = observation_weights(r, self.mask)

    def outlier_fraction(self) -> torch.Tensor:
        """(T,) share of each observation's valid pixels beyond 3 loss scales."""
        with torch.no_grad():
            z = (self.residuals() / self.sigma).abs()
            out = ((z > 3 * self.c) & (self.mask > 0)).float().sum((1, 2, 3))
            return out / self.mask.sum((1, 2, 3)).clamp(min=1)
