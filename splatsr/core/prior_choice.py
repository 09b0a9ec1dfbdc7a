"""The prior of a stack with few dates, chosen by the stack itself (leave one date out).

With few dates the sub-pixel detail is barely determined, and the prior decides much of it.
The smoothed TV then answers with flat plateaus and hard edges (invented structure); the
Huber prior (quadratic below one noise unit) falls back to smooth ramps instead, but its
best weight depends on the scene: on known truth (``benchmarks/few_dates.py``, docs/few_dates.md)
the weight that won ranged from 0.02 on a textured crop to 0.1 on a smooth one, and a wrong
one (of 0.02, 0.05, 0.1) cost up to 1.55 dB.

:func:`few_dates_config` therefore picks the Huber weight per stack from held-out
prediction: for each candidate weight, each date in turn is left out, the rest are fitted
(on the central :data:`CROP_PX` pixels, to keep it cheap), and the left-out date is predicted
at its best shift (:func:`splatsr.core.psf.heldout_error`); the weight with the smallest
mean squared error wins. Stacks with more than :data:`MAX_DATES` dates keep their config
(with 8 dates the choice lost to the TV on the held-out crop). The fits of the choice cost
``3 x T`` fits of ``T - 1`` dates on the crop: a few times the main fit on a small stack.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from splatsr.core.bands import central_crop
from splatsr.core.config import AUTO_PRIOR, DEFAULT_PRIOR, FitConfig
from splatsr.core.psf import heldout_error
from splatsr.core.solver import fit_arrays

# more valid dates than this: the config is kept as it is. Measured (docs/few_dates.md):
# the rule won at 3 and 5 dates; at 8 dates it chose 0.1 on the held-out crop and lost
# 0.19 dB to the smoothed TV (+1.38 vs +1.57), so it stops at 5
MAX_DATES = 5
MIN_DATES = 3  # leave-one-out needs two dates to fit and one to predict
CANDIDATE_WEIGHTS = (0.02, 0.05, 0.1)  # Huber weights tried (noise units)
CROP_PX = 64  # the held-out fits use the central 64 x 64 px
MIN_VALID_FRACTION = 0.5  # a date counts when it sees at least half the (cropped) area


def valid_dates(data: np.ndarray) -> np.ndarray:
    """(T,) indices of the dates of (T, B, H, W) ``data`` valid on at least half the area."""
    ok = np.isfinite(data).all(axis=1).reshape(len(data), -1).mean(axis=1)  # (T,)
    return np.flatnonzero(ok >= MIN_VALID_FRACTION)


def heldout_scores(data: np.ndarray, *, pixel_m: float, config: FitConfig,
                   weights: tuple[float, ...] = CANDIDATE_WEIGHTS) -> dict[float, float]:
    """Mean squared leave-one-date-out prediction error (reflectance^2) per Huber weight.

    ``data`` (T, B, H, W) is cropped to its central :data:`CROP_PX` pixels; only the dates
    of :func:`valid_dates` are fitted and predicted.
    """
    data = central_crop(data, CROP_PX)[valid_dates(central_crop(data, CROP_PX))]
    base = replace(config, prior="huber", target_date=None, median_anchor=False,
                   observed_date=False, progress=False)
    out = {}
    for w in weights:
        cfg = replace(base, tv_weight=w)
        errs = [heldout_error(fit_arrays(np.delete(data, t, axis=0), pixel_m=pixel_m,
                                         config=cfg), data[t])[0] for t in range(len(data))]
        out[w] = float(np.mean(np.square(errs)))
    return out


def few_dates_config(data: np.ndarray, *, pixel_m: float, config: FitConfig | None = None,
                     weights: tuple[float, ...] = CANDIDATE_WEIGHTS) -> FitConfig:
    """The config to fit (T, B, H, W) ``data`` with: with :data:`MIN_DATES` to
    :data:`MAX_DATES` valid dates, the Huber prior at the weight of
    :func:`heldout_scores` that predicts left-out dates best; otherwise ``config``
    unchanged (default :class:`FitConfig`)."""
    config = config or FitConfig()
    n = len(valid_dates(central_crop(data, CROP_PX)))
    if not MIN_DATES <= n <= MAX_DATES:
        return config
    scores = heldout_scores(data, pixel_m=pixel_m, config=config, weights=weights)
    best = min(scores, key=scores.get)
    return replace(config, prior="huber", tv_weight=best)


def resolve_prior(config: FitConfig, data: np.ndarray, *, pixel_m: float) -> FitConfig:
    """``config`` with ``prior="auto"`` resolved for (T, B, H, W) ``data``: with
    :data:`MIN_DATES` to :data:`MAX_DATES` valid dates the Huber prior at the weight of
    :func:`few_dates_config`, else the default prior (vectorial TV) at ``tv_weight``; any
    other prior as is. :func:`splatsr.fit` calls it before the fit (as it chooses an
    ``"auto"`` PSF)."""
    if config.prior != AUTO_PRIOR:
        return config
    return few_dates_config(data, pixel_m=pixel_m, config=replace(config, prior=DEFAULT_PRIOR))
