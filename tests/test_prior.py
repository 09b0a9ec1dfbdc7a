"""The TV prior's written-out backward against autograd on the reference formula."""

from __future__ import annotations

import pytest
import torch

from splatsr.prior import tv, tv_reference


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 7, 5), (2, 40, 33)])
def test_tv_matches_reference_forward_and_backward(shape, dtype, rtol):
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, generator=g, dtype=dtype)
    w[0, 0] = w[0, 0, :1]  # a flat row: differences of 0, where only eps keeps n > 0
    upstream = 0.7
    grads = []
    for f in (tv, tv_reference):
        x = w.clone().requires_grad_(True)
        val = f(x, 0.1)
        (upstream * val).backward()
        grads.append((val.detach(), x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=rtol, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=rtol, atol=rtol)


def test_tv_gradcheck_and_constant_field():
    w = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: tv(x, 0.3), (w,))
    flat = torch.full((1, 4, 4), 2.5, dtype=torch.float64, requires_grad=True)
    val = tv(flat, 0.1)
    val.backward()
    assert float(val.detach()) == pytest.approx(9 * 0.1)  # 3 x 3 cells of sqrt(eps^2)
    assert float(flat.grad.abs().max()) == 0.0
