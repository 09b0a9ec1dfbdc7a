"""A per-pixel 1-sigma uncertainty of the rendered scene (the "trust map"), from fit and stack.

Three variance components, each an array over the output grid (B, H', W') in reflectance^2,
added with weight 1 (no calibration constants)::

    sigma^2 = posterior + dates + detail

* **posterior** -- the Laplace / Gauss-Newton posterior variance of the splat weights, diagonal
  approximation: the data precision ``sum_t J_t^T W_t J_t`` (exact diagonal, from the separable
  per-axis operators: ``(A_t^2)^T W_t (B_t^2)``), with the robust loss's per-pixel weights and
  the per-date weights and gains, plus the curvature of the smoothed-TV prior (exact diagonal
  of its Hessian, closed form; for the vectorial TV and the Huber prior, the per-band TV's
  stands in), taken at the data's median composite rather than at the fit,
  so that a sharper fit does not raise it. Propagated to output pixels through the squared
  latent operator: the noise the estimate carries.
* **dates** -- a linearised jackknife over dates in the 10 m pixel space: the variance of the
  weighted mean of the per-date residuals, ``sum_t (u_t r_t)^2 / (sum_t u_t)^2``. Large where
  the dates disagree (unmasked change, haze) or are few. For a date's own scene (the
  observed-date product) it is that date's noise variance where it is seen (the scene
  follows its observation, noise and all: the posterior holds the noise of all dates
  together) and, where it is masked, the spread of the dates ``sum_t u_t r_t^2 / sum_t
  u_t`` (its state there is unknown by as much as dates differ).
* **detail** -- the expected error of the fine detail, from the stack's own evidence
  (:mod:`splatsr.core.products.error_spectrum`): the scene's power-law spectrum fitted on
  two halves of its dates, and how far the dates that see each pixel (their shifts, the PSF,
  the noise) pin down the frequencies beyond the 10 m band; spread over the scene like the
  posterior (``fast`` mode: like the local texture). For a date's own scene, the other dates
  count only as far as the date agrees with the shared scene.

All functions take and return arrays; no files. The cost: two banded (sparse) matrix products
per date and band, and a few hundred small inversions per date for the detail term (2-15 %
of a fit's time, measured in docs/uncertainty.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from splatsr.core.model import SplatGrid, output_shape
from splatsr.core.prior import TV_EPS
from splatsr.core.products.error_spectrum import (
    detail_variance,
    median_composite,
    upsample,
)
from splatsr.core.render import axis_matrix
from splatsr.core.scaling import noise_sigma
from splatsr.errors import ConfigError

COMPONENTS = ("posterior", "dates", "detail")
MODES = ("full", "fast")  # "fast" skips the posterior component
UncertaintyMode = Literal["full", "fast"]


def check_mode(mode: str) -> UncertaintyMode:
    """``mode`` if it is one of :data:`MODES`, else a :class:`ConfigError`."""
    if mode not in MODES:
        raise ConfigError(f"uncertainty mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def as_mode(uncertainty: bool | str | None) -> UncertaintyMode | None:
    """An ``uncertainty=`` option as a mode: None when off, ``"full"`` for True, else the
    mode named, checked (:func:`check_mode`)."""
    if not uncertainty:
        return None
    return check_mode("full" if uncertainty is True else uncertainty)  # type: ignore[arg-type]


def coefficients(mode: str) -> dict[str, float]:
    """The combination's coefficients of ``mode``: 1 for each component it adds."""
    used = COMPONENTS if check_mode(mode) == "full" else COMPONENTS[1:]
    return dict.fromkeys(used, 1.0)


@dataclass
class UncertaintyParts:
    """The variance components over the output grid, each (B, H', W') in reflectance^2."""

    posterior: np.ndarray
    dates: np.ndarray
    detail: np.ndarray

    def variance(self, weights: dict[str, float] | None = None) -> np.ndarray:
        """The combined variance (B, H', W'), float64: ``max(sum_k c_k * part_k, 0)``."""
        coef = coefficients("full") if weights is None else weights
        var = sum(float(coef.get(k, 0.0)) * getattr(self, k) for k in COMPONENTS)
        return np.maximum(np.asarray(var, np.float64), 0.0)

    def sigma(self, weights: dict[str, float] | None = None) -> np.ndarray:
        """The combined 1-sigma map (B, H', W'), float32: ``sqrt(sum_k c_k * part_k)``."""
        return np.sqrt(self.variance(weights)).astype(np.float32)


