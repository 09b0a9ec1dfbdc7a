"""The observed-date scene: one acquisition, sharper, consistent with its own observation.

A joint fit explains every date by one shared fine scene ``w`` plus that date's radiometry and
change layer. Where a date departs from the shared scene beyond what the layer absorbs (a
harvested field, a flood, a new roof) its prediction misses its observation, and a product
that renders the shared scene paints the other dates' state. The observed-date scene of date
``t`` therefore adds the smallest correction of the splat weights that makes the sensor model
of that date (its shift, band offsets, PSF, pixel integration) reproduce its observation as far
as it stands out of the noise::

    scene_t = g_t * L(w) + o_t + U(c_t) + L(dw_t)
    dw_t    = A^T z,  (A A^T + lam) z = r_t          (A = D_t, the date's sensor)

``L`` renders splat weights to the output grid (no PSF), ``U(c_t)`` is the date's change
layer, ``r_t = y_t - prediction_t`` its residual (0 where it is masked, so the fit stands
there). The correction lies in the span of ``D_t``'s adjoint: it holds the 10 m-scale content
the date observed and nothing finer, so the fine detail stays the shared scene's where the
date agrees with it. The Tikhonov weight ``lam`` is chosen per date and band by the unbiased
predictive risk (Mallows' C_p) for the noise of that date's residual (its robust diagonal
second difference, :func:`~splatsr.core.scaling.noise_sigma`, which a smooth change leaves
out): a date within the noise of the shared scene gets no correction, a changed field gets
the date's own state. Against the fit's pooled noise level this gained +0.1 to +0.6 dB on
three real windows, and a risk-chosen ``lam`` was within 0.05 dB of the best of
``lam`` x {0.01, 0.1, 1, 10, 100} (docs/date_products.md). ``D_t`` is
separable, ``D_t(w) = A_y w A_x^T`` per band, so with the eigenvectors of ``G_y = A_y A_y^T``
and ``G_x = A_x A_x^T`` every ``lam`` costs one division per coefficient
(:func:`min_norm_correction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

import splatsr.core.render as _r
from splatsr.core.model import SplatGrid, render_latent
from splatsr.core.scaling import noise_sigma

if TYPE_CHECKING:
    from splatsr.core.result import FitResult

LAMBDA_BRACKET = (1e-10, 1e4)  # search range of the Tikhonov weight, relative to max eigenvalue


def axis_operators(grid: SplatGrid, *, shift_m: tuple[float, float], psf_sigma_m: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense sensor operators of one date and band: (A_y (H, Ky), A_x (W, Kx)), float64.

    ``shift_m`` = (dx_m east, dy_m north) as in :func:`splatsr.core.model.render_observations`.
    """
    ay, ax = grid.axes(pixel_m=grid.pixel_m, n_y=grid.height, n_x=grid.width)
    sigma = math.hypot(grid.sigma_m, psf_sigma_m)
    dx, dy = (torch.tensor([float(v)], dtype=torch.float64) for v in shift_m)
    a_y = _r.axis_matrix(ay, sigma_m=sigma, delta_m=-dy)[0]  # rows run south: -north
    a_x = _r.axis_matrix(ax, sigma_m=sigma, delta_m=dx)[0]
    return a_y, a_x


def min_norm_correction(residual: np.ndarray, a_y: torch.Tensor, a_x: torch.Tensor, *,
                        noise_sigma: float) -> np.ndarray:
    """(Ky, Kx) splat-weight correction ``dw`` whose render ``A_y dw A_x^T`` reproduces
    ``residual`` (H, W) (0 where invalid) as far as it stands out of noise of ``noise_sigma``.

    Tikhonov ``dw = A_y^T Z A_x`` with ``G_y Z G_x + lam Z = r``, ``lam`` chosen by the
    unbiased predictive risk estimator (:func:`risk_lambda`). Zero when no ``lam`` in the
    search range predicts better than no correction.
    """
    r = torch.from_numpy(np.nan_to_num(np.asarray(residual, np.float64)))
    ly, uy = torch.linalg.eigh(a_y @ a_y.T)  # (H,), (H, H)
    lx, ux = torch.linalg.eigh(a_x @ a_x.T)  # (W,), (W, W)
    s = ly.clamp_min(0)[:, None] * lx.clamp_min(0)[None]  # (H, W) eigenvalues of G_y (x) G_x
    rh = uy.T @ r @ ux  # (H, W) residual in the eigenbasis
    lam = risk_lambda(s, rh, noise_sigma=noise_sigma)
    if lam is None:
        return np.zeros((a_y.shape[1], a_x.shape[1]))
    z = uy @ (rh / (s + lam)) @ ux.T  # (H, W)
    return (a_y.T @ z @ a_x).numpy()  # (Ky, Kx)


def risk_lambda(s: torch.Tensor, rh: torch.Tensor, *, noise_sigma: float,
                n_grid: int = 81) -> float | None:
    """The Tikhonov weight that minimises the unbiased predictive risk (Mallows' C_p),
    ``||r - A x_lam||^2 + 2 sigma^2 tr(A_lam)``, over a log grid spanning
    ``LAMBDA_BRACKET`` x ``max(s)``; None when the weakest correction on the grid (its
    largest ``lam``) is the best, i.e. the residual does not stand out of the noise.

    ``s`` are the eigenvalues of ``A A^T`` and ``rh`` the residual in their eigenbasis.
    """
    lo, hi = (math.log(v * float(s.max())) for v in LAMBDA_BRACKET)
    lams = torch.exp(torch.linspace(lo, hi, n_grid, dtype=torch.float64))  # (L,)
    sv, r2 = s.reshape(1, -1), (rh * rh).reshape(1, -1)
    keep = lams[:, None] / (sv + lams[:, None])  # (L, N) share of each coefficient left
    risk = (keep * keep * r2).sum(1) + 2 * noise_sigma ** 2 * (1 - keep).sum(1)  # (L,)
    best = int(torch.argmin(risk))
    return None if best == n_grid - 1 else float(lams[best])


