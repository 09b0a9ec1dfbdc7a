"""The coarse change layer: node lattice, interpolation, roughness, and what it absorbs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import splatsr
from splatsr.core.change import (
    ChangeGrid,
    at_target,
    centred,
    change_ratio,
    roughness,
    upsample,
)
from splatsr.core.config import CONSENSUS_CHANGE_WEIGHT
from splatsr.evaluate.simulate import simulate


def test_interpolation_and_roughness_of_planes():
    """Tent weights reproduce constants and planes exactly; a plane has zero roughness."""
    grid = ChangeGrid(240.0, 160.0, 40.0)
    assert (grid.ny, grid.nx) == (7, 5)
    ty, tx = grid.tents(10.0, dtype=torch.float64)
    assert ty.lo.shape == (24,) and tx.lo.shape == (16,)
    nodes_y = torch.arange(7, dtype=torch.float64)[:, None] * 40.0
    nodes_x = torch.arange(5, dtype=torch.float64)[None] * 40.0
    plane = 0.3 + 0.01 * nodes_y - 0.02 * nodes_x  # (7, 5)
    px = (torch.arange(24, dtype=torch.float64)[:, None] + 0.5) * 10.0
    py = (torch.arange(16, dtype=torch.float64)[None] + 0.5) * 10.0
    torch.testing.assert_close(upsample(plane, ty, tx), 0.3 + 0.01 * px - 0.02 * py)
    assert float(roughness(plane)) < 1e-20
    bump = torch.zeros(7, 5, dtype=torch.float64)
    bump[3, 2] = 1.0
    assert float(roughness(bump)) == 2 * (1 + 4 + 1)  # [1, -2, 1] along each axis


def dense_tent(extent_m: float, n_nodes: int, cell_m: float, resolution_m: float):
    """(n_pixels, n_nodes) the slow reference: every pixel against every node."""
    centres = (torch.arange(round(extent_m / resolution_m), dtype=torch.float64) + 0.5)
    nodes = torch.arange(n_nodes, dtype=torch.float64) * cell_m
    return (1 - (centres[:, None] * resolution_m - nodes).abs() / cell_m).clamp(min=0)


@pytest.mark.parametrize("cell_m, resolution_m", [(40.0, 10.0), (10.0, 10.0), (30.0, 5.0),
                                                  (10.0, 2.5)])
def test_tents_match_dense_interpolation_forward_and_backward(cell_m, resolution_m):
    """The gathers equal the dense tent matrices, values and gradients (float64)."""
    grid = ChangeGrid(120.0, 90.0, cell_m)
    ty, tx = grid.tents(resolution_m, dtype=torch.float64)
    my = dense_tent(120.0, grid.ny, cell_m, resolution_m)
    mx = dense_tent(90.0, grid.nx, cell_m, resolution_m)
    torch.manual_seed(0)
    c1 = torch.randn(3, 2, grid.ny, grid.nx, dtype=torch.float64, requires_grad=True)
    c2 = c1.detach().clone().requires_grad_(True)
    g = torch.randn(3, 2, my.shape[0], mx.shape[0], dtype=torch.float64)
    fast, slow = upsample(c1, ty, tx), my @ c2 @ mx.T
    torch.testing.assert_close(fast, slow)
    (fast * g).sum().backward()
    (slow * g).sum().backward()
    torch.testing.assert_close(c1.grad, c2.grad)


def test_target_change_is_the_time_weighted_mean():
    c = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    w = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(at_target(c, w), centred(c)[1])
    assert at_target(c, None) is None
    torch.testing.assert_close(centred(c).mean(0), torch.zeros(2, 3, 3, dtype=torch.float64))


def test_change_layer_absorbs_per_date_gradients(texture):
    """8 dates, each with its own reflectance gradient across the scene (+-0.015, mean zero
    over the dates): without the layer the 5 m error grows from 0.0096 to 0.0119 (measured);
    with a 40 m layer it is back to the clean stack's (0.0096)."""
    truth = texture[:1, :96, :96]
    obs, _ = simulate(truth, truth_pixel_m=2.5, n_obs=8, noise_sigma=0.002, seed=3)
    x = (np.arange(24) + 0.5) / 24 - 0.5
    a = np.array([0.03, -0.03, 0.0129, -0.0129, 0.0214, -0.0214, 0.0043, -0.0043])
    ramp = a[:, None, None, None] * (x[None, :] + x[:, None])[None, None]
    ref5 = F.avg_pool2d(torch.from_numpy(truth[None]).double(), 2)[0].numpy()

    def error(data, cell):
        res = splatsr.fit_arrays(data, pixel_m=10.0,
                                 config=splatsr.FitConfig(change_cell_m=cell,
                                                          median_anchor=False))
        e = res.render(5.0) - ref5
        return float(np.sqrt(np.mean((e - e.mean()) ** 2))), res

    ramped = (obs + ramp).astype(np.float32)
    clean, _ = error(obs, 0.0)
    off, _ = error(ramped, 0.0)
    on, res = error(ramped, 40.0)
    assert off > clean * 1.15 and on < clean * 1.03
    # the automatic setting (None) finds the change and turns the consensus's layer on
    auto = splatsr.FitConfig()
    on = auto.with_change_cell(ramped, pixel_m=10.0)
    assert (on.change_cell_m, on.change_weight) == (10.0, CONSENSUS_CHANGE_WEIGHT)
    assert auto.with_change_cell(obs, pixel_m=10.0).change_cell_m == 0.0
    assert res.change.shape == (8, 1, 7, 7)
    np.testing.assert_allclose(res.change.mean(0), 0.0, atol=1e-6)
    assert res.predict().shape == obs.shape