BAND_CUTOFF = 1e-12  # operator entries below this are dropped (the Gaussian tails)


def _sparse_rows(dense: torch.Tensor) -> Any:
    """A (N, K) operator as a CSR matrix without its negligible tails."""
    from scipy import sparse

    a = dense.numpy()
    return sparse.csr_matrix(np.where(np.abs(a) > BAND_CUTOFF, a, 0.0))


def observation_operators(grid: SplatGrid, shifts_m: np.ndarray, *, psf_sigma_m: float
                          ) -> tuple[list[Any], list[Any]]:
    """Per-date axis operators of :func:`render_observations`, banded (CSR), one per date.

    Returns ``(A_y, A_x)``: lists of T sparse matrices of shape (H, Ky) and (W, Kx); the
    prediction of date ``t`` is ``A_y[t] @ w @ A_x[t].T`` for weights ``w`` (Ky, Kx). Built one
    date at a time, so memory grows with the pixels, not pixels x splats x dates.
    """
    ay, ax = grid.axes(pixel_m=grid.pixel_m, n_y=grid.height, n_x=grid.width)
    sigma = math.hypot(grid.sigma_m, psf_sigma_m)
    s = torch.as_tensor(np.asarray(shifts_m, np.float64))
    a_y = [_sparse_rows(axis_matrix(ay, sigma_m=sigma, delta_m=-s[t:t + 1, 1])[0])
           for t in range(len(s))]  # north-positive shift -> the row axis runs south
    a_x = [_sparse_rows(axis_matrix(ax, sigma_m=sigma, delta_m=s[t:t + 1, 0])[0])
           for t in range(len(s))]
    return a_y, a_x


def latent_operators(grid: SplatGrid, *, resolution_m: float) -> tuple[Any, Any]:
    """Axis operators of :func:`render_latent` at ``resolution_m``, CSR: (H', Ky), (W', Kx)."""
    n = output_shape((grid.height * grid.pixel_m, grid.width * grid.pixel_m), resolution_m)
    ay, ax = grid.axes(pixel_m=resolution_m, n_y=n[0], n_x=n[1])
    zero = torch.zeros(1, dtype=torch.float64)
    return (_sparse_rows(axis_matrix(ay, sigma_m=grid.sigma_m, delta_m=zero)[0]),
            _sparse_rows(axis_matrix(ax, sigma_m=grid.sigma_m, delta_m=zero)[0]))


def data_precision(a_y: list[Any], a_x: list[Any], pixel_weight: np.ndarray) -> np.ndarray:
    """Exact diagonal of ``sum_t J_t^T diag(pixel_weight_t) J_t`` per band: (B, Ky, Kx).

    ``a_y``, ``a_x`` from :func:`observation_operators`, ``pixel_weight`` (T, B, H, W) >= 0
    (0 where invalid). With ``J_t = A_y[t] (x) A_x[t]`` the diagonal is
    ``(A_y[t]^2).T @ W_t @ A_x[t]^2``, summed over dates.
    """
    T, B = pixel_weight.shape[:2]
    out = np.zeros((B, a_y[0].shape[1], a_x[0].shape[1]))
    for t in range(T):
        sy, sx = a_y[t].multiply(a_y[t]).T.tocsr(), a_x[t].multiply(a_x[t]).tocsc()
        for b in range(B):
            out[b] += np.asarray((sx.T @ (sy @ pixel_weight[t, b]).T).T)
    return out


