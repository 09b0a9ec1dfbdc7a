"""``benchmarks/gpu.py``: the smoke run (same code path on the CPU, tiny sizes) writes the
same tables a GPU run does; without CUDA the plain run refuses in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
STAGES = ["machine", "tests", "render", "fit_small", "fit_large", "max_stack", "series",
          "compile"]
TABLE_HEADS = [  # the first row of each table of gpu.md, GPU run or smoke run alike
    "| stage | status | seconds | note |",
    "| test | outcome | note |",
    "| size px | dates | bands | fwd+bwd s | MiB moved | bound s | time / bound |",
    "| case | settings | size px | dates | bands | fit s | solver s | render 2.5 m s | steps "
    "| target s | met | peak alloc MiB | planned MiB | peak / plan | PSNR dB |",
    "| size px | dates | planned MiB | plan says fits | ran | peak alloc MiB | seconds | note |",
    "| status | size px | dates | fit s | series s | files |",
    "| status | size px | dates | eager s | compiled s | first call s | speedup | "
    "max rel. diff |",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The folder of one ``gpu.py --smoke`` run (about 30 s on 2 idle cores)."""
    out = tmp_path_factory.mktemp("gpu_smoke")
    r = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_smoke_run_writes_every_table(smoke):
    md = (smoke / "gpu.md").read_text()
    res = json.loads((smoke / "gpu.json").read_text())
    heads = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    for head in TABLE_HEADS:
        assert head in heads
    st = res["stages"]
    assert list(st) == STAGES
    for name in STAGES:  # every stage ran to its end within its limit
        assert st[name]["status"] == "ok", (name, st[name])
    assert res["machine"]["commit"] and res["machine"]["date"]
    # on the CPU the gpu-marked tests are collected and skip (they need CUDA)
    summary = st["tests"]["rows"][-1]
    assert summary["skipped"] >= 2 and summary["failed"] == 0
    rows = st["fit_small"]["rows"] + st["fit_large"]["rows"]
    fits = [r for r in rows if r["kind"] == "fit"]
    assert [f["size"] for f in fits] == [24, 32]
    assert all(f["fit_s"] > 0 and f["peak_mib"] is None for f in fits)  # no CUDA peak on CPU
    # the short smoke fits of simulated stacks still beat 25 dB against their truth
    assert all(r["psnr_db"] > 25 for r in rows if r["kind"] == "fit_render")
    tries = [r for r in st["max_stack"]["rows"] if r["kind"] == "try"]
    assert tries and tries[0]["plan_says"] and tries[0]["ran"]
    render = [r for r in st["render"]["rows"] if r["kind"] == "render"]
    assert len(render) == 2 and all(r["ratio"] > 0 for r in render)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_plain_run_without_cuda_refuses_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode != 0
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "CUDA" in r.stderr
    assert not (tmp_path / "gpu.md").exists()


def test_a_gpu_run_fills_the_docs_section_between_its_markers(smoke, tmp_path, monkeypatch):
    """What a GPU run writes into docs/performance.md (here into a copy): the same tables,
    between the markers, the rest of the page untouched, again at every stage."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu

    docs = tmp_path / "performance.md"
    text = (ROOT / "docs" / "performance.md").read_text()
    docs.write_text(text)
    monkeypatch.setattr(gpu, "DOCS", docs)
    res = json.loads((smoke / "gpu.json").read_text())
    for _ in range(2):
        gpu.save(res, tmp_path / "out", docs=True)
    new = docs.read_text()
    head, rest = text.split(gpu.BEGIN)
    tail = rest.split(gpu.END)[1]
    assert new.startswith(head + gpu.BEGIN) and new.endswith(gpu.END + tail)
    section = new[len(head + gpu.BEGIN): len(new) - len(gpu.END + tail)]
    assert section.strip().startswith("### GPU figures")
    for table_head in TABLE_HEADS:
        assert table_head in section
