"""README's commands run as written: the offline quickstart, then the Python API block."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


README = Path(__file__).resolve().parents[1] / "README.md"


def _block(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` (up to ``<!-- /ci -->``)."""
    text = README.read_text()
    m = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)```\n<!-- /ci -->", text, re.S)
    assert m, f"README.md has no block {marker!r}"
    return m.group(1)


def _api_block() -> str:
    m = re.search(r"## Python API\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert m, "README.md has no Python API block"
    return m.group(1)


def test_quickstart_and_api_run_as_written(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               MPLBACKEND="Agg")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", _block("readme:quickstart")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("sample_sr.tif", "sample_sr.shifts.csv", "sim_stack/stack.json", "sim_sr.tif"):
        assert (tmp_path / "out" / name).is_file(), name
    # the printed mean |fitted - planted| per axis is well below a metre
    line = next(s for s in run.stdout.splitlines() if s.startswith("mean |fitted - planted|"))
    errors = [float(v) for v in re.findall(r"[-\d.]+", line.split(":")[1])]
    assert len(errors) == 2 and max(errors) < 0.5, line

    api = subprocess.run([sys.executable, "-c", _api_block()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert api.returncode == 0, api.stderr[-2000:]
    assert (tmp_path / "out" / "sr.tif").is_file()
    assert (tmp_path / "out" / "sr.shifts.csv").is_file()
    assert (tmp_path / "out" / "series" / "items.json").is_file()


def test_ci_blocks_are_present():
    """.ci/run executes these two blocks; they must exist and install the test extra."""
    assert "pip install -e \".[test]\"" in _block("ci:setup")
    assert "pytest" in _block("ci:test")
