"""GPU figures in one prepared run: everything a GPU user needs, within minutes.

    python benchmarks/gpu.py                  # on a CUDA device (planned: <= 6 min, H100)
    python benchmarks/gpu.py --smoke          # the same code on the CPU at tiny sizes (<= 90 s)
    python benchmarks/gpu.py --budget-s 200 --out DIR --no-docs

Stages, in order of priority, each with its own time limit, run by a worker process (one
that overruns its limit is killed, keeping what it printed, and a fresh worker runs the rest;
when the run's total budget is spent the rest are skipped; see ``gpu_stages.py``):

1. ``machine``: date, machine, commit, the card and its memory;
2. ``tests``: the ``gpu``-marked tests (``pytest -m gpu``: CUDA against CPU results);
3. ``render``: copy bandwidth (a large device-to-device clone), render forward + backward
   against the bandwidth bound (target: within 3x);
4. ``fit_small`` / ``fit_large``: full default fits of simulated stacks, 256 x 256 px x 32
   dates x 4 bands (target <= 5 s) and 1000 x 1000 px x 16 dates (target <= 60 s), their 2.5 m
   render, the peak ``torch.cuda.max_memory_allocated`` against the memory plan;
5. ``max_stack``: the largest stack the memory plan says fits the card, and short fits at
   that size and above: what really fits;
6. ``series``: the every-date series product, where this version has it;
7. ``compile``: ``torch.compile`` of the renderer on and off.

After every stage ``gpu.json`` and ``gpu.md`` are rewritten (atomically) in ``--out``
(default ``benchmarks/results/gpu/``, ``.../gpu/smoke/`` with ``--smoke``), and on a GPU the
section between the ``gpu-figures`` markers of ``docs/performance.md`` (tables:
``gpu_report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# set before torch is imported. The CUDA check of this (parent) process then makes no CUDA
# context, which would hold memory on the card that the stages measure; idle OpenMP threads
# sleep, as in the CLI (spinning ones made CPU fits up to 30x slower on a busy machine)
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import RESULTS, ROOT  # noqa: E402
from gpu_report import fmt, markdown  # noqa: E402
from gpu_stages import BUDGET_S, TOTAL_S, run_worker  # noqa: E402

DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- gpu-figures:begin -->", "<!-- gpu-figures:end -->"
GRACE_S = 3.0  # past a stage's limit before its worker is killed (the stage checks it too)
IDLE_S = 60.0  # a worker's start-up (imports) or step between stages, at most


def _lines(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def run_stages(res: dict, *, smoke: bool, budget_s: float, t0_epoch: float,
               save_all: Callable[[], None]) -> None:
    """Run every stage in worker processes, filling ``res["stages"]`` as rows come in; a
    worker that overruns a stage's limit (or dies) costs that stage, a fresh one goes on."""
    pending = list(BUDGET_S)
    while pending and budget_s - (time.time() - t0_epoch) >= 1:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", ",".join(pending),
               "--budget-s", str(budget_s), "--t0", repr(t0_epoch)]
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd + (["--smoke"] if smoke else []), stdout=subprocess.PIPE,
                                    stderr=err, text=True, start_new_session=True)
            lost = _follow(proc, res, pending, save_all)
            if lost:  # killed, died, or never started the stage: keep its rows, go on
                err.seek(0)
                tail = [x for x in err.read().splitlines() if x.strip()]
                s = res["stages"].setdefault(lost, dict(rows=[], t0=time.time()))
                s.setdefault("note", tail[-1][:200] if tail else "")
                s["seconds"] = time.time() - s["t0"]
                pending.remove(lost)
                _finish(res, lost, save_all)
    for name in pending:
        res["stages"][name] = dict(status="skipped: the run's time budget is spent", rows=[])


