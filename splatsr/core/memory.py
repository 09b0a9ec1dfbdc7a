"""Memory plan of a fit: an estimate of its peak bytes, the device's budget, the decision.

The estimate counts the tensors a fit holds at its peak (the finest level's L-BFGS): the data
and mask, a handful of image-sized intermediates of the loss and their gradients, the
renderer's row-pass intermediate ``z`` and its gradient, and the parameters (the scene's
weights and any change layer) with their L-BFGS history. It is a plan, not a measurement: on
CUDA the fit's real peak (``torch.cuda.max_memory_allocated``) is logged beside it so the two
can be compared.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from splatsr.core.change import ChangeGrid
from splatsr.core.model import SplatGrid
from splatsr.core.tiling import TILE_PIXELS_COLS, TILE_PIXELS_ROWS, axis_tiling
from splatsr.errors import ConfigError

BYTES = 4  # float32
IMAGE_COPIES = 10  # data, mask, prediction, residual, loss terms and their gradients
Z_COPIES = 3  # the row-pass output, its gradient, the column pass's gradient
PARAM_COPIES = 6  # weights, gradient, Adam's two moments, L-BFGS's direction and step
SAFETY = 0.8  # share of the free device memory a fit may plan to use


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated peak bytes of one fit, by part."""

    images: int  # data, mask and image-sized intermediates
    render: int  # the renderer's row-pass intermediate and its gradients
    params: int  # weights, optimiser states and L-BFGS history

    @property
    def total(self) -> int:
        """Estimated peak bytes."""
        return self.images + self.render + self.params


def plan_fit_memory(*, n_obs: int, n_bands: int, height: int, width: int, pixel_m: float,
                    spacing_m: float, psf_sigma_m: float, lbfgs_history: int = 20,
                    max_shift_m: float = 30.0, change_cell_m: float | None = None
                    ) -> MemoryPlan:
    """Estimate the peak memory of a fit of a (T, B, H, W) stack at the finest level.

    Parameters
    ----------
    n_obs, n_bands, height, width
        The stack's shape (T, B, H, W).
    pixel_m, spacing_m, psf_sigma_m
        Pixel size, finest splat spacing and PSF width (metres).
    lbfgs_history
        L-BFGS memory (pairs of parameter-sized vectors).
    max_shift_m
        Largest shift the band is sized for.
    change_cell_m
        Spacing of the change layer (a parameter per date, band and node), None without.
    """
    grid = SplatGrid.for_raster(height=height, width=width, pixel_m=pixel_m,
                                spacing_m=spacing_m, psf_sigma_m=psf_sigma_m)
    ay, ax = grid.axes(pixel_m=pixel_m, n_y=height, n_x=width)
    sigma = math.hypot(grid.sigma_m, psf_sigma_m)
    ty = axis_tiling(ay, sigma_m=sigma, delta_max_m=max_shift_m, tile_px=TILE_PIXELS_ROWS)
    tx = axis_tiling(ax, sigma_m=sigma, delta_max_m=max_shift_m, tile_px=TILE_PIXELS_COLS)
    image = n_obs * n_bands * height * width
    z = n_obs * n_bands * ty.n_alloc * ty.G * ty.q * tx.n * tx.win
    n_params = n_bands * grid.ny * grid.nx
    if change_cell_m:
        lattice = ChangeGrid(height * pixel_m, width * pixel_m, change_cell_m)
        n_params += n_obs * n_bands * lattice.ny * lattice.nx
    return MemoryPlan(images=IMAGE_COPIES * image * BYTES, render=Z_COPIES * z * BYTES,
                      params=(PARAM_COPIES + 2 * lbfgs_history) * n_params * BYTES)


def device_budget_bytes(device: torch.device | str) -> int:
    """Bytes a fit may use on ``device``: a share of the free CUDA memory, or of the
    available RAM on the CPU (``MemAvailable``; unbounded where it cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(SAFETY * free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(SAFETY * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return 2 ** 62


def fits_on_device(plan: MemoryPlan, device: torch.device | str) -> bool:
    """Whether the plan's peak fits in :func:`device_budget_bytes` of ``device``."""
    return plan.total <= device_budget_bytes(device)


def peak_allocated(device: torch.device | str) -> int | None:
    """``torch.cuda.max_memory_allocated`` of a CUDA device (bytes); None on the CPU."""
    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def reset_peak(device: torch.device | str) -> None:
    """Start a new peak measurement on a CUDA device (nothing on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when torch sees it, else the CPU; other names as given.

    Raises
    ------
    ConfigError
        For ``"cuda"`` where torch sees no CUDA device (a CPU-only build, no driver), so
        nothing asks CUDA for memory on a machine without it.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device; "
                          "use --device cpu (device='cpu') or install a CUDA build of torch")
    return torch.device(name)


def largest_tile(*, n_obs: int, n_bands: int, pixel_m: float, spacing_m: float,
                 psf_sigma_m: float, overlap: int, budget_bytes: int,
                 lbfgs_history: int = 20, change_cell_m: float | None = None,
                 smallest: int = 32) -> int | None:
    """The largest square tile side (a multiple of 32 px, with ``overlap`` on each side)
    whose fit fits in ``budget_bytes``; None if not even ``smallest`` does."""
    best = None
    side = smallest
    while side <= 1 << 15:
        n = side + 2 * overlap
        plan = plan_fit_memory(n_obs=n_obs, n_bands=n_bands, height=n, width=n,
                               pixel_m=pixel_m, spacing_m=spacing_m,
                               psf_sigma_m=psf_sigma_m, lbfgs_history=lbfgs_history,
                               change_cell_m=change_cell_m)
        if plan.total > budget_bytes:
            break
        best, side = side, side * 2 if side < 256 else side + 256
    return best


def env_budget_bytes() -> int | None:
    """``SPLATSR_MEMORY_BUDGET_MIB`` (an override of the device budget), if set."""
    v = os.environ.get("SPLATSR_MEMORY_BUDGET_MIB")
    return int(float(v) * 2 ** 20) if v else None
