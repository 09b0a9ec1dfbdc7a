"""aten operator calls per render and per Adam step of ``splatsr.fit_arrays`` (torch.profiler).

Used by ``perf.py --ops``; on its own::

    python benchmarks/opcount.py --sizes 64 128 256      # JSON lines, one per size

Two counts per measurement: ``all`` = every ``aten::`` event the profiler records (nested
ones included: ``aten::to`` -> ``aten::_to_copy`` -> ``aten::copy_`` counts 3), and
``top`` = the ``aten::`` events with no ``aten::`` ancestor (what Python and autograd call).
An Adam step is everything between two ``Adam.zero_grad`` calls at the finest level (loss,
backward, ``Adam.step``, logging); the median over the level's steps is reported, with the
step that re-estimates the robust scale left out. The ops of that step are also tallied by
name (``by_name``) to say where they come from.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _is_aten(e) -> bool:
    return e.name.startswith("aten::")


def _top(e) -> bool:
    p = e.cpu_parent
    while p is not None:
        if _is_aten(p):
            return False
        p = p.cpu_parent
    return True


def count(events) -> dict:
    """``all`` and ``top`` aten counts of a list of profiler events, and ``by_name``."""
    aten = [e for e in events if _is_aten(e)]
    return dict(all=len(aten), top=sum(_top(e) for e in aten),
                by_name=dict(collections.Counter(e.name for e in aten).most_common()))


def render_ops(size: int, T: int = 8, B: int = 4, device: str = "cpu") -> dict:
    """Ops of one forward + backward of ``sum((render - y)^2)`` (after a warm-up call)."""
    from splatsr.core.model import SplatGrid, render_observations

    g = SplatGrid.for_raster(height=size, width=size, pixel_m=10.0, spacing_m=2.0,
                             psf_sigma_m=4.0)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(B, g.ny, g.nx, generator=gen).to(device).requires_grad_()
    s = (torch.randn(T, 2, generator=gen) * 1.5).to(device).requires_grad_()
    y = torch.randn(T, B, size, size, generator=gen).to(device)

    def once() -> None:
        ((render_observations(w, s, grid=g, psf_sigma_m=4.0) - y) ** 2).sum().backward()

    once()
    with torch.profiler.profile() as prof:
        once()
    out = count(prof.events())
    out.pop("by_name")
    return dict(kind="render_ops", size=size, T=T, B=B, **out)


def adam_step_ops(size: int, T: int = 8, B: int = 4, device: str = "cpu",
                  adam_steps: int = 12) -> dict:
    """Ops per Adam step of a default ``fit_arrays`` (no L-BFGS) on a simulated stack."""
    import splatsr
    from splatsr.core.solver import FitConfig, fit_arrays

    rng = np.random.default_rng(0)
    truth = rng.random((B, size * 4, size * 4)).astype(np.float32) * 0.3
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=T, seed=0)
    cfg = FitConfig(adam_steps=adam_steps, lbfgs_iters=0, device=device)
    with torch.profiler.profile() as prof:
        fit_arrays(data, pixel_m=10.0, config=cfg)
    ev = sorted(prof.events(), key=lambda e: e.time_range.start)
    marks = [i for i, e in enumerate(ev) if e.name.endswith("Adam.zero_grad")]
    fine = marks[-adam_steps:]  # the finest level's steps
    steps = [ev[a:b] for a, b in zip(fine, fine[1:])]
    counts = [count(s) for s in steps]
    skip = adam_steps // 2 - 1  # the step before that re-estimates the loss scale
    keep = [c for i, c in enumerate(counts) if i != skip] if cfg.coarse_levels == 0 else counts
    med_all = statistics.median(c["all"] for c in keep)
    pick = min(keep, key=lambda c: abs(c["all"] - med_all))
    return dict(kind="adam_step_ops", size=size, T=T, B=B, all=pick["all"], top=pick["top"],
                by_name=pick["by_name"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--by-name", action="store_true", help="print the per-op tally too")
    args = p.parse_args()
    torch.set_num_threads(1)
    for size in args.sizes:
        r = render_ops(size)
        print(json.dumps(r), flush=True)
        a = adam_step_ops(size)
        if not args.by_name:
            a.pop("by_name")
        print(json.dumps(a), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
