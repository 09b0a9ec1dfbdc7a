"""A per-pixel 1-sigma uncertainty of the fitted scene (the "trust map"), from the fit itself.

Three variance components, each an array over the output grid (B, H', W') in reflectance^2,
then combined with coefficients calibrated on simulated stacks with known truth
(``benchmarks/uncertainty.py``, ``docs/uncertainty.md``)::

    sigma^2 = a * posterior + b * dates + c * texture

* **posterior** -- the Laplace / Gauss-Newton posterior variance of the splat weights, diagonal
  approximation: the data precision ``sum_t J_t^T W_t J_t`` (exact diagonal, from the separable
  per-axis operators: ``(A_t^2)^T W_t (B_t^2)``), with the robust loss's per-pixel weights and
  the per-date weights and gains, plus the curvature of the smoothed-TV prior (exact diagonal
  of its Hessian, closed form), taken at the data's median composite rather than at the fit,
  so that a sharper fit does not raise it. Propagated to output pixels through the squared
  latent operator. Large at edges (the prior does not hold the scene there), where few dates
  see a pixel (clouds) and where outliers were down-weighted.
* **dates** -- a linearised jackknife over dates in the 10 m pixel space: the variance of the
  weighted mean of the per-date residuals, ``sum_t (u_t r_t)^2 / (sum_t u_t)^2``. Large where
  the dates disagree (unmasked change, haze) or are few.
* **texture** -- the signal the data cannot resolve: the local energy of the observed detail
  at the pixel scale (the median composite minus its one-pixel Gaussian blur, squared and
  averaged over a pixel), upsampled. Detail at the limit of the pass band marks detail beyond
  it, which no fit recovers exactly: super-resolution errors concentrate at edges and fine
  texture. Taken from the data rather than the fitted scene, so a sharper fit (more dates)
  does not raise it.

All functions take and return arrays; no files. The cost is dominated by two banded (sparse)
matrix products per date and band (a few per cent of a fit's time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from splatsr.core.model import SplatGrid, output_shape
from splatsr.core.prior import TV_EPS
from splatsr.core.render import axis_matrix
from splatsr.core.scaling import noise_sigma
from splatsr.errors import ConfigError

COMPONENTS = ("posterior", "dates", "texture")
# Coefficients (a, b, c) of the combination, calibrated on simulated stacks of real 10 m texture
# (crops not used by the benchmark; see docs/uncertainty.md and benchmarks/uncertainty.py).
CALIBRATION: dict[str, float] = {"posterior": 3.033, "dates": 0.725, "texture": 0.0}
MODES = ("full", "fast")  # "fast" skips the posterior component
UncertaintyMode = Literal["full", "fast"]
FAST: dict[str, float] = {"dates": 8.690, "texture": 0.7550}  # the calibration of mode="fast"


def check_mode(mode: str) -> UncertaintyMode:
    """``mode`` if it is one of :data:`MODES`, else a :class:`ConfigError`."""
    if mode not in MODES:
        raise ConfigError(f"uncertainty mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def calibration(mode: str) -> dict[str, float]:
    """The combination's coefficients of ``mode`` (``"full"``: :data:`CALIBRATION`)."""
    return dict(CALIBRATION if check_mode(mode) == "full" else FAST)


