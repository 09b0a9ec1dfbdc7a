"""The prior of a few-date stack: Huber at the weight that predicts left-out dates best."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import splatsr
from splatsr.core.config import FitConfig
from splatsr.core.prior_choice import (
    CANDIDATE_WEIGHTS,
    few_dates_config,
    heldout_scores,
    resolve_prior,
)
from splatsr.core.solver import fit_arrays
from splatsr.errors import ConfigError

NOISE = 0.003
pytestmark = pytest.mark.usefixtures("one_thread")


def flat_share(img: np.ndarray) -> float:
    """Share of (B, H, W) pixels (20 m border out at 2.5 m) whose gradient per 2.5 m step is
    below a tenth of the noise: the flat-plateau statistic of benchmarks/few_dates.py."""
    gx = np.diff(img, axis=2)[:, :-1, :]
    gy = np.diff(img, axis=1)[:, :, :-1]
    return float(np.mean(np.hypot(gx, gy)[:, 8:-8, 8:-8] < 0.1 * NOISE))


@pytest.fixture(scope="module")
def three_dates(texture):
    """(3, 1, 24, 24) 10 m stack of a real-texture 96 px truth at 2.5 m, and the truth."""
    truth = texture[2, 80:176, 80:176].astype(np.float64)
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=3, shift_std_m=1.5,
                               psf_sigma_m=4.0, noise_sigma=NOISE, seed=3)
    return data, truth


def test_three_dates_get_a_huber_prior_and_fewer_plateaus(three_dates):
    """With 3 dates the rule picks the Huber prior at the best held-out weight; its fit has
    fewer near-flat pixels than the smoothed TV's. Measured here: TV 0.109, the rule (Huber
    0.1) 0.024, the truth 0.006; the TV's piecewise-constant answer keeps it far above."""
    data, truth = three_dates
    scores = heldout_scores(data, pixel_m=10.0, config=FitConfig())
    cfg = few_dates_config(data, pixel_m=10.0)
    assert cfg.prior == "huber" and cfg.tv_weight == min(scores, key=scores.get)
    assert set(scores) == set(CANDIDATE_WEIGHTS)
    old = fit_arrays(data, pixel_m=10.0, config=FitConfig()).render(2.5)
    new = fit_arrays(data, pixel_m=10.0, config=cfg).render(2.5)
    assert flat_share(new) < flat_share(old) - 0.02, (flat_share(new), flat_share(old),
                                                      flat_share(truth[None]))


def test_many_dates_and_other_priors_keep_their_config(texture):
    """16 dates: the data pin the detail down and the config is kept; a prior other than
    "auto" is never replaced; "auto" with many dates resolves to the default prior."""
    data, _ = splatsr.simulate(texture[0, :64, :64].astype(np.float64), truth_pixel_m=2.5,
                               n_obs=16, seed=1)
    cfg = FitConfig(tv_weight=0.07)
    assert few_dates_config(data, pixel_m=10.0, config=cfg) is cfg
    assert resolve_prior(cfg, data, pixel_m=10.0) is cfg
    auto = replace(cfg, prior="auto")
    auto.validate()
    assert resolve_prior(auto, data, pixel_m=10.0) == cfg and cfg.prior == "vtv"
    with pytest.raises(ConfigError, match="prior must be one of"):
        FitConfig(prior="tgv").validate()
