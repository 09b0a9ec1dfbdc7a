"""What a fit returns: :class:`FitResult` (scene, shifts, radiometry, diagnostics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splatsr.core.config import FitConfig
from splatsr.core.model import SplatGrid, render_latent, render_observations


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

    def render(self, resolution_m: float = 2.5) -> np.ndarray:
        """The latent scene over the stack's extent at ``resolution_m``: (B, H', W')."""
        w = torch.from_numpy(self.weights.astype(np.float64))
        with torch.no_grad():
            return render_latent(w, grid=self.grid, resolution_m=resolution_m).numpy() \
                .astype(np.float32)

    def predict(self) -> np.ndarray:
        """The observations as the model predicts them: (T, B, H, W), reflectance."""
        w = torch.from_numpy(self.weights.astype(np.float64))
        s = torch.from_numpy(self.shifts_m.astype(np.float64))
        with torch.no_grad():
            pred = render_observations(w, s, grid=self.grid,
                                       psf_sigma_m=self.config.psf_sigma_m).numpy()
        if self.gains is not None:
            pred = pred * self.gains[:, :, None, None]
        if self.offsets is not None:
            pred = pred + self.offsets[:, :, None, None]
        return pred.astype(np.float32)

    def per_observation(self) -> dict[str, Any]:
        """Columns of the shifts CSV besides the shifts: misfit, weight, radiometry."""
        cols: dict[str, Any] = {"residual_rms": self.residual_rms}
        if self.obs_weights is not None:
            cols["weight"] = self.obs_weights
        if self.outlier_fraction is not None:
            cols["outlier_fraction"] = self.outlier_fraction
        if self.time_weight is not None:
            cols["time_weight"] = self.time_weight
        for name, arr in (("gain", self.gains), ("offset", self.offsets)):
            if arr is not None:
                for b, band in enumerate(self.band_names):
                    cols[f"{name}_{band}"] = arr[:, b]
        return {k: [float(x) for x in v] for k, v in cols.items()}
