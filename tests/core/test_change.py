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
from splatsr.evaluate.simulate import simulate


def test_interpolation_and_roughness_of_planes():
    """Tent weights reproduce constants and planes exactly; a plane has zero roughness."""
    grid = ChangeGrid(240.0, 160.0, 40.0)
    assert (grid.ny, grid.nx) == (7, 5)
    uy, ux = grid.matrices(10.0, dtype=torch.float64)
    assert uy.shape == (24, 7) and ux.shape == (16, 5)
    nodes_y = torch.arange(7, dtype=torch.float64)[:, None] * 40.0
    nodes_x = torch.arange(5, dtype=torch.float64)[None] * 40.0
    plane = 0.3 + 0.01 * nodes_y - 0.02 * nodes_x  # (7, 5)
    px = (torch.arange(24, dtype=torch.float64)[:, None] + 0.5) * 10.0
    py = (torch.arange(16, dtype=torch.float64)[None] + 0.5) * 10.0
    torch.testing.assert_close(upsample(plane, uy, ux), 0.3 + 0.01 * px - 0.02 * py)
    assert float(roughness(plane)) < 1e-20
    bump = torch.zeros(7, 5, dtype=torch.float64)
    bump[3, 2] = 1.0
    assert float(roughness(bump)) == 2 * (1 + 4 + 1)  # [1, -2, 1] along each axis


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
    # the automatic setting (None) finds the change and turns the 40 m layer on
    auto = splatsr.FitConfig()
    assert auto.with_change_cell(ramped, pixel_m=10.0).change_cell_m == 40.0
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
    given = splatsr.FitConfig(change_cell_m=60.0)
    assert given.with_change_cell(noise, pixel_m=10.0) is given
    target = splatsr.FitConfig(target_date="2024-06-08")
    assert target.change_cell() == TARGET_CHANGE_CELL_M
    assert splatsr.FitConfig(target_date="2024-06-08", change_cell_m=0).change_cell() is None
    assert splatsr.FitConfig(change_cell_m=60.0).change_cell() == 60.0
    with pytest.raises(ConfigError, match="change_cell_m"):
        splatsr.FitConfig(change_cell_m=-1.0).validate()