def _follow(proc: subprocess.Popen, res: dict, pending: list[str],
            save_all: Callable[[], None]) -> str | None:
    """Read a worker's events and rows until it has run ``pending``; return the stage it
    did not finish (killing the worker where it overran), None when all ended."""
    st = res["stages"]
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, q), daemon=True).start()
    current, deadline = None, time.time() + IDLE_S
    while pending:
        try:
            line = q.get(timeout=max(0.05, deadline - time.time()))
        except queue.Empty:
            if time.time() < deadline:
                continue
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if current is None:  # stuck before a stage started
                current = pending[0]
                st[current] = dict(status=f"not started by the worker within {IDLE_S:.0f} s",
                                   rows=[], t0=time.time())
            else:
                st[current]["status"] = f"stopped at its {st[current]['limit_s']:.0f} s limit"
            return current
        if line is None:  # the worker ended before running every stage: it died
            proc.wait()
            current = current or pending[0]
            st.setdefault(current, dict(rows=[], t0=time.time()))["status"] = \
                f"worker died (exit {proc.returncode})"
            return current
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue  # something else printed on stdout
        if ev.get("event") == "start":
            current, deadline = ev["stage"], time.time() + ev["limit_s"] + GRACE_S
            st[current] = dict(status="running", limit_s=ev["limit_s"], rows=[], t0=time.time())
        elif ev.get("event") in ("end", "skip"):
            name = ev["stage"]
            st.setdefault(name, dict(rows=[])).update(status=ev["status"],
                                                        seconds=ev.get("seconds"))
            pending.remove(name)
            current, deadline = None, time.time() + IDLE_S
            _finish(res, name, save_all)
        elif current:
            st[current]["rows"].append(ev)
    try:
        proc.wait(timeout=IDLE_S)
    except subprocess.TimeoutExpired:  # all measured; a worker stuck on its way out
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return None


def _finish(res: dict, name: str, save_all: Callable[[], None]) -> None:
    """After a stage: the machine record, the stage's note, then save everything."""
    s = res["stages"][name]
    s.pop("t0", None)
    if name == "machine" and s["rows"]:
        res["machine"] = {k: v for k, v in s["rows"][0].items() if k != "kind"}
    counts = [r for r in s["rows"] if r.get("kind") == "tests"]
    if counts:
        c = counts[-1]
        s["note"] = f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
    save_all()
    print(f"{name}: {s['status']} ({fmt(s.get('seconds'), '.1f')} s) {s.get('note', '')}",
          flush=True)


def save(res: dict, out: Path, docs: bool) -> None:
    """Rewrite gpu.json, gpu.md (and the docs section) atomically."""
    from splatsr.io.atomic import write_text_atomic

    write_text_atomic(out / "gpu.json", json.dumps(res, indent=1, default=float) + "\n")
    write_text_atomic(out / "gpu.md", markdown(res) + "\n")
    if docs:
        text = DOCS.read_text()
        i, j = text.find(BEGIN), text.find(END)
        if 0 <= i < j:
            body = markdown(res, level=3)
            write_text_atomic(DOCS, text[: i + len(BEGIN)] + "\n" + body + "\n" + text[j:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="the same code path on the CPU at tiny sizes (no GPU needed)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results/gpu[/smoke])")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"total seconds (default {TOTAL_S[0]}, smoke {TOTAL_S[1]})")
    p.add_argument("--no-docs", action="store_true",
                   help="do not update docs/performance.md (a GPU run updates it)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # stages to run in this process
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    a = p.parse_args()
    budget = a.budget_s or TOTAL_S[1 if a.smoke else 0]
    if a.worker:
        return run_worker(a.worker.split(","), smoke=a.smoke, budget_s=budget,
                          t0_epoch=a.t0)
    if not a.smoke:
        import torch

        if not torch.cuda.is_available():
            print("gpu.py: no CUDA device is visible to torch; run it on a machine with a GPU "
                  "(or `python benchmarks/gpu.py --smoke` for the CPU check)", file=sys.stderr)
            return 1
    out = a.out or RESULTS / "gpu" / ("smoke" if a.smoke else "")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    res: dict = dict(mode="smoke, CPU" if a.smoke else "CUDA", budget_s=budget, elapsed_s=0.0,
                     machine={}, stages={})

    def save_all() -> None:
        res["elapsed_s"] = time.time() - t0
        save(res, out, docs=not (a.smoke or a.no_docs))

    run_stages(res, smoke=a.smoke, budget_s=budget, t0_epoch=t0, save_all=save_all)
    save_all()
    print(f"wrote {out / 'gpu.md'} ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
