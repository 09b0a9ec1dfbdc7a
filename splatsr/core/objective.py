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
from splatsr.core.model import MAX_SHIFT_M, SplatGrid, render_observations
from splatsr.core.prior import prior_penalty
from splatsr.core.robust import (
    MAX_SIGMA,
    MIN_SIGMA,
    apply_radiometry,
    observation_weights,
    penalty_sum,
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
        self.pixel_factor: torch.Tensor | None = None  # (T, B, H, W) or None (all 1)
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
        cell_m = config.change_cell()
        if cell_m is not None:
            H, W = y.shape[2:]
            self.change_grid = ChangeGrid(H * pixel_m, W * pixel_m, cell_m)
            self.tents = self.change_grid.tents(pixel_m, device=device)
            self.change = torch.zeros(T, B, self.change_grid.ny, self.change_grid.nx,
                                      dtype=dt, device=device, requires_grad=True)
            # a rough change costs like a difference over the cell's pixels
            self.change_scale = config.change_weight * (cell_m / pixel_m) ** 2
        self.grid: SplatGrid | None = None
        # (T, T) centring matrix: x - mean_t(x) as one matrix product (the mean-zero gauge)
        self.centre = torch.eye(T, dtype=dt, device=device) - 1.0 / T
        # bound of |shift| (m) that sizes the renderer's band; None = read the shifts
        self.delta_max_m: float | None = None
        self._data_weights()

    @staticmethod
    def _initial_shifts(init: np.ndarray | None, T: int, device: torch.device) -> torch.Tensor:
        if init is None:
            return torch.zeros(T, 2, dtype=torch.float32, device=device)
        init = np.asarray(init, np.float64)
        if init.shape != (T, 2) or not np.isfinite(init).all():
            raise ConfigError(f"initial shifts must be a finite (T={T}, 2) array, "
                              f"got shape {init.shape}")
        return torch.from_numpy(init - init.mean(0)).to(device, torch.float32)

    def set_pixel_factor(self, factor: np.ndarray) -> None:
        """Multiply each pixel's data term by (T, B, H, W) ``factor`` from now on (the
        observed date's own window where it is seen,
        :func:`~splatsr.core.dates.own_date_factor`)."""
        self.pixel_factor = torch.from_numpy(np.asarray(factor, np.float32)).to(self.y.device)
        self._data_weights()

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
        return torch.mm(self.centre, self.theta)

    def render_shifts(self) -> torch.Tensor:
        """(T, 2) shifts, or (T, B, 2) with the band offsets added, as the renderer takes them."""
        shifts = self.shifts()  # (T, 2)
        if self.band_off is not None:
            shifts = shifts[:, None, :] + self.band_off[None]  # (T, B, 2)
        return shifts

    def bound_shifts(self, allowance_m: float) -> None:
        """Size the renderer's band for the shifts as they are plus ``allowance_m`` (how far
        the optimiser may move them before the next call): one host read, then none per
        evaluation. Raises :class:`ConfigError` if the shifts are not finite (divergence)."""
        self.delta_max_m = min(shift_extent(self.render_shifts()) + allowance_m, MAX_SHIFT_M)

    def predict(self) -> torch.Tensor:
        """(T, B, H, W) predicted observations, normalised units."""
        shifts = self.render_shifts()
        # without a bound, read the shifts (a host sync): outside Adam's steps
        bound = shift_extent(shifts) if self.delta_max_m is None else self.delta_max_m
        pred = render_observations(self.w, shifts, grid=self.grid,
                                   psf_sigma_m=self.cfg.psf_widths_m(), delta_max_m=bound)
        if self.cfg.radiometry:
            pred = apply_radiometry(pred, torch.mm(self.centre, self.log_gain),
                                    torch.mm(self.centre, self.offset))
        if self.change is not None:
            pred = pred + upsample(centred(self.change), *self.tents)
        return pred

    def residuals(self) -> torch.Tensor:
        """(T, B, H, W) masked residuals ``prediction - data``, normalised units."""
        return (self.predict() - self.y) * self.mask

    def _data_weights(self) -> None:
        """Fold the robust state into the data term: ``sum weight * f(r * inv_scale)``
        equals ``sum_valid date_w * rho(r / sigma) * sigma**2 / n_valid`` (see
        :func:`~splatsr.core.robust.rho`). Called whenever the state changes."""
        s, c = self.sigma, self.c
        robust = self.cfg.loss != "l2" and math.isfinite(c)
        self.loss_kind = self.cfg.loss if robust else "l2"
        const = {"cauchy": 0.5 * (c * s) ** 2, "charbonnier": (c * s) ** 2, "l2": 0.5}
        date_w = self.obs_w if self.time_w is None else self.obs_w * self.time_w  # (T,)
        self.pix_w = self.mask * (date_w * (const[self.loss_kind] / self.n_valid)).view(
            -1, 1, 1, 1)  # (T, B, H, W)
        if self.pixel_factor is not None:
            self.pix_w = self.pix_w * self.pixel_factor
        self.inv_scale = torch.tensor(1.0 / (s * c) if robust else 1.0,
                                      dtype=self.y.dtype, device=self.y.device)

    def loss(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, data term): robust weighted data term plus the prior, per valid pixel.

        No host reads (the caller checks the loss for divergence when it reads it)."""
        data_term = penalty_sum(self.predict() - self.y, inv_scale=self.inv_scale,
                                weight=self.pix_w, loss=self.loss_kind)
        s = self.sigma
        tv = self.cfg.tv_weight
        loss = torch.add(data_term, prior_penalty(self.w, self.cfg.prior),
                         alpha=tv * s / self.n_valid) if tv else data_term
        if self.change is not None:
            c = centred(self.change)
            pen = roughness(c) + CHANGE_RIDGE * (c * c).sum()
            loss = loss + self.change_scale * s * s * pen / self.n_valid
        return loss, data_term

    def widen_loss_scale(self) -> None:
        """Loss scale for the initial (blocky) scene: wide, narrowed once the scene forms."""
        if self.cfg.loss == "l2":
            return
        with torch.no_grad():
            self.c = max(self.cfg.robust_scale,
                         self.cfg.robust_scale * float(robust_sigma(self.residuals(), self.mask)))
        self._data_weights()

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
        self._data_weights()

    def outlier_fraction(self) -> torch.Tensor:
        """(T,) share of each observation's valid pixels beyond 3 loss scales."""
        with torch.no_grad():
            z = (self.residuals() / self.sigma).abs()
            out = ((z > 3 * self.c) & (self.mask > 0)).float().sum((1, 2, 3))
            return out / self.mask.sum((1, 2, 3)).clamp(min=1)


def shift_extent(shifts: torch.Tensor) -> float:
    """``max |shift|`` in metres (a host read); :class:`ConfigError` if not finite (the fit
    diverged)."""
    with torch.no_grad():
        extent = float(shifts.abs().max())
    if not math.isfinite(extent):
        raise ConfigError(DIVERGED)
    return extent