def tv_curvature(weights_n: np.ndarray, eps: float = TV_EPS) -> np.ndarray:
    """Exact diagonal of the Hessian of :func:`smoothed_tv` at ``weights_n``: (B, Ky, Kx).

    Each term ``r = sqrt(gx^2 + gy^2 + eps^2)`` with ``gx = w[i, j+1] - w[i, j]``,
    ``gy = w[i+1, j] - w[i, j]`` adds ``((gx - gy)^2 + 2 eps^2) / r^3`` to ``w[i, j]``,
    ``(gy^2 + eps^2) / r^3`` to ``w[i, j+1]`` and ``(gx^2 + eps^2) / r^3`` to ``w[i+1, j]``.
    """
    w = np.asarray(weights_n, np.float64)
    gx = w[:, :-1, 1:] - w[:, :-1, :-1]
    gy = w[:, 1:, :-1] - w[:, :-1, :-1]
    r3 = (gx * gx + gy * gy + eps * eps) ** 1.5
    diag = np.zeros_like(w)
    diag[:, :-1, :-1] += ((gx - gy) ** 2 + 2 * eps * eps) / r3
    diag[:, :-1, 1:] += (gy * gy + eps * eps) / r3
    diag[:, 1:, :-1] += (gx * gx + eps * eps) / r3
    return diag


def latent_variance(var_w: np.ndarray, l_y: Any, l_x: Any) -> np.ndarray:
    """Output-pixel variance of independent weights: ``L_y^2 @ var_w @ (L_x^2).T`` per band."""
    sy, sx = l_y.multiply(l_y).tocsr(), l_x.multiply(l_x).tocsr()
    return np.stack([np.asarray((sx @ (sy @ v).T).T) for v in var_w])


def robust_pixel_weight(residual: np.ndarray, *, noise_level: np.ndarray, loss: str,
                        robust_scale: float) -> np.ndarray:
    """IRLS weight of each residual (T, B, H, W) under the fit's loss; 0 where NaN.

    ``l2``: 1; ``cauchy``: ``1 / (1 + z^2)``; ``charbonnier``: ``1 / sqrt(1 + z^2)``, with
    ``z = residual / (noise_level * robust_scale)``.
    """
    z = residual / (np.asarray(noise_level, np.float64)[None, :, None, None] * robust_scale)
    z2 = np.where(np.isfinite(z), z * z, np.inf)
    if loss == "l2" or not np.isfinite(robust_scale):
        return np.isfinite(z).astype(np.float64)
    if loss == "charbonnier":
        return 1.0 / np.sqrt(1.0 + z2)
    if loss == "cauchy":
        return 1.0 / (1.0 + z2)
    raise ConfigError(f"unknown loss {loss!r}; use l2, charbonnier or cauchy")


def date_variance(residual: np.ndarray, weight: np.ndarray, *, factor: int) -> np.ndarray:
    """Linearised jackknife over dates, upsampled ``factor`` x: (B, H*factor, W*factor).

    ``residual`` (T, B, H, W) data minus prediction (NaN where invalid), ``weight`` (T, B, H, W)
    each date's weight at each pixel. Returns ``sum_t (u_t r_t)^2 / (sum_t u_t)^2`` per pixel
    (the delete-one variance of a weighted mean); where no date sees a pixel, the largest
    value of the band (the posterior and detail components carry the rest there).
    """
    u = np.where(np.isfinite(residual), weight, 0.0)
    ur = u * np.nan_to_num(residual)
    total = u.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(total > 0, (ur * ur).sum(0) / np.maximum(total, 1e-300) ** 2, np.inf)
    finite = np.isfinite(var)
    top = np.array([v[f].max() if f.any() else 0.0 for v, f in zip(var, finite)])
    fill = np.where(finite, var, top[:, None, None])
    return np.stack([upsample(b, factor) for b in fill])


def date_spread(residual: np.ndarray, weight: np.ndarray, *, factor: int) -> np.ndarray:
    """The weighted spread of the per-date residuals, ``sum_t u_t r_t^2 / sum_t u_t``,
    upsampled ``factor`` x: (B, H*factor, W*factor) (0 where no date sees a pixel)."""
    u = np.where(np.isfinite(residual), weight, 0.0)
    total = u.sum(0)
    spread = (u * np.nan_to_num(residual) ** 2).sum(0) / np.maximum(total, 1e-300)
    return np.stack([upsample(b, factor) for b in spread])


