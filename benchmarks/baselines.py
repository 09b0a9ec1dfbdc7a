"""Classical multi-frame baselines for the quality benchmark (not part of the library).

Every baseline takes a stack ``data`` (T, B, H, W) of ``pixel_m`` pixels and returns the scene
on a grid ``factor`` times finer, (B, H * factor, W * factor), covering the same extent:

* ``bicubic_one`` / ``bicubic_mean`` / ``bicubic_median``: one date (the first), the per-pixel
  mean or median of the dates, upsampled bicubically (pixel-area aligned).
* ``shift_and_add``: drizzle with ``pixfrac`` 1 (each input pixel's footprint, moved back by its
  date's phase-correlation shift, is added to the fine pixels it overlaps, weighted by area).
* ``ibp``: Irani--Peleg iterative back-projection with the exact forward model (shift, Gaussian
  PSF, 10 m box) and its adjoint, normalised, as the back-projection kernel.
* ``map_tv``: a pixel-grid MAP estimate (least squares + smoothed TV, L-BFGS) with the same
  forward model as splatsr, at fixed phase-correlation shifts.

The forward model on a pixel grid is :func:`box_operator`, the simulator's (the exact
integral of a piecewise-constant scene through a Gaussian PSF over each coarse pixel).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import zoom
from scipy.special import ndtr

from splatsr.core.solver import noise_sigma
from splatsr.evaluate.registration import phasecorr_seed


def _fill(data: np.ndarray) -> np.ndarray:
    """NaNs replaced by the per-pixel median of the dates (then by the band median)."""
    with np.errstate(invalid="ignore"):
        med = np.nanmedian(data, axis=0)
    med = np.where(np.isfinite(med), med, np.nanmedian(med))
    return np.where(np.isfinite(data), data, med[None])


def _up(img: np.ndarray, factor: int) -> np.ndarray:
    """(B, H, W) -> (B, fH, fW) bicubic, pixel areas aligned (grid_mode)."""
    return np.stack([zoom(b, factor, order=3, grid_mode=True, mode="grid-mirror")
                     for b in img]).astype(np.float32)


def block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """(B, H, W) -> (B, H / f, W / f): the mean of each f x f block (a coarser grid)."""
    B, H, W = x.shape
    return x.reshape(B, H // f, f, W // f, f).mean((2, 4))


def bicubic_one(data: np.ndarray, *, factor: int, **_: object) -> np.ndarray:
    """The first date, upsampled bicubically."""
    return _up(_fill(data)[0], factor)


def bicubic_mean(data: np.ndarray, *, factor: int, **_: object) -> np.ndarray:
    """The per-pixel mean of the dates, upsampled bicubically."""
    return _up(np.nanmean(_fill(data), axis=0), factor)


def bicubic_median(data: np.ndarray, *, factor: int, **_: object) -> np.ndarray:
    """The per-pixel median of the dates, upsampled bicubically."""
    return _up(np.nanmedian(_fill(data), axis=0), factor)


def _overlap(n_fine: int, fine_m: float, n_in: int, pixel_m: float, delta_m: float
             ) -> np.ndarray:
    """(n_fine, n_in) overlap length of fine cell i with input pixel j moved by -delta."""
    a = fine_m * np.arange(n_fine)[:, None]
    c = pixel_m * np.arange(n_in)[None, :] - delta_m
    return np.clip(np.minimum(a + fine_m, c + pixel_m) - np.maximum(a, c), 0, None)


def shift_and_add(data: np.ndarray, *, factor: int, pixel_m: float,
                  shifts_m: np.ndarray, **_: object) -> np.ndarray:
    """Drizzle (pixfrac 1) of every date moved back by its shift."""
    data = _fill(data)
    T, B, H, W = data.shape
    fine = pixel_m / factor
    acc = np.zeros((B, H * factor, W * factor))
    wsum = np.zeros((H * factor, W * factor))
    for t in range(T):
        # content displaced by (dx, dy): the observation's pixel sees the scene at u - dx and
        # v + dy (rows grow southwards)
        oy = _overlap(H * factor, fine, H, pixel_m, -shifts_m[t, 1])
        ox = _overlap(W * factor, fine, W, pixel_m, shifts_m[t, 0])
        acc += np.einsum("ik,bkl,jl->bij", oy, data[t], ox, optimize=True)
        wsum += oy.sum(1)[:, None] * ox.sum(1)[None, :]
    return (acc / np.maximum(wsum, 1e-9)[None]).astype(np.float32)


def box_operator(n_out: int, pixel_m: float, n_in: int, cell_m: float, origin_m: float,
                 sigma_m: float, delta_m: np.ndarray) -> np.ndarray:
    """(T, n_out, n_in): mean over output pixel j of input cell i, blurred and displaced.

    The simulator's forward model along one axis: output pixels ``[j p, (j+1) p]``, input
    cells ``[origin + i r, origin + (i+1) r]``, a Gaussian PSF of ``sigma_m`` and a shift
    ``delta_m`` (T,) per date. The double integral of the Gaussian over two boxes is a sum
    of ``G(z) = z Phi(z) + phi(z)`` at the four edge differences.
    """
    sigma_m = max(sigma_m, 1e-3 * cell_m)  # a zero PSF is the limit of a tiny one
    out_edges = pixel_m * np.arange(n_out + 1)
    in_edges = origin_m + cell_m * np.arange(n_in + 1)
    z = (out_edges[None, :, None] - in_edges[None, None, :]
         - np.asarray(delta_m)[:, None, None]) / sigma_m  # (T, n_out + 1, n_in + 1)
    g = z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return sigma_m / pixel_m * (g[:, 1:, :-1] - g[:, :-1, :-1] - g[:, 1:, 1:] + g[:, :-1, 1:])


def _operators(T: int, H: int, W: int, *, factor: int, pixel_m: float, psf_sigma_m: float,
               shifts_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Row and column operators (T, H, Hf + 2m), (T, W, Wf + 2m) and the margin m."""
    fine = pixel_m / factor
    m = math.ceil((4 * psf_sigma_m + np.abs(shifts_m).max() + pixel_m) / fine)
    ay = box_operator(H, pixel_m, H * factor + 2 * m, fine, -m * fine, psf_sigma_m,
                        -shifts_m[:, 1])
    ax = box_operator(W, pixel_m, W * factor + 2 * m, fine, -m * fine, psf_sigma_m,
                        shifts_m[:, 0])
    return ay, ax, m


