"""What a fit returns: :class:`FitResult` (scene, shifts, radiometry, diagnostics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splatsr.core.change import ChangeGrid, at_target, upsample
from splatsr.core.config import FitConfig
from splatsr.core.dates import effective_dates
from splatsr.core.inputs import InputReport
from splatsr.core.products.consensus import DateMedianAnchor, PixelAnchor
from splatsr.core.model import SplatGrid, render_latent, render_observations
from splatsr.core.products.observed import DateScene


@dataclass
class FitResult:
    """What a fit found: the scene, the shifts and how it got there."""

    weights: np.ndarray  # (B, Ky, Kx) splat weights in reflectance units
    shifts_m: np.ndarray  # (T, 2) (dx_m, dy_m): content displacement, east/north, mean zero
    grid: SplatGrid  # the finest splat lattice
    config: FitConfig
    band_names: tuple[str, ...]
    residual_rms: np.ndarray  # (T,) RMS misfit per observation, reflectance
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per logged step
    seconds: float = 0.0  # wall time of the fit
    gains: np.ndarray | None = None  # (T, B) radiometric gain per observation (median date 1)
    offsets: np.ndarray | None = None  # (T, B) radiometric offset per observation, reflectance
    obs_weights: np.ndarray | None = None  # (T,) weight of each observation in the fit (0-1]
    outlier_fraction: np.ndarray | None = None  # (T,) share of pixels the loss treats as outliers
    noise_level: np.ndarray | None = None  # (B,) noise sigma the fit worked in, reflectance
    time_weight: np.ndarray | None = None  # (T,) target-date weight of each date (0-1]
    change: np.ndarray | None = None  # (T, B, ny, nx) change layer nodes, mean zero over T
    change_grid: ChangeGrid | None = None  # its node lattice
    band_offsets_m: np.ndarray | None = None  # (B, 2) (dx_m, dy_m) of each band vs the first
    anchor: DateMedianAnchor | PixelAnchor | None = None  # correction toward the dates
    date_scene: DateScene | None = None  # the target date's own observed scene, when it is one
    valid_fraction: np.ndarray | None = None  # (T,) share of each date's pixels that is valid
    # the TV weight the fit used where it is not config.tv_weight (an observed date's
    # own-window fit in a season blend: x config.own_prior_factor); None: config.tv_weight
    prior_weight: float | None = None

    def tv_weight_used(self) -> float:
        """The prior weight this fit used (noise units): :attr:`prior_weight` or the config's."""
        return self.config.tv_weight if self.prior_weight is None else self.prior_weight

    def date_weights(self) -> np.ndarray:
        """(T,) each date's weight in the fit: time weight x robust weight x valid fraction
        (the factors the fit did not use count as 1)."""
        w = np.ones(len(self.shifts_m))
        for factor in (self.time_weight, self.obs_weights, self.valid_fraction):
            if factor is not None:
                w = w * np.asarray(factor, np.float64)
        return w

    def effective_dates(self) -> float:
        """How many dates effectively carried the result,
        :func:`~splatsr.core.dates.effective_dates` of :meth:`date_weights`."""
        return effective_dates(self.date_weights())
    inputs: InputReport | None = None  # what the input guard found (empty dates, bands, ...)

    def reported_shifts_m(self) -> np.ndarray:
        """(T, 2) :attr:`shifts_m` as written out: in the frame of the rendered product (a
        date scene rendered in another fit's frame moves them by its ``frame_shift_m``); NaN
        for a date left out of the fit."""
        shifts = self.shifts_m
        if self.date_scene is not None and any(self.date_scene.frame_shift_m):
            shifts = shifts - np.asarray(self.date_scene.frame_shift_m, shifts.dtype)
        if self.inputs is None or self.inputs.used_dates.all():
            return shifts
        return np.where(self.inputs.used_dates[:, None], shifts, np.nan)

    def band_shifts(self, shifts_m: torch.Tensor) -> torch.Tensor:
        """Date shifts (N, 2) as rendered: (N, B, 2) with the band offsets, else unchanged."""
        if self.band_offsets_m is None:
            return shifts_m
        off = torch.as_tensor(self.band_offsets_m, dtype=shifts_m.dtype)
        return shifts_m[:, None, :] + off[None]

    def change_at(self, resolution_m: float) -> np.ndarray | None:
        """(B, H', W') change layer at the target date on a ``resolution_m`` grid (the
        time-weighted mean of the dates' layers); None without a target or change layer."""
        if self.change is None or self.time_weight is None:
            return None
        c = at_target(torch.from_numpy(self.change).double(),
                      torch.from_numpy(np.asarray(self.time_weight, np.float64)))
        ty, tx = self.change_grid.tents(resolution_m, dtype=torch.float64)
        return upsample(c, ty, tx).numpy()

    def render(self, resolution_m: float = 2.5) -> np.ndarray:
        """The latent scene over the stack's extent at ``resolution_m``: (B, H', W').

        With a target date and a change layer, the layer at the target is added; then the
        anchor correction (:mod:`splatsr.core.products.consensus`), if any. When the target date is an
        acquisition, its observed scene (:mod:`splatsr.core.products.observed`)."""
        if self.date_scene is not None:
            return self.date_scene.render(self, resolution_m)
        w = torch.from_numpy(self.weights.astype(np.float64))
        with torch.no_grad():
            img = render_latent(w, grid=self.grid, resolution_m=resolution_m).numpy()
        change = self.change_at(resolution_m)
        if change is not None:
            img = img + change
        if self.anchor is not None:
            img = img + self.anchor.at(resolution_m, band_offsets_m=self.band_offsets_m)
        return img.astype(np.float32)

    def sensor_view(self, shifts_m: np.ndarray) -> np.ndarray:
        """(N, B, H, W) the fitted scene as the sensor sees it at date shifts (N, 2) (each
        band at its band offset), no radiometry: the median date's reflectance, float64."""
        w = torch.from_numpy(self.weights.astype(np.float64))
        s = self.band_shifts(torch.from_numpy(np.asarray(shifts_m, np.float64)))
        with torch.no_grad():
            return render_observations(w, s, grid=self.grid,
                                       psf_sigma_m=self.config.psf_widths_m()).numpy()

    def seen(self) -> np.ndarray:
        """(B, H, W) :meth:`sensor_view` at zero shift: what the median anchor compares."""
        return self.sensor_view(np.zeros((1, 2)))[0]

    def predict(self, dates: list[int] | None = None) -> np.ndarray:
        """The observations as the model predicts them: (T, B, H, W), reflectance; only the
        dates of index ``dates`` (N, B, H, W) when given."""
        idx = np.arange(len(self.shifts_m)) if dates is None else np.asarray(dates)
        pred = self.sensor_view(self.shifts_m[idx])
        if self.gains is not None:
            pred = pred * self.gains[idx, :, None, None]
        if self.offsets is not None:
            pred = pred + self.offsets[idx, :, None, None]
        if self.change is not None:
            ty, tx = self.change_grid.tents(self.grid.pixel_m, dtype=torch.float64)
            pred = pred + upsample(torch.from_numpy(self.change[idx]).double(), ty, tx).numpy()
        return pred.astype(np.float32)

    def change_of(self, t: int, resolution_m: float) -> np.ndarray | None:
        """(B, H', W') date ``t``'s change layer on a ``resolution_m`` grid; None without."""
        if self.change is None:
            return None
        ty, tx = self.change_grid.tents(resolution_m, dtype=torch.float64)
        return upsample(torch.from_numpy(self.change[t]).double(), ty, tx).numpy()

    def per_observation(self) -> dict[str, Any]:
        """Columns of the shifts CSV besides the shifts: misfit, weight, radiometry."""
        cols: dict[str, Any] = {"residual_rms": self.residual_rms}
        if self.inputs is not None and not self.inputs.used_dates.all():
            cols["used"] = self.inputs.used_dates.astype(int)  # 0: left out (no valid pixel)
        if self.obs_weights is not None:
            cols["weight"] = self.obs_weights
        if self.outlier_fraction is not None:
            cols["outlier_fraction"] = self.outlier_fraction
        if self.time_weight is not None:
            cols["time_weight"] = self.time_weight
        if self.band_offsets_m is not None:  # each band's shift in each observation
            for b, band in enumerate(self.band_names):
                cols[f"dx_m_{band}"] = self.shifts_m[:, 0] + self.band_offsets_m[b, 0]
                cols[f"dy_m_{band}"] = self.shifts_m[:, 1] + self.band_offsets_m[b, 1]
        if self.config.band_psf_sigma_m is not None:  # the same for every observation
            for band, psf_m in zip(self.band_names, self.config.band_psf_sigma_m):
                cols[f"psf_sigma_m_{band}"] = np.full(len(self.shifts_m), psf_m)
        for name, arr in (("gain", self.gains), ("offset", self.offsets)):
            if arr is not None:
                for b, band in enumerate(self.band_names):
                    cols[f"{name}_{band}"] = arr[:, b]
        return {k: [float(x) for x in v] for k, v in cols.items()}
