"""Constants as cached 0-d tensors, for the expressions evaluated at every optimiser step.

``x * 0.5`` with a Python float makes torch wrap the number in a double tensor and convert
it to ``x``'s dtype at every call (four extra operator calls on CPU, a host-to-device copy on
CUDA); ``x * scalar(0.5, like=x)`` reuses one tensor of the right dtype and device.
"""

from __future__ import annotations

import functools

import torch


def scalar(value: float, *, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor holding ``value`` with ``like``'s dtype and device (cached, read-only
    by convention: never modify it in place)."""
    return _scalar(float(value), like.dtype, like.device)


@functools.lru_cache(maxsize=256)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)
