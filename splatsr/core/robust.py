"""Robust pieces of the fit: data-term losses, per-date gain/offset, outlier weights, noise.

Real stacks are not the simulator: haze and thin cloud that the cloud mask misses, shadows,
and per-date radiometric offsets. The solver uses these pieces by default:

* **Radiometry**: observation ``t`` of band ``b`` is modelled as ``exp(a[t, b]) * render + o[t,
  b]``; ``a`` and ``o`` are fitted jointly with the scene and kept mean-zero over the dates
  while fitting (the scene absorbs the common level). After the fit the scene is re-expressed
  in the radiometry of the *median* date (:func:`regauge`), so one hazy date does not move it.
* **A robust data term** (:func:`rho`): the Cauchy (Lorentzian) loss, redescending, so a cloud
  or a shadow has bounded and vanishing pull; its scale is ``robust_scale`` times the noise
  level estimated from the residuals (:func:`robust_sigma`), i.e. from the data.
* **Observation weights** (:func:`observation_weights`): a date whose robust residual spread is
  well above the stack's typical one (haze, a misregistered or changed date) is down-weighted
  as a whole; the weights are reported per observation.
* **The noise level** in which the TV weight and the loss scale are expressed is re-estimated
  from the residuals of the first fitted level (:func:`robust_sigma`), not taken from the
  pixel-scale estimate :func:`splatsr.core.solver.noise_sigma` (an upper bound that texture inflates):
  a noise-based rule for the regulariser's weight that needs no extra fits.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from splatsr.core.scalars import scalar
from splatsr.errors import ConfigError

LOSSES = ("l2", "charbonnier", "cauchy")
# Scales giving 95 % asymptotic efficiency on Gaussian noise (in units of the noise sigma).
EFFICIENT_SCALE = {"l2": float("inf"), "charbonnier": 1.345, "cauchy": 2.385}
MIN_SIGMA = 0.05  # floor of a re-estimated noise level, in units of the initial estimate
# Ceiling of the re-estimated noise level: the initial estimate (pixel-scale differences,
# :func:`splatsr.core.scaling.noise_sigma`) is an upper bound of the noise, so residuals above
# it are not noise but change between dates (crops, soil, haze). Without the ceiling, real
# series raised the level 4.5-7.8-fold and with it the TV weight: posterized blobs.
MAX_SIGMA = 1.0
# Bound of a date's (centred) log gain: an overflow guard, not a prior. Where the scene is
# flat (pure noise) a date's gain is undetermined and L-BFGS once let it run off to exp(50),
# an overflow; within the bound gains are free (a bound of log 8 raised the pure-noise
# hallucination ratio from 0.70 to 1.01: it moves the fits it is meant to leave alone).
MAX_LOG_GAIN = 30.0
# A date brighter than the dates' median by this many noise units in every band (of two or
# more) is a cloud the mask missed (the fetched stack's SCL let through dates +0.5 reflectance
# in the visible bands: 200 units); the starting scene leaves it out (:func:`bright_dates`).
BRIGHT_UNITS = 20.0


def check_loss(loss: str) -> None:
    """Raise :class:`ConfigError` unless ``loss`` is one of :data:`LOSSES`."""
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")


def rho(r: torch.Tensor, *, loss: str, scale: float) -> torch.Tensor:
    """Elementwise data-term penalty of residuals ``r``; all equal ``r**2 / 2`` near zero.

    Parameters
    ----------
    r
        Residuals (any shape), in noise units.
    loss
        ``"l2"``, ``"charbonnier"`` (pseudo-Huber: ``c**2 (sqrt(1 + (r/c)**2) - 1)``, convex,
        linear tails) or ``"cauchy"`` (``c**2 / 2 log(1 + (r/c)**2)``, redescending).
    scale
        ``c``, in the units of ``r``.
    """
    if loss == "l2" or not np.isfinite(scale):
        return 0.5 * r * r
    z = r / scale
    if loss == "charbonnier":
        z2 = z * z  # c^2 (sqrt(1 + z^2) - 1), written without cancellation near zero
        return scale * scale * z2 / (torch.sqrt(1.0 + z2) + 1.0)
    if loss == "cauchy":
        return 0.5 * scale * scale * torch.log1p(z * z)
    raise ConfigError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")


def robust_sigma(r: torch.Tensor, mask: torch.Tensor, dim: tuple[int, ...] | None = None
                 ) -> torch.Tensor:
    """1.4826 x the median absolute residual over valid pixels (a Gaussian-consistent sigma).

    ``r`` and ``mask`` are (T, B, H, W); ``dim`` = None gives one number, ``dim=(1, 2, 3)``
    one per observation (NaN where an observation has no valid pixel).
    """
    a = torch.where(mask > 0, r.abs(), torch.full_like(r, float("nan")))
    if dim is None:
        return 1.4826 * torch.nanmedian(a)
    flat = a.reshape(a.shape[0], -1)
    return 1.4826 * torch.nanmedian(flat, dim=1).values


def observation_weights(r: torch.Tensor, mask: torch.Tensor, *, tolerance: float = 2.0
                        ) -> torch.Tensor:
    """(T,) weights in (0, 1]: ``min(1, (tolerance * median_t s_t / s_t)**2)``.

    ``s_t`` is the robust residual spread of observation ``t`` (:func:`robust_sigma`), so a date
    whose residuals are ``k`` times the typical spread (``k > tolerance``) counts as if its
    noise were ``k / tolerance`` times larger. Dates without valid pixels get weight 1 (they
    contribute nothing anyway).
    """
    s = robust_sigma(r, mask, dim=(1, 2, 3))
    ok = torch.isfinite(s) & (s > 0)
    if not ok.any():
        return torch.ones_like(s)
    ref = torch.median(s[ok])
    w = torch.clamp((tolerance * ref / torch.where(ok, s, ref)) ** 2, max=1.0)
    return torch.where(ok, w, torch.ones_like(w))


def apply_radiometry(pred: torch.Tensor, log_gain: torch.Tensor, offset: torch.Tensor
                     ) -> torch.Tensor:
    """``exp(a) * pred + o`` per (observation, band); ``pred`` is (T, B, H, W), ``log_gain``
    ``a`` and ``offset`` ``o`` are (T, B) (the caller keeps them mean-zero over the dates);
    ``a`` is clipped to +-:data:`MAX_LOG_GAIN`."""
    T, B = log_gain.shape
    gain = torch.exp(log_gain.clamp(-MAX_LOG_GAIN, MAX_LOG_GAIN))
    return torch.addcmul(offset.view(T, B, 1, 1), pred, gain.view(T, B, 1, 1))


def penalty_sum(r: torch.Tensor, *, inv_scale: torch.Tensor, weight: torch.Tensor,
                loss: str) -> torch.Tensor:
    """``sum(weight * f(r * inv_scale))``: the weighted data term in one autograd node.

    ``f`` is the shape of :func:`rho` at unit scale without its constant: ``u**2`` (l2),
    ``sqrt(1 + u**2) - 1`` (charbonnier) or ``log1p(u**2)`` (cauchy); ``weight`` (same shape
    as ``r``) carries the mask, the date weights and the constant. The backward pass is
    written out (``f'``), a few operations whatever the stack size.
    """
    check_loss(loss)
    return _PenaltySum.apply(r, inv_scale, weight, loss)


class _PenaltySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, k, weight, loss: str):  # noqa: D401
        u = r * k
        q = u * u
        if loss == "cauchy":
            f = torch.log1p(q)
        elif loss == "charbonnier":  # sqrt(1 + q) - 1 without cancellation near zero
            root = torch.sqrt(q + scalar(1.0, like=q))
            f = q / (root + scalar(1.0, like=q))
            q = root  # backward needs sqrt(1 + q)
        else:
            f = q
        ctx.save_for_backward(u, q, weight, k)
        ctx.loss = loss
        return torch.dot(f.view(-1), weight.reshape(-1))

    @staticmethod
    def backward(ctx, grad):
        u, q, weight, k = ctx.saved_tensors
        if ctx.loss == "cauchy":  # f' = 2u / (1 + q)
            g = (u * weight).div_(q + scalar(1.0, like=q))
            c = grad * k * scalar(2.0, like=q)
        elif ctx.loss == "charbonnier":  # f' = u / sqrt(1 + q)
            g = (u * weight).div_(q)
            c = grad * k
        else:  # f' = 2u
            g = u * weight
            c = grad * k * scalar(2.0, like=q)
        return g.mul_(c), None, None, None


def date_lift(data: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(T, B) median over each date's valid pixels of ``data`` (T, B, H, W) (NaN invalid)
    minus ``reference`` (B, H, W): how much brighter each date is than the reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a band with no valid pixel
        return np.stack([np.nanmedian((d - reference).reshape(len(d), -1), axis=1)
                         for d in data])  # one date at a time (memory)


def bright_dates(data: np.ndarray, median: np.ndarray, *, units: float = BRIGHT_UNITS
                 ) -> np.ndarray:
    """(T,) True for the dates of a normalised stack ``data`` (T, B, H, W), noise units, NaN
    where invalid, that are brighter than ``median`` (B, H, W), the per-pixel median of the
    dates, by more than ``units`` in every band: a cloud, haze or snow that the mask missed
    (a change of the ground raises some bands and lowers others). None with a single band
    (an index such as NDVI rises with growth), or when half or more of the dates would be
    (then they are the season, not outliers).

    The per-pixel median rejects such a date where most dates are valid, not where clouds
    leave few: measured on a real 7-date window whose SCL let a cloud through, a starting
    scene with it cost the target-date fit 5.4 dB (docs/dynamic_scene.md).
    """
    T, B = data.shape[:2]
    if B < 2:
        return np.zeros(T, bool)
    bright = (date_lift(data, median) > units).all(axis=1)
    return bright if 2 * bright.sum() < T else np.zeros(T, bool)


def weighted_median(x: np.ndarray, w: np.ndarray, *, mean_of_middle: bool = False
                    ) -> np.ndarray:
    """Median of ``x`` (T, ...) over axis 0 with date weights ``w`` (T,) >= 0, NaN ignored.

    The smallest value whose cumulative weight reaches half the total (the lower median;
    with equal weights and odd T the ordinary median). With ``mean_of_middle``, where the
    weight splits exactly in half, the mean of the two values on either side: equal weights
    then give :func:`numpy.nanmedian`. NaN where no date has weight.
    """
    w = np.broadcast_to(np.asarray(w, np.float64).reshape(-1, *[1] * (x.ndim - 1)),
                        x.shape) * np.isfinite(x)
    order = np.argsort(np.where(np.isfinite(x), x, np.inf), axis=0, kind="stable")
    xs = np.take_along_axis(x, order, axis=0)
    cw = np.cumsum(np.take_along_axis(w, order, axis=0), axis=0)
    half = 0.5 * cw[-1:]
    k = np.argmax(cw >= half, axis=0)[None]  # first date reaching half the weight
    med = np.take_along_axis(xs, k, axis=0)[0]
    if mean_of_middle:
        nxt = np.argmax(cw > half * (1 + 1e-12), axis=0)[None]  # first date past half
        hi = np.take_along_axis(xs, nxt, axis=0)[0]
        even = np.isclose(np.take_along_axis(cw, k, axis=0)[0], half[0]) & np.isfinite(hi)
        med = np.where(even, 0.5 * (med + hi), med)
    return np.where(half[0] > 0, med, np.nan)


def weighted_m_estimate(x: np.ndarray, w: np.ndarray, *, scale: float = 3.0,
                        iterations: int = 3) -> np.ndarray:
    """Weighted Cauchy M-estimate of the location of ``x`` (T, B, ...) over axis 0.

    Starts at :func:`weighted_median` (``mean_of_middle``) and takes ``iterations``
    reweighting steps: each date counts ``w / (1 + (e / c)**2)`` with ``e`` its distance to
    the current estimate and ``c`` = ``scale`` x 1.4826 x the median ``|e|`` of band ``b``
    (axis 1) over the valid values of the dates with weight. More efficient than the median
    where the dates scatter around one state (measured on 20 real windows: +0.14 / +0.11 dB
    for the target-date anchor), while a date far off (an unmasked cloud) still has little
    pull. NaN values are ignored; NaN where no date has weight.
    """
    ok = np.isfinite(x)
    v = np.where(ok, x, 0.0)
    w0 = np.where(ok, np.asarray(w, np.float64).reshape(-1, *[1] * (x.ndim - 1)), 0.0)
    est = weighted_median(x, w, mean_of_middle=True)
    has = np.isfinite(est)
    est = np.where(has, est, 0.0)
    B = x.shape[1]
    for _ in range(iterations):
        e = v - est[None]
        a = np.where(w0 > 0, np.abs(e), np.nan).swapaxes(0, 1).reshape(B, -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a band with no valid value
            c = scale * 1.4826 * np.nanmedian(a, axis=1)  # (B,)
        c = np.where(np.isfinite(c) & (c > 0), c, np.inf).reshape(1, B, *[1] * (x.ndim - 2))
        u = w0 / (1.0 + (e / c) ** 2)
        total = u.sum(axis=0)
        est = np.where(total > 0, (u * v).sum(axis=0) / np.where(total > 0, total, 1.0), est)
    return np.where(has, est, np.nan)


def regauge(weights: np.ndarray, log_gain: np.ndarray, offset: np.ndarray,
            date_weights: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-express a fit in the radiometry of the median date.

    The model predicts ``g[t] * R(w) + o[t]`` with ``R`` linear and ``R(constant) = constant``,
    so the scene ``w' = g_m w + o_m`` with ``g'[t] = g[t] / g_m`` and ``o'[t] = o[t] - g'[t]
    o_m`` predicts the same observations. ``g_m``, ``o_m`` are the per-band medians over the
    dates (the mean-zero gauge of the fit is moved by a hazy date; the median is not).

    Parameters
    ----------
    weights
        (B, Ky, Kx) scene (any units the gains and offsets are in).
    log_gain, offset
        (T, B) as fitted (before centring; the centred log gains are clipped to
        +-:data:`MAX_LOG_GAIN` as in :func:`apply_radiometry`).
    date_weights
        (T,) weights of the dates (a target-date fit's time weights): the median is then
        the weighted median, i.e. the radiometry of the dates near the target.

    Returns
    -------
    weights, gains, offsets
        (B, Ky, Kx), (T, B) gains (not logs) and (T, B) offsets.
    """
    a = np.clip(log_gain - log_gain.mean(0, keepdims=True), -MAX_LOG_GAIN, MAX_LOG_GAIN)
    o = offset - offset.mean(0, keepdims=True)
    if date_weights is None:
        a_m = np.median(a, axis=0)  # (B,)
        o_m = np.median(o, axis=0)
    else:
        a_m = weighted_median(a, date_weights)
        o_m = weighted_median(o, date_weights)
    g_m = np.exp(a_m)
    w = weights * g_m[:, None, None] + o_m[:, None, None]
    gains = np.exp(a - a_m[None])
    offsets = o - gains * o_m[None]
    return w, gains, offsets