@dataclass
class UncertaintyParts:
    """The variance components over the output grid, each (B, H', W') in reflectance^2."""

    posterior: np.ndarray
    dates: np.ndarray
    texture: np.ndarray

    def sigma(self, coefficients: dict[str, float] | None = None) -> np.ndarray:
        """The combined 1-sigma map (B, H', W'), float32: ``sqrt(sum_k c_k * part_k)``."""
        coef = CALIBRATION if coefficients is None else coefficients
        var = sum(float(coef.get(k, 0.0)) * getattr(self, k) for k in COMPONENTS)
        return np.sqrt(np.maximum(var, 0.0)).astype(np.float32)


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
    value of the band (the posterior and texture components carry the rest there).
    """
    from scipy.ndimage import gaussian_filter

    u = np.where(np.isfinite(residual), weight, 0.0)
    ur = u * np.nan_to_num(residual)
    total = u.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(total > 0, (ur * ur).sum(0) / np.maximum(total, 1e-300) ** 2, np.inf)
    finite = np.isfinite(var)
    top = np.array([v[f].max() if f.any() else 0.0 for v, f in zip(var, finite)])
    fill = np.where(finite, var, top[:, None, None])
    up = np.repeat(np.repeat(fill, factor, axis=1), factor, axis=2)
    return np.stack([gaussian_filter(b, factor / 2.0, mode="nearest") for b in up])


def texture_energy(data: np.ndarray, *, factor: int) -> np.ndarray:
    """Local energy of the observed detail at the pixel scale, upsampled: (B, H*f, W*f).

    ``data`` (T, B, H, W), NaN where invalid. The per-pixel median over dates (a composite
    that unmasked clouds barely move) minus its Gaussian blur of one pixel, squared and
    averaged over a one-pixel Gaussian window: where the observations hold edges and fine
    texture, the scene has detail beyond their pass band that no fit recovers exactly. It
    depends on the data, not on the fit, so more dates or less noise only lower it.
    """
    import warnings

    from scipy.ndimage import gaussian_filter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels are filled below
        comp = np.nanmedian(np.asarray(data, np.float64), axis=0)  # (B, H, W)
    out = []
    for band in comp:
        fill = np.where(np.isfinite(band), band, np.nanmean(band) if np.isfinite(band).any()
                        else 0.0)
        detail = fill - gaussian_filter(fill, 1.0, mode="nearest")
        energy = gaussian_filter(detail * detail, 1.0, mode="nearest")
        up = np.repeat(np.repeat(energy, factor, axis=0), factor, axis=1)
        out.append(gaussian_filter(up, factor / 2.0, mode="nearest"))
    return np.stack(out)


def composite_weights(data: np.ndarray, grid: SplatGrid) -> np.ndarray:
    """The per-pixel median over dates, interpolated (linearly) at the splat centres: (B, Ky, Kx).

    A stand-in scene that does not sharpen with more dates, where the prior's curvature is
    taken. ``data`` (T, B, H, W), NaN where invalid.
    """
    import warnings

    from scipy.ndimage import map_coordinates

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels are filled below
        comp = np.nanmedian(np.asarray(data, np.float64), axis=0)
    rows = grid.centres_m(grid.ny).numpy() / grid.pixel_m - 0.5  # in pixel-centre units
    cols = grid.centres_m(grid.nx).numpy() / grid.pixel_m - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    out = []
    for band in comp:
        fill = np.where(np.isfinite(band), band, np.nanmean(band) if np.isfinite(band).any()
                        else 0.0)
        out.append(map_coordinates(fill, [rr, cc], order=1, mode="nearest"))
    return np.stack(out)


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
    if cfg.tv_weight:
        s_fit = np.asarray(result.noise_level, np.float64) / scale  # prior strength, normalised
        ref = tv_curvature(reference / scale[:, None, None])
        precision = precision + ref * (cfg.tv_weight * s_fit)[:, None, None]
    var_w = np.minimum((scale * scale)[:, None, None] / np.maximum(precision, 1e-30), 1e6)
    l_y, l_x = latent_operators(grid, resolution_m=resolution_m)
    return latent_variance(var_w, l_y, l_x)


def fit_uncertainty(result: Any, data: np.ndarray, *, resolution_m: float,
                    mode: str = "full") -> UncertaintyParts:
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
        ``"full"`` (all components) or ``"fast"`` (no posterior: residuals and texture only,
        a few per cent of a fit's time; its calibration is separate, see :data:`FAST`).

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
    dates = date_variance(residual, weight, factor=factor)
    texture = texture_energy(data, factor=factor)
    if mode == "fast":
        return UncertaintyParts(posterior=np.zeros_like(texture), dates=dates, texture=texture)
    gains = np.ones(data.shape[:2]) if result.gains is None else result.gains
    pw = np.where(np.isfinite(residual), weight, 0.0) * (gains * gains)[:, :, None, None]
    scale = np.array([noise_sigma(data[:, b]) for b in range(data.shape[1])])
    post = posterior_variance(result, resolution_m=resolution_m, pixel_weight=pw, scale=scale,
                              reference=composite_weights(data, grid))
    return UncertaintyParts(posterior=post, dates=dates, texture=texture)


def sigma_map(result: Any, data: np.ndarray, *, resolution_m: float, mode: str = "full",
              scene: np.ndarray | None = None) -> np.ndarray:
    """The calibrated 1-sigma map (B, H', W') float32, NaN where ``scene`` is NaN."""
    parts = fit_uncertainty(result, data, resolution_m=resolution_m, mode=mode)
    sigma = parts.sigma(calibration(mode))
    if scene is not None:
        sigma = np.where(np.isfinite(scene), sigma, np.nan).astype(np.float32)
    return sigma
