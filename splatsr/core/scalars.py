"""Constants as cached 0-d tensors, for the expressions evaluated at every optimiser step.

``x * 0.5`` with a Python float makes torch wrap the number in a double tensor and convert
it to ``x``'s dtype at every call (four extra operator calls on CPU, a host-to-device copy on
CUDA); ``x * scalar(0.5, like=x)`` reuses one tensor of the right dtype and device.
"""

from __future__ import annotations

import torch

_CACHE: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}
_MAX_ENTRIES = 256


def scalar(value: float, *, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor holding ``value`` with ``like``'s dtype and device (cached, read-only
    by convention: never modify it in place)."""
    key = (float(value), like.dtype, like.device)
    t = _CACHE.get(key)
    if t is None:
        if len(_CACHE) >= _MAX_ENTRIES:
            _CACHE.clear()
        t = _CACHE[key] = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    return t
