"""The notebooks in examples/ run top to bottom (short settings, in a fresh kernel), leave no
temporary folder behind and print no warning on stderr."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _execute(name: str, tmp_path: Path, monkeypatch) -> list[dict]:
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SPLATSR_EXAMPLE_FAST", "1")  # inherited by the kernel
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary folders go here
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Warning" not in stderr, stderr  # e.g. tqdm's "IProgress not found"
    assert not list(tmp_path.glob("splatsr-example-*")), "the notebook left its temp folder"
    return outputs


def test_api_notebook_executes(tmp_path, monkeypatch):
    outputs = _execute("api_sample.ipynb", tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "mean shift from the seed" in text and "Pearson r" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # panels, convergence, shifts


def test_xarray_notebook_executes(tmp_path, monkeypatch):
    pytest.importorskip("rioxarray")
    outputs = _execute("xarray_sample.ipynb", tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text.count("refused:") == 2 and "not on the 10 m pixel lattice" in text
    assert "sample_sr_2.5m.tif" in text and "EPSG:32633" in text
    assert [o for o in outputs if "image/png" in o.get("data", {})]