def ibp(data: np.ndarray, *, factor: int, pixel_m: float, shifts_m: np.ndarray,
        psf_sigma_m: float = 4.0, iters: int = 30, **_: object) -> np.ndarray:
    """Irani--Peleg iterative back-projection, started from the shift-and-add result."""
    data = _fill(data)
    T, B, H, W = data.shape
    ay, ax, m = _operators(T, H, W, factor=factor, pixel_m=pixel_m, psf_sigma_m=psf_sigma_m,
                           shifts_m=shifts_m)
    x = np.pad(shift_and_add(data, factor=factor, pixel_m=pixel_m, shifts_m=shifts_m),
               ((0, 0), (m, m), (m, m)), mode="reflect").astype(np.float64)
    norm = np.einsum("tik,tjl->kl", ay, ax, optimize=True)  # back-projection normaliser
    norm = np.maximum(norm, 1e-3 * norm.max())
    for _ in range(iters):
        err = data - np.einsum("tik,bkl,tjl->tbij", ay, x, ax, optimize=True)
        x += np.einsum("tik,tbij,tjl->bkl", ay, err, ax, optimize=True) / norm[None]
    return x[:, m:-m, m:-m].astype(np.float32)


def _tv(x: torch.Tensor, eps: float) -> torch.Tensor:
    gx = x[:, :-1, 1:] - x[:, :-1, :-1]
    gy = x[:, 1:, :-1] - x[:, :-1, :-1]
    return torch.sqrt(gx * gx + gy * gy + eps * eps).sum()


def map_tv(data: np.ndarray, *, factor: int, pixel_m: float, shifts_m: np.ndarray,
           psf_sigma_m: float = 4.0, tv_weight: float = 0.05, iters: int = 150,
           **_: object) -> np.ndarray:
    """Pixel-grid MAP: least squares (noise units) + ``tv_weight`` x TV, L-BFGS."""
    valid = np.isfinite(data)
    data = _fill(data)
    T, B, H, W = data.shape
    ay, ax, m = _operators(T, H, W, factor=factor, pixel_m=pixel_m, psf_sigma_m=psf_sigma_m,
                           shifts_m=shifts_m)
    mean = data.mean((0, 2, 3))
    sig = np.array([noise_sigma(data[:, b]) for b in range(B)])
    y = torch.from_numpy((data - mean[None, :, None, None]) / sig[None, :, None, None])
    msk = torch.from_numpy(valid.astype(np.float64))
    ay_t, ax_t = torch.from_numpy(ay), torch.from_numpy(ax)
    x0 = np.pad(bicubic_median(data, factor=factor), ((0, 0), (m, m), (m, m)), mode="reflect")
    x = torch.from_numpy((x0 - mean[:, None, None]) / sig[:, None, None]).requires_grad_(True)
    n = float(msk.sum())
    opt = torch.optim.LBFGS([x], lr=1, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=0.0,
                            tolerance_change=0.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        pred = torch.einsum("tik,bkl,tjl->tbij", ay_t, x, ax_t)
        r = (pred - y) * msk
        loss = (0.5 * (r * r).sum() + tv_weight * _tv(x, 0.1)) / n
        loss.backward()
        return loss

    opt.step(closure)
    out = x.detach().numpy() * sig[:, None, None] + mean[:, None, None]
    return out[:, m:-m, m:-m].astype(np.float32)


def phasecorr(data: np.ndarray, *, pixel_m: float) -> np.ndarray:
    """(T, 2) phase-correlation shifts (mean zero), as the classical methods would use."""
    return phasecorr_seed(data, pixel_m=pixel_m)


BASELINES = {
    "bicubic_one": bicubic_one,
    "bicubic_mean": bicubic_mean,
    "bicubic_median": bicubic_median,
    "shift_and_add": shift_and_add,
    "ibp": ibp,
    "map_tv": map_tv,
}