@dataclass
class DateScene:
    """One date's scene in splat space: render it at any resolution (:meth:`render`)."""

    index: int  # the observation (date) it shows
    weights: np.ndarray  # (B, Ky, Kx) gain x shared weights + correction, that date's reflectance
    offset: np.ndarray  # (B,) that date's radiometric offset, reflectance
    corrected: np.ndarray  # (B,) True where the observation moved the scene beyond the noise
    # the same date's scene from another fit of the same dates, and that fit: the render is
    # the mean of the two (splatsr.core.solver.blend_season)
    partner: tuple[DateScene, FitResult] | None = None
    # where the date is masked beyond its bridged gaps, (B, H, W) bool at its pixels: the
    # same date's scene from a fit of the dates near in time (no own window) and that fit,
    # used there instead (splatsr.core.solver.fill_masked)
    fill: tuple[DateScene, FitResult, np.ndarray] | None = None
    # (dx_m, dy_m) where the product's frame lies in this scene's fit: the scene is rendered
    # displaced by it (splatsr.core.model.render_latent), so that scenes from several fits,
    # each in the mean-zero frame of its own dates, land in one frame (a blend: the season
    # fit's; a series: the mean of all its dates'); the smooth change layer is not moved
    frame_shift_m: tuple[float, float] = (0.0, 0.0)

    def render(self, result: FitResult, resolution_m: float) -> np.ndarray:
        """(B, H', W') the scene at ``resolution_m``, with the date's change layer (float32);
        :attr:`fill`'s where the date is masked, when there is one; the mean with
        :attr:`partner`'s, when there is one; in the frame :attr:`frame_shift_m` says."""
        with torch.no_grad():
            img = render_latent(torch.from_numpy(self.weights.astype(np.float64)),
                                grid=result.grid, resolution_m=resolution_m,
                                shift_m=self.frame_shift_m).numpy()
        img += self.offset[:, None, None]
        change = result.change_of(self.index, resolution_m)
        if change is not None:
            img += change
        if self.fill is not None:
            scene, fit, masked = self.fill
            img = np.where(nearest_pixels(masked, img.shape[1:]), scene.render(fit, resolution_m),
                           img)
        if self.partner is not None:
            scene, fit = self.partner
            img = 0.5 * (img + scene.render(fit, resolution_m))
        return img.astype(np.float32)


def frame_shift(result: FitResult, reference: FitResult, t: int, t_ref: int | None = None
                ) -> tuple[float, float]:
    """(dx_m, dy_m) where ``reference``'s frame lies in ``result``'s, two fits of one date
    (its index ``t`` in ``result``, ``t_ref`` in ``reference``, default the same): each
    fit's shifts are mean-zero over its own dates and the date sits at its shift in either,
    so the frames differ by the difference of its shifts. Render a scene of ``result`` with
    this :attr:`DateScene.frame_shift_m` to put it in ``reference``'s frame.

    A fit that weighs the dates by time leaves the far dates' shifts near where they
    started, which moves its frame towards the asked date's geometry: as they came, the
    two scenes of a blend were up to 2-3 m apart on real windows (docs/date_products.md)."""
    dx, dy = (np.asarray(result.shifts_m[t], np.float64)
              - reference.shifts_m[t if t_ref is None else t_ref])
    return float(dx), float(dy)


def nearest_pixels(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(B, H', W') ``mask`` (B, H, W) read at the output pixels of ``shape`` (H', W'): each
    output pixel takes the input pixel its centre falls in."""
    H, W = mask.shape[1:]
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * H / shape[0]).astype(int), H - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * W / shape[1]).astype(int), W - 1)
    return mask[:, rows][:, :, cols]


def date_scene(result: FitResult, observation: np.ndarray, t: int) -> DateScene:
    """Date ``t``'s scene, whose sensor view reproduces ``observation`` (B, H, W) (NaN
    where invalid) to within the noise; ``result`` is the
    :class:`~splatsr.core.result.FitResult` of a fit that included date ``t`` (see the
    module docstring)."""
    pred = result.predict(dates=[t])[0].astype(np.float64)  # (B, H, W)
    resid = np.asarray(observation, np.float64) - pred
    ok = np.isfinite(resid)
    B = len(pred)
    psf = np.broadcast_to(np.asarray(result.config.psf_widths_m(), np.float64), (B,))
    gain = np.ones(B) if result.gains is None else result.gains[t]
    offset = np.zeros(B) if result.offsets is None else result.offsets[t]
    w = result.weights.astype(np.float64) * gain[:, None, None]
    corrected = np.zeros(B, bool)
    for b in range(B):
        shift = result.shifts_m[t] + (0.0 if result.band_offsets_m is None
                                      else result.band_offsets_m[b])
        a_y, a_x = axis_operators(result.grid, shift_m=(shift[0], shift[1]),
                                  psf_sigma_m=float(psf[b]))
        dw = min_norm_correction(np.where(ok[b], resid[b], 0.0), a_y, a_x,
                                 noise_sigma=noise_sigma(resid[None, b]))
        w[b] += dw
        corrected[b] = bool(np.any(dw))
    return DateScene(t, w.astype(np.float32), offset, corrected)
