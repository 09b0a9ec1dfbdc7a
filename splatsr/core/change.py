"""The coarse change layer: a smooth per-date, per-band field added to the rendered scene.

Real scenes change between dates (crops grow, soil dries, haze comes and goes). The change
layer lets each date differ from the static fine-scale scene by a field that is smooth at the
scale of ``cell_m`` (40-80 m): values on a node lattice of that spacing, interpolated
bilinearly (tent functions) to any pixel grid. It is kept mean-zero over the dates (the
static scene holds the common part) and penalised for roughness, so fine detail stays in the
shared scene while field-scale change goes to the layer. It generalises a per-date offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ChangeGrid:
    """A node lattice of spacing ``cell_m`` over a ``height_m x width_m`` extent."""

    height_m: float
    width_m: float
    cell_m: float

    @property
    def ny(self) -> int:
        """Nodes along the rows (the first at the top edge, the last at or past the bottom)."""
        return math.ceil(self.height_m / self.cell_m - 1e-9) + 1

    @property
    def nx(self) -> int:
        """Nodes along the columns."""
        return math.ceil(self.width_m / self.cell_m - 1e-9) + 1

    def matrices(self, resolution_m: float, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(rows x ny, cols x nx) bilinear weights from the nodes to the pixel centres of a
        ``resolution_m`` grid covering the extent."""
        return (tent_matrix(self.height_m, self.ny, self.cell_m, resolution_m, dtype, device),
                tent_matrix(self.width_m, self.nx, self.cell_m, resolution_m, dtype, device))


def tent_matrix(extent_m: float, n_nodes: int, cell_m: float, resolution_m: float,
                dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """(n_pixels, n_nodes) linear-interpolation weights along one axis (rows sum to 1)."""
    n_px = round(extent_m / resolution_m)
    centres = (torch.arange(n_px, dtype=torch.float64) + 0.5) * resolution_m
    nodes = torch.arange(n_nodes, dtype=torch.float64) * cell_m
    w = (1.0 - (centres[:, None] - nodes[None]).abs() / cell_m).clamp(min=0.0)
    return w.to(device=device, dtype=dtype)


def upsample(change: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor) -> torch.Tensor:
    """(..., ny, nx) node values -> (..., rows, cols) with the matrices of
    :meth:`ChangeGrid.matrices` (two matrix products, any leading dimensions)."""
    return uy @ change @ ux.T


def roughness(change: torch.Tensor) -> torch.Tensor:
    """Sum of squared second differences along rows and columns of (..., ny, nx).

    A plane (a haze or illumination gradient) costs nothing; curvature does.
    """
    dyy = change[..., 2:, :] - 2 * change[..., 1:-1, :] + change[..., :-2, :]
    dxx = change[..., :, 2:] - 2 * change[..., :, 1:-1] + change[..., :, :-2]
    return (dyy * dyy).sum() + (dxx * dxx).sum()


def centred(change: torch.Tensor) -> torch.Tensor:
    """(T, B, ny, nx) with the mean over the dates removed (the static scene's gauge)."""
    return change - change.mean(0, keepdim=True)


def at_target(change: torch.Tensor, time_weight: torch.Tensor | None) -> torch.Tensor | None:
    """(B, ny, nx) change of the scene as of the target: the time-weighted mean of the
    centred layer; None without time weights (the consensus: zero by construction)."""
    if time_weight is None:
        return None
    c = centred(change)
    w = time_weight / time_weight.sum()
    return (c * w[:, None, None, None]).sum(0)
