"""The forward model: a splat lattice over a raster, seen through shifts, a PSF and 10 m pixels.

Local frame (metres): ``u`` east from the raster's left edge, ``v`` south from its top edge.
Observation ``t`` sees the scene displaced by ``(dx_m[t], dy_m[t])`` -- east and *north*
positive -- so a feature at ``(u0, v0)`` in the scene appears at ``(u0 + dx, v0 - dy)`` in it.
Each 10 m pixel integrates the scene blurred by an isotropic Gaussian PSF; with Gaussian
splats, splat and PSF combine into one Gaussian of width ``sigma_eff = hypot(sigma_splat,
sigma_psf)`` per splat, integrated exactly over the pixel (difference of erfs, per axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

import splatsr.core.render as _r
from splatsr.errors import ConfigError

MAX_SHIFT_M = 30.0  # margin of splats outside the raster allows shifts up to this size
SIGMA_PER_SPACING = 0.8  # default splat width relative to the spacing (the narrowest allowed)


@dataclass(frozen=True)
class SplatGrid:
    """A regular lattice of splats covering a ``height x width`` raster plus a margin."""

    height: int  # raster rows (pixels)
    width: int  # raster columns (pixels)
    pixel_m: float  # raster pixel size
    spacing_m: float  # distance between splat centres
    sigma_m: float  # splat width (standard deviation)
    pad: int  # splats of margin on every side

    @classmethod
    def for_raster(cls, *, height: int, width: int, pixel_m: float, spacing_m: float,
                   sigma_m: float | None = None, psf_sigma_m: float = 0.0,
                   max_shift_m: float = MAX_SHIFT_M) -> "SplatGrid":
        """A lattice whose margin covers the PSF's and the shifts' reach."""
        sigma_m = SIGMA_PER_SPACING * spacing_m if sigma_m is None else sigma_m
        if sigma_m <= 0 or psf_sigma_m < 0:
            raise ConfigError(f"splat sigma must be > 0 and PSF sigma >= 0 "
                              f"(got {sigma_m} m, {psf_sigma_m} m)")
        if sigma_m < SIGMA_PER_SPACING * spacing_m - 1e-12:
            raise ConfigError(f"splat sigma {sigma_m} m is too narrow for spacing "
                              f"{spacing_m} m: use at least 0.8 x spacing so the splats "
                              "cover the ground evenly")
        _r.pixel_ratio(pixel_m, spacing_m)  # validates the ratio
        reach = 3.0 * math.hypot(sigma_m, psf_sigma_m) + max_shift_m
        return cls(height, width, pixel_m, spacing_m, sigma_m,
                   pad=math.ceil(reach / spacing_m))

    @property
    def ny(self) -> int:
        """Splats along the rows (y) axis."""
        return math.ceil(self.height * self.pixel_m / self.spacing_m - 1e-9) + 2 * self.pad

    @property
    def nx(self) -> int:
        """Splats along the columns (x) axis."""
        return math.ceil(self.width * self.pixel_m / self.spacing_m - 1e-9) + 2 * self.pad

    @property
    def origin_m(self) -> float:
        """Centre of splat 0 on either axis, in the local frame."""
        return (0.5 - self.pad) * self.spacing_m

    def centres_m(self, n: int) -> torch.Tensor:
        """Splat centres (n,) along an axis with n splats."""
        return self.origin_m + self.spacing_m * torch.arange(n, dtype=torch.float64)

    def axes(self, *, pixel_m: float, n_y: int, n_x: int,
             pix_origin_m: float = 0.0) -> tuple[_r.Axis, _r.Axis]:
        """(row axis, column axis) mapping this lattice onto a pixel grid."""
        ay = _r.Axis(self.ny, self.spacing_m, self.origin_m, n_y, pixel_m, pix_origin_m)
        ax = _r.Axis(self.nx, self.spacing_m, self.origin_m, n_x, pixel_m, pix_origin_m)
        return ay, ax


def render_observations(weights: torch.Tensor, shifts_m: torch.Tensor, *, grid: SplatGrid,
                        psf_sigma_m: float | Sequence[float] | torch.Tensor,
                        dense: bool = False, delta_max_m: float | None = None) -> torch.Tensor:
    """Predict the observations.

    Parameters
    ----------
    weights
        (B, Ky, Kx) splat weights (reflectance units or normalised).
    shifts_m
        (T, 2) displacement ``(dx_m, dy_m)`` per observation, east and north positive, or
        (T, B, 2) one displacement per observation and band (e.g. per-band offsets added to
        the date shifts).
    grid
        The splat lattice; its raster is what is rendered.
    psf_sigma_m
        Width of the Gaussian PSF (metres): one value for all bands, or a sequence / tensor
        of B values, one per band.
    dense
        Use the dense reference instead of the banded fast path.
    delta_max_m
        An upper bound of ``|shift|`` (metres) that sizes the fast path's band; by default
        the shifts' own maximum, read on the host (a device sync on CUDA). Shifts beyond
        the bound are rendered with a truncated band.

    Returns
    -------
    torch.Tensor
        (T, B, H, W) pixel values.

    Raises
    ------
    ConfigError
        If ``shifts_m`` or ``psf_sigma_m`` do not have one of the shapes above.
    """
    B = weights.shape[0]
    if shifts_m.dim() not in (2, 3) or shifts_m.shape[-1] != 2 or \
            (shifts_m.dim() == 3 and shifts_m.shape[1] != B):
        raise ConfigError(f"shifts must have shape (T, 2) or (T, B={B}, 2), "
                          f"got {tuple(shifts_m.shape)}")
    ay, ax = grid.axes(pixel_m=grid.pixel_m, n_y=grid.height, n_x=grid.width)
    if isinstance(psf_sigma_m, (int, float)) and psf_sigma_m >= 0:  # no tensor ops
        psf = torch.tensor(float(psf_sigma_m), dtype=torch.float64) if dense else None
        sigma: float | torch.Tensor = math.hypot(grid.sigma_m, psf_sigma_m)
    else:
        psf = band_psf_sigma(psf_sigma_m, n_bands=B)
        sigma = torch.sqrt(grid.sigma_m ** 2 + psf.detach().double() ** 2)
        sigma = sigma if sigma.dim() else float(sigma)
    if not dense:  # the fast path takes per-band shifts and widths (B,) natively
        shift = shifts_m if shifts_m.dim() == 3 else shifts_m.view(shifts_m.shape[0], 1, 2)
        return _r.render_xy(weights, ax_y=ay, ax_x=ax, sigma_m=sigma, shift_m=shift,
                            delta_max_m=delta_max_m)
    shifts = shifts_m if shifts_m.dim() == 3 else shifts_m[:, None].expand(-1, B, 2)
    psf = psf.expand(B)
    out = [_r.render_dense(weights[b:b + 1], ax_y=ay, ax_x=ax,
                           sigma_m=float(torch.sqrt(grid.sigma_m ** 2 + psf[b] * psf[b])),
                           dy_m=-shifts[:, b, 1], dx_m=shifts[:, b, 0]) for b in range(B)]
    return torch.cat(out, dim=1)


def band_psf_sigma(psf_sigma_m: float | Sequence[float] | torch.Tensor, *,
                   n_bands: int) -> torch.Tensor:
    """The PSF width as a 0-d tensor (one for all bands) or a (B,) tensor (one per band).

    Raises
    ------
    ConfigError
        If a sequence does not have ``n_bands`` entries or a width is negative.
    """
    psf = torch.as_tensor(psf_sigma_m, dtype=torch.float64) if not \
        isinstance(psf_sigma_m, torch.Tensor) else psf_sigma_m
    if psf.dim() > 1 or (psf.dim() == 1 and psf.shape[0] not in (1, n_bands)):
        raise ConfigError(f"the PSF sigma must be one value or one per band "
                          f"({n_bands}), got shape {tuple(psf.shape)}")
    if bool((psf.detach() < 0).any()):
        raise ConfigError(f"the PSF sigma must be >= 0, got {psf.tolist()}")
    return psf


def render_latent(weights: torch.Tensor, *, grid: SplatGrid, resolution_m: float,
                  extent_m: tuple[float, float] | None = None,
                  origin_m: float = 0.0,
                  shift_m: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """The latent scene (splats only, no PSF) integrated over square pixels.

    Covers the raster's extent exactly unless ``extent_m = (height_m, width_m)`` and
    ``origin_m`` say otherwise; ``shift_m = (dx_m east, dy_m north)`` renders it as an
    observation displaced by that much sees it (as :func:`render_observations`, without the
    PSF). Returns (B, H', W').

    Raises
    ------
    ConfigError
        If ``resolution_m`` does not divide the extent or has no simple ratio to the spacing.
    """
    if extent_m is None:
        extent_m = (grid.height * grid.pixel_m, grid.width * grid.pixel_m)
    n = output_shape(extent_m, resolution_m)
    ay, ax = grid.axes(pixel_m=resolution_m, n_y=n[0], n_x=n[1], pix_origin_m=origin_m)
    dx, dy = (torch.tensor([float(v)], dtype=weights.dtype, device=weights.device)
              for v in shift_m)
    return _r.render(weights, ax_y=ay, ax_x=ax, sigma_m=grid.sigma_m, dy_m=-dy, dx_m=dx)[0]


def output_shape(extent_m: tuple[float, float], resolution_m: float) -> tuple[int, int]:
    """(rows, cols) of a raster of ``resolution_m`` pixels covering ``(height_m, width_m)``.

    Raises
    ------
    ConfigError
        If the resolution is not positive or does not divide the extent.
    """
    if not resolution_m > 0:
        raise ConfigError(f"resolution must be positive, got {resolution_m} m")
    n = [round(e / resolution_m) for e in extent_m]
    if any(k < 1 or abs(k * resolution_m - e) > 1e-6 * e for k, e in zip(n, extent_m)):
        raise ConfigError(f"resolution {resolution_m} m does not divide the stack extent "
                          f"{extent_m[1]:g} x {extent_m[0]:g} m; pick a divisor of "
                          f"the pixel size (e.g. 5, 2.5 or 2 m for 10 m pixels)")
    return n[0], n[1]


def resample_weights(weights: torch.Tensor, *, src: SplatGrid, dst: SplatGrid) -> torch.Tensor:
    """Initialise ``dst``'s weights from the scene represented on ``src`` (coarse to fine).

    Each new weight is the latent scene averaged over the new splat's cell.
    """
    span = (dst.ny * dst.spacing_m, dst.nx * dst.spacing_m)
    out = render_latent(weights, grid=src, resolution_m=dst.spacing_m, extent_m=span,
                        origin_m=-dst.pad * dst.spacing_m)
    return out[:, : dst.ny, : dst.nx]
