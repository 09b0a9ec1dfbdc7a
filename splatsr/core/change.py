"""The coarse change layer: a smooth per-date, per-band field added to the rendered scene.

Real scenes change between dates (crops grow, soil dries, haze comes and goes). The change
layer lets each date differ from the static fine-scale scene by a field that is smooth at the
scale of ``cell_m``: values on a node lattice of that spacing, interpolated bilinearly (tent
functions) to any pixel grid. It is kept mean-zero over the dates (the static scene holds the
common part) and penalised for roughness, so the detail below the lattice's scale stays in
the shared scene while the change goes to the layer. It generalises a per-date offset.
Target-date fits use a 40 m lattice; the consensus a node per pixel with a light penalty
(every date may differ at the pixel scale, what lies below the pixel, seen through the
sub-pixel shifts, stays shared; :mod:`splatsr.core.config`).

Whether a stack needs the layer is read from the data (:func:`change_ratio`): block means of
the dates at the layer's scale, less what a per-date gain, offset and sub-pixel shift
explain, against the noise those means would have on a static scene.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from splatsr.core.scaling import noise_sigma


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

    def tents(self, resolution_m: float, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> tuple["Tent", "Tent"]:
        """Linear interpolation (tent functions) from the nodes to the pixel centres of a
        ``resolution_m`` grid covering the extent: (along the rows, along the columns)."""
        return (Tent.along(self.height_m, self.cell_m, resolution_m, dtype, device),
                Tent.along(self.width_m, self.cell_m, resolution_m, dtype, device))


@dataclass(frozen=True)
class Tent:
    """Linear interpolation along one axis: pixel ``i`` takes
    ``(1 - frac[i]) * node[lo[i]] + frac[i] * node[lo[i] + 1]``.

    Two gathers per axis, so a lattice as fine as the pixels costs what an image does (a
    dense interpolation matrix would cost rows x nodes per column).
    """

    lo: torch.Tensor  # (n_pixels,) int64, the node at or before each pixel centre
    frac: torch.Tensor  # (n_pixels,) in [0, 1), the distance past it in node spacings

    @classmethod
    def along(cls, extent_m: float, cell_m: float, resolution_m: float, dtype: torch.dtype,
              device: torch.device | str) -> "Tent":
        """Pixel centres of ``resolution_m`` over ``extent_m``, nodes every ``cell_m`` from 0
        (the lattice of :class:`ChangeGrid` reaches past the last centre)."""
        n_px = round(extent_m / resolution_m)
        pos = (torch.arange(n_px, dtype=torch.float64) + 0.5) * resolution_m / cell_m
        lo = pos.floor()
        return cls(lo=lo.long().to(device), frac=(pos - lo).to(device=device, dtype=dtype))

    def apply(self, nodes: torch.Tensor, dim: int) -> torch.Tensor:
        """``nodes`` (..., n_nodes, ...) -> (..., n_pixels, ...) along ``dim``."""
        a = nodes.index_select(dim, self.lo)
        b = nodes.index_select(dim, self.lo + 1)
        shape = [1] * nodes.dim()
        shape[dim] = -1
        return torch.lerp(a, b, self.frac.to(nodes.dtype).view(shape))


def upsample(change: torch.Tensor, ty: Tent, tx: Tent) -> torch.Tensor:
    """(..., ny, nx) node values -> (..., rows, cols) with the tents of
    :meth:`ChangeGrid.tents` (any leading dimensions)."""
    return tx.apply(ty.apply(change, -2), -1)


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


def change_ratio(data: np.ndarray, *, cell_px: int) -> float:
    """How far the dates of a stack differ at the scale of ``cell_px`` pixels, in noise units.

    Parameters
    ----------
    data
        (T, B, H, W) observations, NaN where invalid.
    cell_px
        Block size in pixels (the change layer's spacing over the pixel size), >= 1.

    Returns
    -------
    float
        The largest over the bands of the robust spread (1.4826 MAD) of the dates'
        ``cell_px``-block means, less a per-date least-squares fit of the per-pixel median's
        block means, a constant and the median's block-mean gradients (gain, offset and a
        sub-pixel shift), over the noise of a block mean, ``noise_sigma / cell_px``. About 1
        or less for a static scene with noise and shifts (``noise_sigma`` overestimates the
        noise where there is texture); field-scale change between the dates raises it (0
        when no block is valid).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        med = np.nanmedian(data, axis=0)  # (B, H, W)
    ratios = [0.0]
    for b in range(data.shape[1]):
        m = med[b]
        regressors = [block_means(a[None], cell_px)[0] for a in
                      (m, np.gradient(m, axis=1), np.gradient(m, axis=0))]  # (h, w) each
        ys = block_means(data[:, b], cell_px)  # (T, h, w)
        resid = [date_residual(y, regressors) for y in ys]
        e = np.concatenate([r for r in resid if r is not None] or [np.zeros(0)])
        if e.size:
            spread = 1.4826 * np.median(np.abs(e - np.median(e)))
            ratios.append(spread * cell_px / noise_sigma(data[:, b]))
    return float(max(ratios))


def block_means(x: np.ndarray, k: int) -> np.ndarray:
    """(T, H, W) -> (T, H // k, W // k) means of k x k blocks; NaN where one pixel is."""
    T, H, W = x.shape
    x = x[:, :H // k * k, :W // k * k].reshape(T, H // k, k, W // k, k)
    return x.mean(axis=(2, 4))


def date_residual(y: np.ndarray, regressors: list[np.ndarray]) -> np.ndarray | None:
    """Residual of a least-squares fit of ``y`` (h, w) on the regressors and a constant, over
    the blocks where all are valid; None where fewer than 8 are."""
    ok = np.isfinite(y) & np.logical_and.reduce([np.isfinite(r) for r in regressors])
    if ok.sum() < 8:
        return None
    A = np.stack([r[ok] for r in regressors] + [np.ones(int(ok.sum()))], axis=1)
    coef = np.linalg.lstsq(A, y[ok], rcond=None)[0]
    return y[ok] - A @ coef
