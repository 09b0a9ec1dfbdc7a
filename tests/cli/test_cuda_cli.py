"""Opt-in (``pytest -m gpu``): ``splatsr fit --device cuda`` end to end on the bundled sample,
against the same command on the CPU."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

import splatsr
from splatsr.cli import main


def fit_sample(out_dir: Path, device: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(B, H, W) output, per-date residual RMS and the log of ``splatsr fit --device``."""
    out = out_dir / device / "sr.tif"
    r = CliRunner().invoke(main, ["fit", str(splatsr.sample_path()), "--out", str(out),
                                  "--mkdir", "--device", device], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as src:
        img = src.read()
    with open(out.with_name("sr.shifts.csv")) as f:
        rms = np.array([float(row["residual_rms"]) for row in csv.DictReader(f)])
    return img, rms, r.output


@pytest.mark.gpu
def test_cli_fit_on_cuda_matches_the_cpu(tmp_path):
    """The CUDA run writes the same product as the CPU run, to well below the fit's own
    misfit (a tenth of the smallest per-date residual RMS), and logs its CUDA peak."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu, rms, _ = fit_sample(tmp_path, "cpu")
    cuda, _, log = fit_sample(tmp_path, "cuda")
    assert "peak cuda memory allocated by the fit" in log
    assert cuda.shape == cpu.shape
    ok = np.isfinite(cpu) & np.isfinite(cuda)
    assert ok.mean() > 0.99
    assert np.sqrt(np.mean((cuda[ok] - cpu[ok]) ** 2)) <= 0.1 * rms.min()