def composite_weights(data: np.ndarray, grid: SplatGrid) -> np.ndarray:
    """The per-pixel median over dates, interpolated (linearly) at the splat centres: (B, Ky, Kx).

    A stand-in scene that does not sharpen with more dates, where the prior's curvature is
    taken. ``data`` (T, B, H, W), NaN where invalid.
    """
    from scipy.ndimage import map_coordinates

    rows = grid.centres_m(grid.ny).numpy() / grid.pixel_m - 0.5  # in pixel-centre units
    cols = grid.centres_m(grid.nx).numpy() / grid.pixel_m - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([map_coordinates(band, [rr, cc], order=1, mode="nearest")
                     for band in median_composite(data)])


def posterior_variance(result: Any, *, resolution_m: float, pixel_weight: np.ndarray,
                       scale: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Diagonal Gauss-Newton posterior variance propagated to the output grid (B, H', W').

    ``result`` is a fit (:class:`~splatsr.core.solver.FitResult`), ``pixel_weight`` (T, B, H,
    W) the robust and per-date weights times the gain^2, ``scale`` (B,) the solver's per-band
    normalisation and data noise estimate (:func:`~splatsr.core.scaling.noise_sigma`).

    Two choices keep the term from growing with more dates or less noise: the noise variance
    is ``scale^2`` (from the data, not from the fit's residuals, which a fit of few dates
    follows more closely), and the prior's curvature is taken at ``reference`` (B, Ky, Kx),
    splat weights from the data's composite (:func:`composite_weights`), not at the fit (a fit
    of more dates is sharper, with less TV curvature at its edges).
    """
    cfg, grid = result.config, result.grid
    psf_m = float(np.mean(cfg.psf_widths_m()))  # per-band widths: one operator at their mean
    a_y, a_x = observation_operators(grid, result.shifts_m, psf_sigma_m=psf_m)
    precision = data_precision(a_y, a_x, pixel_weight)  # (B, Ky, Kx), per unit noise variance
    tv_weight = result.tv_weight_used()
    if tv_weight:
        s_fit = np.asarray(result.noise_level, np.float64) / scale  # prior strength, normalised
        ref = tv_curvature(reference / scale[:, None, None])
        precision = precision + ref * (tv_weight * s_fit)[:, None, None]
    var_w = np.minimum((scale * scale)[:, None, None] / np.maximum(precision, 1e-30), 1e6)
    l_y, l_x = latent_operators(grid, resolution_m=resolution_m)
    return latent_variance(var_w, l_y, l_x)


def fit_uncertainty(result: Any, data: np.ndarray, *, resolution_m: float,
                    mode: str = "full", own: int | None = None) -> UncertaintyParts:
    """The variance components of a fit's scene at ``resolution_m``.

    Parameters
    ----------
    result
        The fit (:class:`~splatsr.core.solver.FitResult`) of ``data``.
    data
        (T, B, H, W) reflectance that was fitted, NaN where invalid.
    resolution_m
        Output pixel size (must divide the raster extent).
    mode
        ``"full"`` (all components) or ``"fast"`` (no posterior: the dates and detail terms,
        a few per cent of a fit's time).
    own
        The index (in ``data``) of the date whose observed-date scene is rendered (the
        series product); default: the fit's own target date when it rendered one
        (``result.date_scene``), else None (the fit's shared scene).

    Returns
    -------
    UncertaintyParts
    """
    check_mode(mode)
    data = np.asarray(data, np.float64)
    cfg, grid = result.config, result.grid
    residual = data - result.predict().astype(np.float64)  # (T, B, H, W), NaN where invalid
    irls = robust_pixel_weight(residual, noise_level=result.noise_level, loss=cfg.loss,
                               robust_scale=cfg.robust_scale)
    obs_w = np.ones(data.shape[0]) if result.obs_weights is None else result.obs_weights
    weight = irls * np.asarray(obs_w, np.float64)[:, None, None, None]
    factor = round(grid.pixel_m / resolution_m)
    if abs(factor * resolution_m - grid.pixel_m) > 1e-6 * grid.pixel_m:
        raise ConfigError(f"uncertainty needs an output pixel that divides {grid.pixel_m:g} m "
                          f"by a whole number (e.g. 5 or 2.5 m), got {resolution_m:g} m")
    if own is None and getattr(result, "date_scene", None) is not None:
        own = result.date_scene.index
    if own is None:
        dates = date_variance(residual, weight, factor=factor)
    else:  # a date's own scene follows that date, and its noise, where it is seen
        seen = np.stack([upsample(v.astype(np.float64), factor)
                         for v in np.isfinite(data[own])]) > 0.5
        own_noise = np.array([noise_sigma(r[None]) ** 2 for r in residual[own]])  # (B,)
        dates = np.where(seen, own_noise[:, None, None],
                         date_spread(residual, weight, factor=factor))
    post = None
    if mode == "full":
        gains = np.ones(data.shape[:2]) if result.gains is None else result.gains
        pw = np.where(np.isfinite(residual), weight, 0.0) * (gains * gains)[:, :, None, None]
        scale = np.array([noise_sigma(data[:, b]) for b in range(data.shape[1])])
        post = posterior_variance(result, resolution_m=resolution_m, pixel_weight=pw,
                                  scale=scale, reference=composite_weights(data, grid))
    psf = np.broadcast_to(np.asarray(cfg.psf_widths_m(), np.float64), (data.shape[1],))
    detail = detail_variance(data, np.asarray(result.shifts_m, np.float64),
                             pixel_m=grid.pixel_m, factor=factor, psf_sigma_m=psf,
                             date_weights=obs_w, own=own,
                             own_residual=None if own is None else residual[own],
                             shape=None if post is None else posterior_shape(post))
    return UncertaintyParts(posterior=np.zeros_like(detail) if post is None else post,
                            dates=dates, detail=detail)


def posterior_shape(post: np.ndarray) -> np.ndarray:
    """(B, H', W') the posterior variance over its band mean: where the data hold the scene
    least (edges, few dates, down-weighted pixels), used as the detail term's shape (on the
    tuning sets it ranked the errors better than the texture: Spearman 0.71 / 0.58 against
    0.66 / 0.51 on the known-truth crops / real windows, docs/uncertainty.md)."""
    mean = post.mean(axis=(1, 2), keepdims=True)
    return np.where(mean > 0, post / np.maximum(mean, 1e-300), 1.0)


def sigma_map(result: Any, data: np.ndarray, *, resolution_m: float, mode: str = "full",
              scene: np.ndarray | None = None, own: int | None = None,
              frame_shift_m: tuple[float, float] | None = None) -> np.ndarray:
    """The 1-sigma map (B, H', W') float32 of ``mode``, NaN where ``scene`` is NaN
    (``own``: as :func:`fit_uncertainty`), in the product's frame: ``frame_shift_m``
    (dx_m, dy_m) is where that frame lies in ``result``'s (default: the fit's own date
    scene's :attr:`~splatsr.core.products.observed.DateScene.frame_shift_m`, else none)."""
    parts = fit_uncertainty(result, data, resolution_m=resolution_m, mode=mode, own=own)
    if frame_shift_m is None and own is None and getattr(result, "date_scene", None) is not None:
        frame_shift_m = result.date_scene.frame_shift_m
    variance = parts.variance(coefficients(mode))
    sigma = np.sqrt(in_frame(variance, frame_shift_m or (0.0, 0.0), resolution_m=resolution_m))
    if scene is not None:
        sigma = np.where(np.isfinite(scene), sigma, np.nan)
    return sigma.astype(np.float32)


def in_frame(image: np.ndarray, shift_m: tuple[float, float], *, resolution_m: float
             ) -> np.ndarray:
    """(B, H', W') ``image`` displaced as :func:`~splatsr.core.model.render_latent` displaces
    a scene rendered with ``shift_m`` = (dx_m east, dy_m north): bilinear, edges repeated.

    A date scene from another fit is rendered in the product's frame that way; its map
    must move with it (a 2.6 m move is one 2.5 m output pixel)."""
    dx, dy = (float(v) / resolution_m for v in shift_m)
    if dx == 0.0 and dy == 0.0:
        return image
    from scipy import ndimage  # here: only a product in another fit's frame needs it
    return np.stack([ndimage.shift(band, (-dy, dx), order=1, mode="nearest")
                     for band in np.asarray(image, np.float64)])
