"""The fit's objective: one vectorised evaluation for all dates and bands."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import splatsr.core.objective as objective_mod
from splatsr.core.config import FitConfig
from splatsr.core.levels import level_schedule, start_weights
from splatsr.core.objective import Objective
from splatsr.core.prior import smoothed_tv
from splatsr.core.robust import MAX_SIGMA


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _objective(T: int, B: int, n_px: int = 16, **cfg) -> Objective:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(T, B, n_px, n_px)).astype(np.float32)
    valid = rng.random(y.shape) > 0.1
    config = FitConfig(coarse_levels=0, **cfg)
    obj = Objective(np.where(valid, y, 0.0), valid, config=config, device=torch.device("cpu"))
    level = level_schedule(config, height=n_px, width=n_px, pixel_m=10.0)[0]
    obj.set_level(start_weights(obj, level, y, valid), level.grid)
    return obj


def _ops_per_step(obj: Objective) -> int:
    opt = torch.optim.Adam(obj.params(), lr=0.1)
    opt.zero_grad(set_to_none=True)
    obj.loss()[0].backward()  # first step: lazy state
    opt.step()
    counter = _OpCounter()
    with counter:
        opt.zero_grad(set_to_none=True)
        obj.loss()[0].backward()
        opt.step()
    return counter.n


def test_operator_count_does_not_grow_with_dates_and_bands(monkeypatch):
    """With the renderer replaced by one broadcast, the objective's own work (radiometry,
    robust data term, TV, Adam) is the same number of operators for 2 x 1 and 8 x 4."""
    def one_op_render(w, shifts, *, grid, psf_sigma_m, **kwargs):
        k = grid.pad
        core = w[:, k:k + grid.height, k:k + grid.width]  # any differentiable (B, H, W) map
        return core[None] + shifts[:, :1, None, None]

    monkeypatch.setattr(objective_mod, "render_observations", one_op_render)
    small, large = _ops_per_step(_objective(2, 1)), _ops_per_step(_objective(8, 4))
    assert small == large


def test_loss_is_the_weighted_data_term_plus_tv():
    """Plain least squares: loss = (0.5 sum r^2 + tv * sigma * TV(w)) / n_valid."""
    obj = _objective(3, 2, loss="l2", radiometry=False, reweight=False, tv_weight=0.3,
                     prior="tv")
    loss, data_term = obj.loss()
    r = obj.residuals().detach()
    want_data = 0.5 * float((r * r).sum()) / obj.n_valid
    want = want_data + 0.3 * float(smoothed_tv(obj.w.detach())) / obj.n_valid
    assert abs(float(data_term.detach()) - want_data) < 1e-5 * want_data
    assert abs(float(loss.detach()) - want) < 1e-5 * want


def test_noise_level_is_capped_at_the_pixel_scale_estimate():
    """Residuals far above the noise estimate (change between dates) do not raise the noise
    level the TV weight and loss scale are expressed in."""
    obj = _objective(3, 2)
    obj.y = obj.y * 10.0  # residuals ~10 noise units
    obj.update_robust(first=True)
    assert obj.sigma == MAX_SIGMA
