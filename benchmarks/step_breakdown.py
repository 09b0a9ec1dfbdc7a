"""Where the aten calls of one Adam step go: the renderer vs the rest of the step.

    python benchmarks/step_breakdown.py --size 64

Profiles a default ``fit_arrays`` (8 dates, 4 bands; see ``opcount.py``) with the renderer
wrapped in a ``record_function`` range: forward calls inside it and the backward calls of the
autograd nodes it created (their names end in the renderer's Function names or run inside
them) count as the renderer's, the rest as the step's own. Prints both tallies by op name.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import splatsr  # noqa: E402
import splatsr.core.objective as objective  # noqa: E402
from splatsr.core.solver import FitConfig, fit_arrays  # noqa: E402

RENDER_NODES = ("RowPassBackward", "ColPassBackward", "TapsBackward", "WindowsBackward",
                "AssembleBackward")


def _inside(e, names) -> bool:
    p = e
    while p is not None:
        if any(n in p.name for n in names):
            return True
        p = p.cpu_parent
    return False


def _source(e) -> str:
    """The splatsr line that issued ``e`` (forward), else the autograd node it runs under."""
    p = e
    while p is not None:
        lines = [s for s in (p.stack or []) if "splatsr/" in s]
        if lines:
            return lines[0].split("splatsr/")[-1]
        if not p.name.startswith("aten::") and "Backward" in p.name:
            return "backward of " + p.name.split(": ")[-1]
        p = p.cpu_parent
    return e.name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)
    orig = objective.render_observations

    def wrapped(*a, **k):
        with torch.profiler.record_function("RENDER"):
            return orig(*a, **k)

    objective.render_observations = wrapped
    rng = np.random.default_rng(0)
    truth = rng.random((4, args.size * 4, args.size * 4)).astype(np.float32) * 0.3
    data, _ = splatsr.simulate(truth, truth_pixel_m=2.5, n_obs=8, seed=0)
    with torch.profiler.profile(with_stack=True) as prof:
        fit_arrays(data, pixel_m=10.0, config=FitConfig(adam_steps=12, lbfgs_iters=0))
    ev = sorted(prof.events(), key=lambda e: e.time_range.start)
    marks = [i for i, e in enumerate(ev) if e.name.endswith("Adam.zero_grad")]
    step = ev[marks[-4]:marks[-3]]
    tallies = {"render": collections.Counter(), "rest": collections.Counter()}
    sources: collections.Counter = collections.Counter()
    for e in step:
        if e.name.startswith("aten::"):
            # backward nodes of the column GEMM (BmmBackward0) and the view ops between the
            # renderer's Functions are autograd-generated: attributed to "rest" here
            part = "render" if _inside(e, ("RENDER",) + RENDER_NODES) else "rest"
            tallies[part][e.name] += 1
            if part == "rest":
                sources[_source(e)] += 1
    out = {k: dict(total=sum(v.values()), by_name=dict(v.most_common())) for k, v in
           tallies.items()}
    out["rest_by_source"] = dict(sources.most_common())
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
