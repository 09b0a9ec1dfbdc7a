"""The API notebook in examples/ runs top to bottom (short settings, in a fresh kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "api_sample.ipynb"


def test_api_notebook_executes(monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SPLATSR_EXAMPLE_FAST", "1")  # inherited by the kernel
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "mean shift from the seed" in text and "Pearson r" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # panels, convergence, shifts