def test_change_ratio_is_about_one_on_noise_and_high_on_field_scale_change(texture):
    rng = np.random.default_rng(0)
    noise = 0.1 + rng.normal(0.0, 0.01, (8, 2, 64, 64))
    # block means of 4 x 4 pixels have noise / 4; the median of 8 dates adds ~9 % (1.2533^2
    # / 8), the 4-parameter fit per date takes ~1.6 % of 256 blocks, and a MAD of 2048
    # values is within ~2 % (1 sigma): about 1 (0.96 measured)
    assert 0.85 < change_ratio(noise, cell_px=4) < 1.2
    static, _ = simulate(texture[:1, :128, :128], truth_pixel_m=2.5, n_obs=8,
                         shift_std_m=1.5, noise_sigma=0.002, seed=1)
    assert change_ratio(static, cell_px=4) < 1.5  # texture and shifts are explained
    fields = static.copy()
    fields[::2, :, :16, :16] += 0.02  # a quarter of the scene brighter in every other date
    assert change_ratio(fields, cell_px=4) > 3.0
    assert change_ratio(np.full((3, 1, 8, 8), np.nan), cell_px=4) == 0.0


def test_change_cell_is_automatic():
    from splatsr.core.config import TARGET_CHANGE_CELL_M
    from splatsr.errors import ConfigError

    assert splatsr.FitConfig().change_cell() is None  # the consensus: decided from the data
    noise = np.random.default_rng(1).normal(0.0, 0.01, (4, 1, 16, 16))
    target = splatsr.FitConfig(target_date="2024-06-08").with_change_cell(noise, pixel_m=10.0)
    assert target.change_cell_m == TARGET_CHANGE_CELL_M  # whatever the data
    assert target.change_weight == 1.0
    given = splatsr.FitConfig(change_cell_m=60.0, change_weight=0.5)
    assert given.with_change_cell(noise, pixel_m=10.0) == given  # values set are kept
    assert splatsr.FitConfig(change_cell_m=60.0).with_change_cell(
        noise, pixel_m=10.0).change_weight == 1.0
    static = splatsr.FitConfig().with_change_cell(noise, pixel_m=10.0)
    assert (static.change_cell_m, static.change_weight) == (0.0, 1.0)  # no change: no layer
    # memory is planned for the finest lattice a fit can get before the data are read
    assert splatsr.FitConfig().finest_change_cell(pixel_m=20.0) == 20.0
    assert splatsr.FitConfig(target_date="2024-06-08").finest_change_cell(
        pixel_m=20.0) == TARGET_CHANGE_CELL_M
    assert splatsr.FitConfig(change_cell_m=0).finest_change_cell(pixel_m=20.0) is None
    target = splatsr.FitConfig(target_date="2024-06-08")
    assert target.change_cell() == TARGET_CHANGE_CELL_M
    assert splatsr.FitConfig(target_date="2024-06-08", change_cell_m=0).change_cell() is None
    assert splatsr.FitConfig(change_cell_m=60.0).change_cell() == 60.0
    with pytest.raises(ConfigError, match="change_cell_m"):
        splatsr.FitConfig(change_cell_m=-1.0).validate()
    with pytest.raises(ConfigError, match="change_weight"):
        splatsr.FitConfig(change_weight=-1.0).validate()
